"""Issue 10's study design: the chance-aware known rule, the known:unknown training mix, curves in every cell."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from calibtune import probing
from calibtune.grid import draw_mix, load_compare_config, parse_mix, run_compare
from calibtune.data import MCItem
from calibtune.probing import binomial_tail, chance_known, false_known_rate, is_known, probe_mc


def test_binomial_tail_against_scipy():
    from scipy.stats import binom

    for n in range(1, 9):
        for k in (2, 3, 4, 5):
            for c in range(0, n + 1):
                assert binomial_tail(c, n, 1 / k) == pytest.approx(binom.sf(c - 1, n, 1 / k), abs=1e-12)


@pytest.mark.parametrize("k,n", [(4, 4), (4, 5), (5, 4), (3, 6), (2, 5), (2, 8)])
def test_random_guesser_called_known_at_most_at_the_stated_rate(k, n):
    """Simulated uniform guessers: the known fraction is the rule's stated rate (and at most 0.05)."""
    rng = np.random.default_rng(0)
    right = (rng.integers(0, k, size=(200_000, n)) == 0).sum(1)
    known = np.array([chance_known(int(c), n, k) for c in range(n + 1)])[right]
    stated = false_known_rate(n, k, "chance")
    assert stated <= 0.05
    assert known.mean() == pytest.approx(stated, abs=4 * np.sqrt(stated * (1 - stated) / len(right)) + 1e-4)
    assert false_known_rate(n, k, "any") > 0.5  # the round-1 rule called most guessers known


def test_chance_rule_matches_hand_cases():
    assert is_known("HighlyKnown", 1.0, "chance", n_prompts=4, n_options=4)
    assert not is_known("MaybeKnown", 0.75, "chance", n_prompts=4, n_options=4)  # 3/4: p = 0.0508 > 0.05
    assert is_known("MaybeKnown", 0.8, "chance", n_prompts=5, n_options=4)  # 4/5: p = 0.0156
    assert not is_known("HighlyKnown", 1.0, "chance", n_prompts=4, n_options=2)  # 1/16 = 0.0625
    assert is_known("MaybeKnown", 0.5, "chance", n_prompts=4, n_options=None)  # open questions: any


def _items(n: int, k: int) -> list[MCItem]:
    return [MCItem(id=f"q{i}", question=f"Question {i}?", options=tuple(f"o{j}" for j in range(k)), gold=i % k)
            for i in range(n)]


def test_probe_of_a_random_scorer_calls_few_items_known(monkeypatch):
    """probe_mc end to end with a scorer that guesses: known fraction ≈ the stated false-known rate."""
    rng = np.random.default_rng(1)
    monkeypatch.setattr(probing.mc, "score", lambda model, tok, reqs, **kw: [rng.normal(size=len(r.choices)) for r in reqs])
    monkeypatch.setattr(probing.mc, "get_template", lambda name, tok: __import__("calibtune.prompts").prompts.Template("blob"))
    items = _items(4000, 4)
    records = probe_mc(None, None, items, pool=None, n_prompts=4, shots=0, known_rule="chance")
    fraction = np.mean([r.known for r in records])
    assert fraction == pytest.approx(false_known_rate(4, 4), abs=0.004)
    records_any = probe_mc(None, None, items, pool=None, n_prompts=4, shots=0, known_rule="any")
    assert np.mean([r.known for r in records_any]) > 0.6


def test_chance_rule_refuses_settings_that_can_call_nothing_known():
    with pytest.raises(ValueError, match="2 options and 4 prompts"):
        probe_mc(None, None, _items(3, 2), pool=None, n_prompts=4, shots=0, known_rule="chance")


