"""Prior-knowledge probing: SliCK rules, answer matching, option permutation, cache, files, CLI, SmolLM2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import calibtune.probing as probing
from calibtune.cli import app
from calibtune.data import MCItem, OpenItem, load_dataset
from calibtune.prompts import build_requests, get_template
from calibtune.scoring import score
from calibtune.probing import (
    false_known_rate,
    ProbeConfig,
    categorize_mc,
    categorize_open,
    exact_match,
    is_known,
    load_probe,
    normalize_answer,
    probe_mc,
    probe_open,
    run_probe,
)

runner = CliRunner()
DATA_DIR = os.environ.get("CALIBTUNE_DATA_DIR", str(Path(__file__).parents[2] / "shared" / "data"))

ITEMS = [
    MCItem(id="a", question="What is the capital of France?", options=("Paris", "Berlin", "Rome", "Oslo"), gold=0),
    MCItem(id="b", question="Which is red?", options=("water", "fire"), gold=1),
    MCItem(id="c", question="Which is a pet?", options=("stone", "cat", "fish"), gold=1),
    MCItem(id="d", question="Which is blue?", options=("blue", "stone", "dog"), gold=0),
]
GOLD_TEXTS = {"Paris", "fire", "cat", "blue"}  # never a distractor


def _write_mc(path: Path) -> Path:
    rows = [{"id": it.id, "question": it.question, "options": list(it.options), "answer": it.gold} for it in ITEMS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------ pure rules


@pytest.mark.parametrize("flags, category", [
    ([True, True, True, True], "HighlyKnown"),
    ([True, False, False, False], "MaybeKnown"),
    ([False, True, True, True], "MaybeKnown"),
    ([False, False, False, False], "Unknown"),
    ([True], "HighlyKnown"),
])
def test_categorize_mc(flags: list[bool], category: str) -> None:
    assert categorize_mc(flags) == category


@pytest.mark.parametrize("greedy, sampled, category", [
    ([True] * 3, [False] * 6, "HighlyKnown"),
    ([True, False, True], [False] * 6, "MaybeKnown"),
    ([False] * 3, [False] * 5 + [True], "WeaklyKnown"),
    ([False] * 3, [False] * 6, "Unknown"),
    ([False] * 3, [], "Unknown"),
])
def test_categorize_open(greedy: list[bool], sampled: list[bool], category: str) -> None:
    assert categorize_open(greedy, sampled) == category


def test_categorize_needs_results() -> None:
    with pytest.raises(ValueError):
        categorize_mc([])
    with pytest.raises(ValueError):
        categorize_open([], [True])


def test_known_rules() -> None:
    assert is_known("MaybeKnown", 0.25, "any") and is_known("WeaklyKnown", 0.0, "any")
    assert not is_known("Unknown", 0.0, "any")
    assert is_known("MaybeKnown", 0.75, "majority") and not is_known("MaybeKnown", 0.5, "majority")
    assert is_known("HighlyKnown", 1.0, "all") and not is_known("MaybeKnown", 0.75, "all")
    with pytest.raises(ValueError, match="known_rule"):
        is_known("Unknown", 0.0, "some")  # type: ignore[arg-type]


def test_answer_normalisation_and_exact_match() -> None:
    assert normalize_answer("  The  Eiffel-Tower! ") == "eiffeltower"
    assert normalize_answer("A cat, an apple and THE dog.") == "cat apple and dog"
    assert exact_match("the United States.", ["USA", "United States"])
    assert exact_match("Paris", ["paris"])
    assert not exact_match("Paris, France", ["Paris"])
    assert not exact_match("", ["Paris"])


# ------------------------------------------------------------------ option permutation (fake scorer)


def test_permutation_maps_back_to_original_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scorer that always picks the gold TEXT is right in every order; one that picks position 0 follows the order."""
    seen = []

    def by_text(model, tok, requests, **kw):
        seen.extend(requests)
        return [np.log(np.array([0.7 if c.strip() in GOLD_TEXTS else 0.3 for c in r.choices]) /
                       sum(0.7 if c.strip() in GOLD_TEXTS else 0.3 for c in r.choices)) for r in requests]

    monkeypatch.setattr(probing.mc, "score", by_text)
    records = probe_mc(None, None, ITEMS, pool=ITEMS, n_prompts=6, shots=1, progress=False)
    assert len(seen) == len(ITEMS) * 6 + len(ITEMS)  # one batched call: all prompts plus the canonical ones
    orders = {tuple(d["order"]) for r in records for d in r.prompts}
    assert len(orders) > 3  # the options really were permuted
    for item, rec in zip(ITEMS, records):
        assert rec.category == "HighlyKnown" and rec.known and rec.p_correct == 1.0
        assert all(d["pred"] == item.gold for d in rec.prompts)
        assert all(d["p_gold"] == pytest.approx(0.7 / (0.7 + 0.3 * (len(item.options) - 1))) for d in rec.prompts)
        assert rec.nll == pytest.approx(-np.log(0.7 / (0.7 + 0.3 * (len(item.options) - 1))))

    def first_position(model, tok, requests, **kw):
        return [np.log(np.eye(len(r.choices))[0] * 0.9 + 0.1 / len(r.choices)) for r in requests]

    monkeypatch.setattr(probing.mc, "score", first_position)
    records = probe_mc(None, None, ITEMS, pool=ITEMS, n_prompts=6, shots=0, scoring="letter", progress=False)
    for item, rec in zip(ITEMS, records):
        for d in rec.prompts:
            assert d["pred"] == d["order"][0] and d["correct"] == (d["order"][0] == item.gold)
        assert rec.p_correct == sum(d["correct"] for d in rec.prompts) / 6
        assert rec.category == categorize_mc([d["correct"] for d in rec.prompts])
        assert rec.nll == pytest.approx(-np.log(0.9 + 0.1 / len(item.options)) if item.gold == 0 else
                                        -np.log(0.1 / len(item.options)))


