"""The examples/ training scripts on the tiny model: a plain transformers ``Trainer`` and a TRL ``SFTTrainer``
subclass, each checked to train the calibtune objective it names; and ``report_to: tensorboard`` event files
that hold the held-out curve (the scripts' and ``calibtune train``'s)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from calibtune.data import load_dataset
from calibtune.models import load_model
from calibtune.prompts import build_requests, get_template
from calibtune.scoring import score

EXAMPLES = Path(__file__).parents[1] / "examples"
WORDS = ["Paris", "Berlin", "Madrid", "Rome", "London", "Lisbon", "Vienna", "Oslo", "red", "green", "blue", "water"]


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def items_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("examples") / "items.jsonl"
    rows = [{"id": f"i{i}", "question": f"What is the capital of France {WORDS[i]}?",
             "options": [WORDS[(i + j) % len(WORDS)] for j in range(2 + i % 3)], "answer": i % (2 + i % 3)}
            for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _option_logprobs(model_dir: Path, items_file: Path) -> tuple[list[np.ndarray], list[int]]:
    """The untouched model's option distribution (per-token mean cloze, blob template), scored independently."""
    model, tok = load_model(str(model_dir))
    items = load_dataset(str(items_file)).items
    requests = build_requests(items, get_template("blob", tok), "cloze")
    return score(model, tok, requests, scoring="cloze", normalize="mean", progress=False), [it.gold for it in items]


def _tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(folder.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {folder}"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _assert_curve_logged(scalars: dict[str, list[tuple[int, float]]], curve: list[dict]) -> None:
    for key in ("heldout_accuracy", "heldout_ece", "heldout_confidence", "heldout_nll"):
        logged = scalars[f"train/{key}"]
        assert [s for s, _ in logged] == [row["step"] for row in curve]
        np.testing.assert_allclose([v for _, v in logged], [row[key] for row in curve], rtol=1e-6)


def test_plain_trainer_example(tmp_path: Path, tiny_model_dir: Path, items_file: Path) -> None:
    """One full-batch step: the logged loss is label smoothing (ε = 0.1) of the untouched model's option
    distribution, computed here from calibtune's scorer by hand; the curve reaches TensorBoard."""
    out = tmp_path / "run"
    trainer, curve = _example("custom_trainer").main([
        "--model", str(tiny_model_dir), "--train", str(items_file), "--heldout", str(items_file), "--out", str(out),
        "--max-steps", "1", "--batch-size", "12", "--eval-every", "1", "--report-to", "tensorboard"])
    logprobs, gold = _option_logprobs(tiny_model_dir, items_file)
    eps = 0.1
    expected = np.mean([(1 - eps) * -lp[y] + eps * -lp.mean() for lp, y in zip(logprobs, gold)])
    logged = next(h["train_loss"] for h in trainer.state.log_history if "train_loss" in h)  # one step: its loss
    assert logged == pytest.approx(expected, rel=1e-4)
    assert curve.curve[0]["step"] == 0 and curve.curve[-1]["step"] == 1
    assert curve.curve[0]["heldout_nll"] == pytest.approx(np.mean([-lp[y] for lp, y in zip(logprobs, gold)]), rel=1e-5)
    _assert_curve_logged(_tensorboard_scalars(out), curve.curve)
    assert json.loads((out / "curve.json").read_text()) == curve.curve


def test_trl_sft_trainer_example(tmp_path: Path, tiny_model_dir: Path, items_file: Path) -> None:
    """``SFTTrainer`` subclass: the logged loss is CoLS (α = 0.5) with known = probe labels, by hand."""
    pytest.importorskip("trl")
    logprobs, gold = _option_logprobs(tiny_model_dir, items_file)
    known = {f"i{i}": i % 2 == 0 for i in range(12)}
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps({"id": k, "category": "HighlyKnown" if v else "Unknown", "known": v,
                                         "p_correct": float(v), "nll": 1.0, "n_prompts": 1}) + "\n"
                             for k, v in known.items()))
    out = tmp_path / "run"
    trainer, curve = _example("trl_cogcalib").main([
        "--model", str(tiny_model_dir), "--train", str(items_file), "--heldout", str(items_file), "--out", str(out),
        "--probe", str(probe), "--alpha", "0.5", "--max-steps", "1", "--batch-size", "12", "--eval-every", "1"])
    from trl import SFTTrainer

    assert isinstance(trainer, SFTTrainer)
    expected = np.mean([-lp[y] + (0.5 * -lp.mean() if known[f"i{i}"] else 0.0)
                        for i, (lp, y) in enumerate(zip(logprobs, gold))])
    logged = next(h["train_loss"] for h in trainer.state.log_history if "train_loss" in h)  # one step: its loss
    assert logged == pytest.approx(expected, rel=1e-4)
    _assert_curve_logged(_tensorboard_scalars(out), curve.curve)


def test_calibtune_train_reports_the_curve_to_tensorboard(tmp_path: Path, tiny_model_dir: Path,
                                                          items_file: Path) -> None:
    from calibtune.training import load_train_config, run_training

    config = tmp_path / "train.yaml"
    config.write_text(
        f"model: {tiny_model_dir}\ntrain_data: {items_file}\neval_data: {items_file}\neval_every: 1\n"
        "objective: ls\nobjective_params: {epsilon: 0.1}\nnormalize: mean\n"
        f"training: {{output_dir: {tmp_path / 'out'}, max_steps: 2, per_device_train_batch_size: 6, "
        "report_to: tensorboard, logging_steps: 1}\n")
    summary = run_training(load_train_config(config), progress=False)
    assert [row["step"] for row in summary["curve"]] == [0, 1, 2]
    _assert_curve_logged(_tensorboard_scalars(tmp_path / "out"), summary["curve"])