def test_mix_sizes_ratios_and_determinism():
    known = {f"k{i}": True for i in range(30)} | {f"u{i}": False for i in range(40)}
    for mix, n_known in (("5:0", 20), ("4:1", 16), ("3:2", 12), ("2:3", 8), ("1:4", 4), ("0:5", 0)):
        ids = draw_mix(known, 20, mix, seed=3)
        assert len(ids) == 20 and len(set(ids)) == 20
        assert sum(known[i] for i in ids) == n_known
        assert draw_mix(known, 20, mix, seed=3) == ids
        assert draw_mix(dict(reversed(list(known.items()))), 20, mix, seed=3) == ids  # order of the probe file
    assert draw_mix(known, 20, "3:2", seed=4) != draw_mix(known, 20, "3:2", seed=3)
    with pytest.raises(ValueError, match="36 known items needed"):
        draw_mix(known, 36, "5:0", seed=0)
    for bad in ("3", "a:b", "0:0", "-1:2"):
        with pytest.raises(ValueError, match="known:unknown"):
            parse_mix(bad)


def test_every_trained_cell_records_its_curve_and_early_stop(tmp_path: Path, tiny_model_dir: Path):
    words = ["Paris", "Berlin", "Rome", "cat", "dog", "fish", "red", "blue"]
    rows = [{"id": f"i{i}", "question": f"Which {words[i % 8]}?", "options": [words[(i + j) % 8] for j in range(3)],
             "answer": i % 3} for i in range(16)]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        "name": "tiny", "model": str(tiny_model_dir), "out": str(tmp_path / "out"),
        "probe": {"n_prompts": 2, "shots": 0, "known_rule": "any"},
        "train": {"eval_every": 2, "early_stopping": True, "lora": {"r": 2, "alpha": 4},
                  "training": {"per_device_train_batch_size": 4, "max_steps": 4, "learning_rate": 0.05}},
        "tasks": [{"name": "mix", "train": str(data), "heldout": str(data), "test": [str(data)], "seeds": [0, 1],
                   "data_seed": 0, "mix": "1:1", "train_size": 4}],
        "methods": [{"name": "sft", "objective": "ce"},
                    {"name": "cols", "objective": "cogcalib", "objective_params": {"alpha": 0.1},
                     "known_source": "nll", "refit_every": 1}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    root = Path(tmp_path / "out")
    run_compare(load_compare_config(path), progress=False)
    probe = {json.loads(line)["id"]: json.loads(line)["known"]
             for line in (root / "mix" / "seed0" / "sft" / "probe.jsonl").read_text().splitlines()}
    for seed in (0, 1):
        for method in ("sft", "cols"):
            cell = root / "mix" / f"seed{seed}" / method
            summary = json.loads((cell / "adapter" / "training_summary.json").read_text())
            ids = summary["config"]["train_ids"]
            assert len(ids) == 4 and sum(probe[i] for i in ids) == 2
            with (cell / "adapter" / "curve.csv").open() as fh:
                steps = [int(r["step"]) for r in csv.DictReader(fh)]
            assert steps == [0, 2, 4]
            record = json.loads((cell / "cell.json").read_text())
            assert record["results_early_stop"] and record["best"]["step"] in (2, 4)
        cols = json.loads((root / "mix" / f"seed{seed}" / "cols" / "cell.json").read_text())
        assert all({"youden_j", "agreement"} <= set(t) for t in cols["thresholds"]) and cols["thresholds"]
    assert (root / "summary_early_stop.csv").is_file()
    # one model load per cell: the in-memory model and the in-place best weights score exactly like reloads
    from calibtune.models import load_model
    from calibtune.prompts import build_requests, get_template
    from calibtune.scoring import score

    cell = root / "mix" / "seed0" / "cols"
    for adapter, folder in ((cell / "adapter", cell), (cell / "adapter" / "best", cell / "early_stop")):
        model, tok = load_model(str(tiny_model_dir), adapter=str(adapter))
        lines = next(folder.glob("*.predictions.jsonl")).read_text().splitlines()
        stored = {json.loads(line)["id"]: json.loads(line)["probs"] for line in lines}
        from calibtune.data import load_dataset

        ds = load_dataset(str(data))
        lp = score(model, tok, build_requests(ds.items, get_template("blob", tok), "cloze"), scoring="cloze",
                   normalize="mean", progress=False)
        for item, row in zip(ds.items, lp):
            np.testing.assert_allclose(np.exp(row), stored[item.id], atol=1e-6)
    assert len(stored) == len(ds.items)
