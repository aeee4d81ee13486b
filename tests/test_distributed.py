"""Data-parallel scoring (calibtune.distributed): length-balanced shards, gathering in item order, and
`eval`, `probe` and `train` under a 2-process `accelerate launch` (CPU, gloo) equal to 1 process, each
process scoring only its own shard."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from calibtune.distributed import gather_in_order, score_sharded, shard_indices
from calibtune.metrics import reliability_bins
from calibtune.prompts import build_requests, get_template
from calibtune.scoring import score

SCRIPT = Path(__file__).parent / "scripts" / "dp_cli.py"
WORDS = ["Paris", "Berlin", "Madrid", "Rome", "London", "Lisbon", "Vienna", "Oslo", "red", "green", "blue",
         "water", "fire", "stone", "cat", "dog", "bird", "fish"]


def _items(n: int, offset: int = 0) -> list[dict]:
    """``n`` distinct items of varied length (2 to 5 options, questions of 1 to 4 extra words)."""
    rows = []
    for i in range(offset, offset + n):
        k = 2 + i % 4
        extra = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1 + i % 4))
        rows.append({"id": f"q{i}", "question": f"Which is the capital {i} of {extra}?",
                     "options": [WORDS[(3 * i + j) % len(WORDS)] for j in range(k)], "answer": i % k})
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------ shards and gathering, one process


def test_shards_are_a_balanced_snake_hand_worked() -> None:
    # longest first: 9 (item 4), 8 (2), 5 (0), 3 (1), 1 (3); the snake deals ranks 0, 1, 1, 0, 0
    lengths = [5, 3, 8, 1, 9]
    assert shard_indices(lengths, rank=0, size=2) == [1, 3, 4]
    assert shard_indices(lengths, rank=1, size=2) == [0, 2, 2]  # padded with its own last item
    assert shard_indices(lengths, rank=0, size=1) == [0, 1, 2, 3, 4]
    assert shard_indices([], rank=0, size=2) == []
    assert shard_indices([4], rank=1, size=2) == [0]  # no item of its own: pads with item 0


@pytest.mark.parametrize("size", [2, 3, 4])
def test_shards_cover_every_item_once_with_balanced_tokens(size: int) -> None:
    rng = np.random.default_rng(size)
    lengths = rng.integers(5, 400, size=103).tolist()
    shards = [shard_indices(lengths, rank=r, size=size) for r in range(size)]
    assert {len(s) for s in shards} == {math.ceil(103 / size)}  # the same number of forwards everywhere
    own = [sorted(set(s)) for s in shards]
    assert sorted(i for s in own for i in s) == list(range(103))  # disjoint and complete
    tokens = [sum(lengths[i] for i in s) for s in own]
    assert max(tokens) - min(tokens) <= max(lengths)  # within one item of each other
    contiguous = [sum(lengths[i] for i in range(r * 103 // size, (r + 1) * 103 // size)) for r in range(size)]
    assert max(tokens) - min(tokens) <= max(contiguous) - min(contiguous)


def test_gather_keeps_item_order_and_drops_padding() -> None:
    assert gather_in_order([2, 0, 1, 1], ["c", "a", "b", "b2"], 3) == ["a", "b", "c"]
    with pytest.raises(RuntimeError, match=r"items \[1\]"):
        gather_in_order([0, 2], ["a", "c"], 3)


def test_one_process_is_plain_score(tiny) -> None:
    model, tok = tiny
    from calibtune.data import MCItem

    items = [MCItem(id=r["id"], question=r["question"], options=tuple(r["options"]), gold=r["answer"])
             for r in _items(7)]
    requests = build_requests(items, get_template("blob"), "cloze")
    expected = score(model, tok, requests, scoring="cloze", batch_size=3, progress=False)
    got = score_sharded(model, tok, requests, scoring="cloze", batch_size=3, progress=False)
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ 2 processes under accelerate launch


def _run(tmp_path: Path, commands: list[list[str]], name: str, port: int | None = None) -> list[list[dict]]:
    """Run ``commands`` through dp_cli.py in 2 processes (gloo; ``port``) or in 1; each process's records."""
    records = tmp_path / f"records-{name}"
    cmd_file = tmp_path / f"commands-{name}.json"
    cmd_file.write_text(json.dumps(commands))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # `--multi_gpu` selects the torchrun launcher; --device cpu makes every process join over gloo
    launch = [sys.executable] if port is None else [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]
    run = subprocess.run([*launch, str(SCRIPT), str(records), str(cmd_file)], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return [[json.loads(line) for line in path.read_text().splitlines()] for path in sorted(records.glob("rank*.jsonl"))]


def _scored(events: list[dict]) -> list[tuple[list[int], list[str]]]:
    """(shard indices, prompts scored) of each score call of one process (a call follows its shard)."""
    calls = [e for e in events if e["event"] == "score"]
    pairs = [(events[i - 1]["shard"], e["prompts"]) for i, e in enumerate(events)
             if e["event"] == "score" and i > 0 and events[i - 1]["event"] == "shard"]
    assert len(pairs) == len(calls)
    return pairs


def _assert_each_scored_only_its_shard(two: list[list[dict]], one: list[list[dict]]) -> None:
    """Per score call, each of the two processes scored exactly the requests of its own shard, about half,
    and together every request of the 1-process call once."""
    reference = [e["prompts"] for e in one[0] if e["event"] == "score"]
    pairs = [_scored(events) for events in two]
    assert len(pairs[0]) == len(pairs[1]) == len(reference) > 0
    for (shard0, p0), (shard1, p1), requests in zip(*pairs, reference):
        assert len(p0) == len(shard0) and len(p1) == len(shard1) == math.ceil(len(requests) / 2) < len(requests)
        own0, own1 = set(shard0), set(shard1)
        assert not own0 & own1 and own0 | own1 == set(range(len(requests)))
        for shard, prompts in ((shard0, p0), (shard1, p1)):
            assert [requests[i] for i in shard] == prompts  # what it scored is its shard of the same requests


def test_eval_and_probe_with_two_processes_equal_one(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _write(tmp_path / "items.jsonl", _items(11))
    held = _write(tmp_path / "held.jsonl", _items(9, offset=40))
    evaluate = ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--scoring", "cloze", "--scoring",
                "letter", "--temperature-data", str(held), "--batch-size", "3", "--device", "cpu", "--no-progress"]
    probe = ["probe", "--model", str(tiny_model_dir), "--data", str(data), "--n-prompts", "3", "--shots", "0",
             "--known-rule", "any", "--no-cache", "--batch-size", "4", "--device", "cpu", "--no-progress"]
    ranks = _run(tmp_path, [evaluate + ["--out", str(tmp_path / "two")],
                            probe + ["--out", str(tmp_path / "two.probe.jsonl")]], "two", port=29541)
    single = _run(tmp_path, [evaluate + ["--out", str(tmp_path / "one")],
                             probe + ["--out", str(tmp_path / "one.probe.jsonl")]], "one")
    assert len(ranks) == 2 and len(single) == 1

    one = [json.loads(x) for x in (tmp_path / "one" / "predictions.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two" / "predictions.jsonl").read_text().splitlines()]
    assert [(r["id"], r["scoring"]) for r in two] == [(r["id"], r["scoring"]) for r in one]  # item order
    for a, b in zip(one, two):
        np.testing.assert_allclose(b["probs"], a["probs"], rtol=0, atol=1e-5)
        assert (b["pred"], b["label"]) == (a["pred"], a["label"])
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["processes"] == 2 and m1["processes"] == 1
    assert m2["temperatures"]["cloze"] == pytest.approx(m1["temperatures"]["cloze"], abs=1e-4)
    for key, r1 in m1["results"].items():
        for metric in ("n", "accuracy", "ece", "brier", "nll", "mce", "smece"):
            assert m2["results"][key][metric] == pytest.approx(r1[metric], abs=1e-5), (key, metric)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".two", "two"))) == [
        "two", "two.probe.jsonl"]  # one results folder, no staged copy left behind

    p1 = [json.loads(x) for x in (tmp_path / "one.probe.jsonl").read_text().splitlines()]
    p2 = [json.loads(x) for x in (tmp_path / "two.probe.jsonl").read_text().splitlines()]
    assert [r["id"] for r in p2] == [r["id"] for r in p1]
    for a, b in zip(p1, p2):
        assert (b["category"], b["known"], b["p_correct"]) == (a["category"], a["known"], a["p_correct"])
        assert b["nll"] == pytest.approx(a["nll"], abs=1e-5)

    _assert_each_scored_only_its_shard(ranks, single)
    # binned statistics merge exactly as sums: the bins of the two shards add up to the bins of the set
    cloze = [r for r in two if r["scoring"] == "cloze"]
    conf, correct = np.array([r["confidence"] for r in cloze]), np.array([r["correct"] for r in cloze])
    test_call = [e for e in ranks[0] if e["event"] == "shard" and e["n"] == len(cloze)][0]
    mine = sorted(set(test_call["shard"]))
    rest = sorted(set(range(len(cloze))) - set(mine))
    whole = reliability_bins(conf, correct)
    parts = [reliability_bins(conf[idx], correct[idx]) for idx in (mine, rest)]
    np.testing.assert_array_equal(parts[0].count + parts[1].count, whole.count)
    np.testing.assert_allclose(sum(p.count * p.accuracy for p in parts), whole.count * whole.accuracy, atol=1e-9)
    np.testing.assert_allclose(sum(p.count * p.confidence for p in parts), whole.count * whole.confidence, atol=1e-9)