def test_probe_mc_tiny_model_is_deterministic(tiny) -> None:
    model, tok = tiny
    for exemplars in ("shared", "per-item"):
        a = probe_mc(model, tok, ITEMS, pool=ITEMS, n_prompts=3, shots=2, known_rule="any", exemplars=exemplars,
                     progress=False)
        b = probe_mc(model, tok, ITEMS[::-1], pool=ITEMS, n_prompts=3, shots=2, known_rule="any",
                     exemplars=exemplars, progress=False)
        assert [r.prompts for r in a] == [r.prompts for r in b[::-1]]
    assert [r.prompts for r in a] == [r.prompts for r in b[::-1]]  # an item's probe ignores its neighbours
    for r in a:
        assert 0 <= r.p_correct <= 1 and r.nll >= 0 and len(r.prompts) == 3


def test_probe_open_tiny_model(tiny) -> None:
    model, tok = tiny
    items = [OpenItem(id=f"o{i}", question=f"Which is red {i}?", answers=("fire",), subject="P1") for i in range(5)]
    recs = probe_open(model, tok, items, pool=items, n_prompts=2, n_samples=3, shots=2, max_new_tokens=4,
                      progress=False)
    for r in recs:
        assert len(r.prompts) == 2 and all(len(d["samples"]) == 3 for d in r.prompts)
        assert all("\n" not in d["greedy"] for d in r.prompts)
        assert r.p_correct_sampled is not None and r.nll > 0
        assert r.category == categorize_open([d["greedy_correct"] for d in r.prompts],
                                             [c for d in r.prompts for c in d["samples_correct"]])


# ------------------------------------------------------------------ cache and files


def test_cache_hit_does_not_touch_the_model(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    cfg = ProbeConfig(model=str(tiny_model_dir), data=str(_write_mc(tmp_path / "items.jsonl")),
                      out=str(tmp_path / "probe.jsonl"), n_prompts=2, shots=1, cache_dir=str(tmp_path / "cache"),
                      known_rule="any", progress=False)
    first = run_probe(cfg)
    assert not first.cached and len(first.records) == len(ITEMS)

    def boom(*args, **kwargs):
        raise AssertionError("the model must not be loaded or run on a cache hit")

    monkeypatch.setattr(probing.run, "load_model", boom)
    monkeypatch.setattr(probing.mc, "score", boom)
    out2 = tmp_path / "again.jsonl"
    second = run_probe(ProbeConfig(**{**cfg.__dict__, "out": str(out2), "batch_size": 3}))
    assert second.cached and second.records == first.records
    assert out2.read_text() == Path(cfg.out).read_text()
    with pytest.raises(AssertionError, match="must not"):  # another setting is another key
        run_probe(ProbeConfig(**{**cfg.__dict__, "seed": 1}))
    with pytest.raises(AssertionError, match="must not"):
        run_probe(ProbeConfig(**{**cfg.__dict__, "normalize": "mean"}))


def test_probe_scores_with_the_chosen_normalisation(tiny) -> None:
    """The canonical answer NLL is the option-distribution NLL of the same cloze scoring as evaluation."""
    model, tok = tiny
    items = [MCItem(id="m", question="Which are warm?", options=("fire and stone", "water", "blue cat dog"), gold=0),
             MCItem(id="n", question="Which is a pet?", options=("a small cat", "stone"), gold=0)]
    canonical = build_requests(items, get_template("blob"), "cloze")
    nll = {}
    for normalize in ("sum", "mean"):
        records = probe_mc(model, tok, items, pool=items, n_prompts=1, shots=0, normalize=normalize, known_rule="any",
                           progress=False)
        expected = score(model, tok, canonical, scoring="cloze", normalize=normalize, progress=False)
        for rec, lp, item in zip(records, expected, items):
            assert rec.nll == pytest.approx(-lp[item.gold], rel=1e-6)
        nll[normalize] = [r.nll for r in records]
    assert nll["sum"] != pytest.approx(nll["mean"])  # multi-token options: the two scorings differ


def test_jsonl_round_trip(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = ProbeConfig(model=str(tiny_model_dir), data=str(_write_mc(tmp_path / "items.jsonl")),
                      out=str(tmp_path / "probe.jsonl"), n_prompts=2, shots=0, cache=False, known_rule="any",
                      progress=False)
    result = run_probe(cfg)
    loaded = load_probe(cfg.out)
    assert list(loaded) == [it.id for it in ITEMS]
    assert list(loaded.values()) == result.records
    bad = tmp_path / "dup.jsonl"
    bad.write_text(Path(cfg.out).read_text().splitlines()[0] + "\n" + Path(cfg.out).read_text().splitlines()[0])
    with pytest.raises(ValueError, match="duplicate id"):
        load_probe(bad)


# ------------------------------------------------------------------ CLI


def test_cli_probe_mc_and_open(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "probe.jsonl"
    args = ["probe", "--model", str(tiny_model_dir), "--out", str(out), "--no-progress",
            "--cache-dir", str(tmp_path / "cache")]
    res = runner.invoke(app, [*args, "--data", str(_write_mc(tmp_path / "mc.jsonl")), "--scoring", "letter",
                              "--n-prompts", "5", "--shots", "1"])
    assert res.exit_code == 0, res.output
    assert "mean P_correct" in res.output and "all" in res.output
    rates = {k: f"K={k}: {false_known_rate(5, k):.4f}" for k in {len(it.options) for it in ITEMS}}
    flat = "".join(res.output.split())  # the console wraps long lines
    assert "expectedfalse-knownrate" in flat and all("".join(r.split()) in flat for r in rates.values())
    assert set(load_probe(out)) == {it.id for it in ITEMS}

    open_file = tmp_path / "open.jsonl"
    open_file.write_text("".join(json.dumps({"id": f"o{i}", "question": f"Which is red {i}?", "answers": ["fire"]})
                                 + "\n" for i in range(5)))
    res = runner.invoke(app, [*args, "--data", str(open_file), "--n-prompts", "1", "--n-samples", "1",
                              "--shots", "2", "--overwrite"])  # --out exists now: replaced only when asked
    assert res.exit_code == 0, res.output
    assert all(r.p_correct_sampled is not None for r in load_probe(out).values())


def test_cli_probe_bad_input(tmp_path: Path, tiny_model_dir: Path) -> None:
    args = ["probe", "--model", str(tiny_model_dir), "--out", str(tmp_path / "p.jsonl"), "--no-progress"]
    res = runner.invoke(app, [*args, "--data", "no-such-set"])
    assert res.exit_code == 2 and "unknown data set" in res.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = runner.invoke(app, [*args, "--data", str(empty)])
    assert res.exit_code == 2 and "no items" in res.output
    res = runner.invoke(app, [*args, "--data", str(_write_mc(tmp_path / "mc.jsonl")), "--preset", "nope"])
    assert res.exit_code == 2 and "preset" in res.output
    assert not (tmp_path / "p.jsonl").exists()


# ------------------------------------------------------------------ the real model


@pytest.mark.slow
def test_smollm2_arc_easy(smollm2) -> None:
    model, tok = smollm2
    items = load_dataset("arc-easy:test", data_dir=DATA_DIR, limit=8).items
    recs = probe_mc(model, tok, items, pool=None, n_prompts=2, shots=0, known_rule="any", progress=False)
    for r in recs:
        assert 0 <= r.p_correct <= 1 and np.isfinite(r.nll) and r.nll >= 0
        assert r.category == {1.0: "HighlyKnown", 0.0: "Unknown"}.get(r.p_correct, "MaybeKnown")
        assert r.known == (r.category != "Unknown")
    right = [r.nll for r in recs if r.category == "HighlyKnown"]
    wrong = [r.nll for r in recs if r.category == "Unknown"]
    if right and wrong:
        assert np.mean(right) < np.mean(wrong)