def test_train_with_two_processes_equals_one(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _write(tmp_path / "train.jsonl", _items(16))
    held = _write(tmp_path / "held.jsonl", _items(9, offset=40))
    cfg = {"model": str(tiny_model_dir), "train_data": str(data), "eval_data": str(held), "scoring": "cloze",
           "objective": "rcft", "lora": {"r": 4, "alpha": 8}, "eval_every": 2, "device": "cpu",
           "training": {"max_steps": 4, "learning_rate": 0.05, "optim": "sgd", "lr_scheduler_type": "constant",
                        "logging_steps": 1, "data_seed": 0, "per_device_eval_batch_size": 3}}
    one_cfg, two_cfg = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one_cfg.write_text(yaml.safe_dump({**cfg, "batch_size": 4}))  # the same global batch of 4
    two_cfg.write_text(yaml.safe_dump({**cfg, "batch_size": 2}))
    ranks = _run(tmp_path, [["train", "--config", str(two_cfg), "--output-dir", str(tmp_path / "two"),
                             "--no-progress"]], "two", port=29542)
    single = _run(tmp_path, [["train", "--config", str(one_cfg), "--output-dir", str(tmp_path / "one"),
                              "--no-progress"]], "one")

    s1 = json.loads((tmp_path / "one" / "training_summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "training_summary.json").read_text())
    assert s1["steps"] == s2["steps"] == 4
    assert s2["train"]["train_loss"] == pytest.approx(s1["train"]["train_loss"], rel=1e-4)
    assert [e["bin_count"] for e in s2["e_steps"]] == [e["bin_count"] for e in s1["e_steps"]]
    np.testing.assert_allclose([e["bin_accuracy"] for e in s2["e_steps"]], [e["bin_accuracy"] for e in s1["e_steps"]])
    assert [c["step"] for c in s2["curve"]] == [c["step"] for c in s1["curve"]] == [0, 2, 4]
    for c1, c2 in zip(s1["curve"], s2["curve"]):
        for key, value in c1.items():
            assert c2[key] == pytest.approx(value, abs=1e-5), key
    from safetensors.numpy import load_file

    w1 = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "adapter_model.safetensors"))
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=1e-4, atol=1e-6)

    _assert_each_scored_only_its_shard(ranks, single)  # the held-out curve
    e_step = [[e for e in events if e["event"] == "shard" and e["n"] == 16] for events in ranks]
    assert e_step[0] and len(e_step[0]) == len(e_step[1])  # RCFT's E-step: the 16 training items
    for a, b in zip(*e_step):
        assert not set(a["shard"]) & set(b["shard"]) and sorted(set(a["shard"]) | set(b["shard"])) == list(range(16))
