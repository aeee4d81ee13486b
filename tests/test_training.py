"""CalibrationTrainer: loss decreases, gradient accumulation is exact, resume is exact, CogCalib thresholds,
the curve callback, adapters that `calibtune eval` loads, and a 2-process `accelerate launch` (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from calibtune.data import MCItem
from calibtune.models import load_model
from calibtune.prompts import get_template
from calibtune.training import (
    CalibrationCurveCallback,
    CalibrationTrainer,
    CalibrationTrainingArguments,
    build_dataset,
    lora_model,
)

WORDS = ["Paris", "Berlin", "Madrid", "Rome", "London", "Lisbon", "Vienna", "Oslo", "red", "green", "blue",
         "water", "fire", "stone", "cat", "dog", "bird", "fish"]


def make_items(n: int = 16) -> list[MCItem]:
    items = []
    for i in range(n):
        k = 2 + i % 3
        options = tuple(WORDS[(i + j) % len(WORDS)] for j in range(k))
        items.append(MCItem(id=f"t{i}", question=f"What is the capital of France {WORDS[i % len(WORDS)]}?",
                            options=options, gold=i % k, source="toy"))
    return items


def _args(tmp_path: Path, **kw) -> CalibrationTrainingArguments:
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=5e-3, max_steps=6,
                report_to="none", save_strategy="no", logging_steps=1, seed=0, use_cpu=True, disable_tqdm=True,
                lr_scheduler_type="constant", data_seed=0)
    base.update(kw)
    return CalibrationTrainingArguments(**base)


def _trainer(model_dir: Path, tmp_path: Path, items=None, known=None, lora: bool = True, **kw):
    model, tok = load_model(str(model_dir))
    model.train()
    if lora:
        torch.manual_seed(0)  # LoRA's random A init
        model = lora_model(model, r=4, alpha=8)
    ds = build_dataset(items or make_items(), tok, get_template("blob"), kw.pop("scoring", "cloze"), known=known)
    args = _args(tmp_path, **kw)
    return CalibrationTrainer(model=model, args=args, train_dataset=ds, processing_class=tok), tok


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


@pytest.mark.parametrize("scoring", ["cloze", "letter"])
def test_training_lowers_the_loss(tiny_model_dir: Path, tmp_path: Path, scoring: str) -> None:
    trainer, _ = _trainer(tiny_model_dir, tmp_path, scoring=scoring, max_steps=20, learning_rate=2e-2)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 20 and sum(losses[-4:]) / 4 < sum(losses[:4]) / 4


def test_gradient_accumulation_matches_one_big_batch(tiny_model_dir: Path, tmp_path: Path) -> None:
    # SGD, one optimiser step: batch 8 at once vs 4 micro-batches of 2 must give the same update
    big, _ = _trainer(tiny_model_dir, tmp_path / "a", lora=False, per_device_train_batch_size=8, max_steps=1,
                      optim="sgd", learning_rate=0.1)
    big.train()
    small, _ = _trainer(tiny_model_dir, tmp_path / "b", lora=False, per_device_train_batch_size=2,
                        gradient_accumulation_steps=4, max_steps=1, optim="sgd", learning_rate=0.1)
    small.train()
    a, b = _params(big.model), _params(small.model)
    moved = max((a[k] - _params(load_model(str(tiny_model_dir))[0])[k]).abs().max().item() for k in list(a)[:3])
    assert moved > 1e-4
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


class _StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_gives_the_same_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    kw = dict(max_steps=6, save_strategy="steps", save_steps=3, learning_rate=1e-2)
    full, _ = _trainer(tiny_model_dir, tmp_path / "full", **kw)
    full.train()
    part, _ = _trainer(tiny_model_dir, tmp_path / "part", **kw)
    part.add_callback(_StopAt(3))
    part.train()
    assert part.state.global_step == 3 and (tmp_path / "part" / "checkpoint-3").is_dir()
    resumed, _ = _trainer(tiny_model_dir, tmp_path / "part", **kw)
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-3"))
    assert resumed.state.global_step == 6
    a, b = _params(full.model), _params(resumed.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)
    la = [h["loss"] for h in full.state.log_history if "loss" in h]
    lb = [h["loss"] for h in resumed.state.log_history if "loss" in h]
    assert la[-1] == pytest.approx(lb[-1], rel=1e-5)


def test_cogcalib_online_threshold_is_fitted_and_used(tiny_model_dir: Path, tmp_path: Path) -> None:
    items = make_items(16)
    known = {it.id: i % 2 == 0 for i, it in enumerate(items)}
    trainer, _ = _trainer(tiny_model_dir, tmp_path, items=items, known=known, objective="cogcalib",
                          objective_params={"alpha": 1.0, "regularizer": "ls"}, known_source="nll",
                          style_steps=2, refit_every=2, max_steps=8)
    trainer.train()
    assert trainer.threshold is not None and len(trainer.threshold_history) >= 2
    assert all(h["step"] >= 2 for h in trainer.threshold_history)
    assert any("cogcalib_threshold" in h for h in trainer.state.log_history)


def test_cogcalib_needs_a_known_source(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="known_source"):
        _trainer(tiny_model_dir, tmp_path, objective="cogcalib")


def test_curve_callback_and_adapter_round_trip(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from calibtune.cli import app

    items = make_items(8)
    known = {it.id: i < 3 for i, it in enumerate(items[:6])}  # the last two items have no label
    trainer, tok = _trainer(tiny_model_dir, tmp_path / "run", items=items, max_steps=4)
    cb = CalibrationCurveCallback(items, tok, get_template("blob"), every=2, known=known,
                                  curve_path=tmp_path / "run" / "curve.csv", trainer=trainer)
    trainer.add_callback(cb)
    trainer.train()
    trainer.save_model(str(tmp_path / "run"))
    assert [row["step"] for row in cb.curve] == [0, 2, 4]
    assert cb.curve[0]["heldout_known_n"] == 3 and cb.curve[0]["heldout_unknown_n"] == 3
    header = (tmp_path / "run" / "curve.csv").read_text().splitlines()[0]
    for col in ("heldout_ece", "heldout_known_confidence", "heldout_unknown_accuracy"):
        assert col in header
    assert any("heldout_ece" in h for h in trainer.state.log_history)  # reached the trackers' log
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": it.id, "question": it.question, "options": list(it.options),
                                        "answer": it.gold}) + "\n" for it in items))
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "run"),
                                   "--data", str(data), "--out", str(tmp_path / "ev"), "--no-progress"])
    assert res.exit_code == 0, res.output
    # the adapter changes the scores: evaluation with and without it differ
    base = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data),
                                    "--out", str(tmp_path / "ev0"), "--no-progress"])
    assert base.exit_code == 0
    p1 = (tmp_path / "ev" / "predictions.jsonl").read_text()
    p0 = (tmp_path / "ev0" / "predictions.jsonl").read_text()
    assert p1 != p0


def test_two_process_accelerate_launch(tiny_model_dir: Path, tmp_path: Path) -> None:
    script = Path(__file__).parent / "scripts" / "ddp_train.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # `--multi_gpu` selects the torchrun launcher; with use_cpu (set by the script) the processes run DDP over gloo
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533"]
    two = subprocess.run([*launch, str(script), str(tiny_model_dir), str(tmp_path / "two"), "2"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), str(tiny_model_dir), str(tmp_path / "one"), "4"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    r2 = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    r1 = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert r2[0]["world_size"] == 2 and r1["world_size"] == 1
    for r in r2:  # each process takes part and sees half of the global batch of 4
        assert r["batch_sizes"] and set(r["batch_sizes"]) == {2}
    assert set(r1["batch_sizes"]) == {4}
    assert r2[0]["final_loss"] == pytest.approx(r1["final_loss"], rel=0.05, abs=1e-3)


def _config(tmp_path: Path, model_dir: Path, **extra) -> Path:
    import yaml

    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"id": it.id, "question": it.question, "options": list(it.options),
                                        "answer": it.gold}) + "\n" for it in make_items(12)))
    cfg = {"model": str(model_dir), "train_data": str(data), "eval_data": str(data), "scoring": "cloze",
           "objective": "ls", "objective_params": {"epsilon": 0.1}, "lora": {"r": 4, "alpha": 8}, "eval_every": 2,
           "training": {"per_device_train_batch_size": 4, "max_steps": 4, "learning_rate": 0.01}, **extra}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_cli_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from calibtune.cli import app

    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--config", str(_config(tmp_path, tiny_model_dir)), "--output-dir",
                                   str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (out / "adapter_config.json").exists() and (out / "curve.csv").exists()
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps"] == 4 and [c["step"] for c in summary["curve"]] == [0, 2, 4]


def test_train_cli_rejects_a_bad_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from calibtune.cli import app

    bad = _config(tmp_path, tiny_model_dir, lora={"r": 4, "rank_typo": 3})
    res = CliRunner().invoke(app, ["train", "--config", str(bad), "--output-dir", str(tmp_path / "o")])
    assert res.exit_code == 2 and "lora.rank_typo" in " ".join(res.output.split())
    bad = _config(tmp_path, tiny_model_dir, training={"not_a_trainer_flag": 1})
    res = CliRunner().invoke(app, ["train", "--config", str(bad), "--output-dir", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not_a_trainer_flag" in res.output
    bad = _config(tmp_path, tiny_model_dir, objective="cogcalib", objective_params={}, known_source="probe")
    res = CliRunner().invoke(app, ["train", "--config", str(bad), "--output-dir", str(tmp_path / "o")])
    assert res.exit_code == 2 and "probe" in res.output


@pytest.mark.parametrize(("objective", "estep", "expected"), [("rcft", "epoch", 2), ("rcft-code", "once", 1)])
def test_rcft_e_step_runs_per_epoch_or_once(tiny_model_dir: Path, tmp_path: Path, objective: str, estep: str,
                                            expected: int) -> None:
    trainer, _ = _trainer(tiny_model_dir, tmp_path, objective=objective, estep=estep, max_steps=-1,
                          num_train_epochs=2)
    trainer.train()
    assert len(trainer.estep_history) == expected
    first = trainer.estep_history[0]
    assert first["step"] == 0 and sum(first["bin_count"]) == 16  # the whole training set, before any update
    assert all(0.0 <= a <= 1.0 for a in first["bin_accuracy"])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert all(np.isfinite(losses))


@pytest.mark.parametrize("scoring", ["cloze", "letter"])
def test_question_plus_answer_adds_the_prompts_lm_loss(tiny_model_dir: Path, tmp_path: Path, scoring: str) -> None:
    items = make_items(4)
    answer, _ = _trainer(tiny_model_dir, tmp_path / "a", items=items, lora=False, scoring=scoring)
    joint, _ = _trainer(tiny_model_dir, tmp_path / "j", items=items, lora=False, scoring=scoring,
                        sft_target="question+answer", question_weight=0.5)
    features = [answer.train_dataset[i] for i in range(4)]
    with torch.no_grad():
        l_answer = answer.compute_loss(answer.model, answer.data_collator(features))
        l_joint = joint.compute_loss(joint.model, joint.data_collator(features))
        # independent: transformers' own causal-LM loss (mean over shifted tokens) of each unpadded prompt
        lm = [joint.model(input_ids=torch.tensor([f["encoded"].context_ids]),
                          labels=torch.tensor([f["encoded"].context_ids])).loss for f in features]
    assert float(torch.stack(lm).mean()) > 0.1
    torch.testing.assert_close(l_joint, l_answer + 0.5 * torch.stack(lm).mean(), rtol=1e-5, atol=1e-6)


def test_rcft_with_question_plus_answer_trains(tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer, _ = _trainer(tiny_model_dir, tmp_path, objective="rcft", sft_target="question+answer", max_steps=3)
    trainer.train()
    assert len(trainer.estep_history) == 1
    assert all(np.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def test_sft_target_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sft_target"):
        _args(tmp_path, sft_target="question")


def test_cpu_bf16_detection_reads_the_flags(tmp_path: Path) -> None:
    from calibtune.training import cpu_has_native_bf16

    (tmp_path / "avx2").write_text("flags\t\t: fpu sse2 avx avx2 fma\n")
    (tmp_path / "spr").write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    assert cpu_has_native_bf16(tmp_path / "avx2") is False
    assert cpu_has_native_bf16(tmp_path / "spr") is True
    assert cpu_has_native_bf16(tmp_path / "missing") is None


def test_bf16_on_a_cpu_without_it_warns(monkeypatch, tmp_path: Path) -> None:
    from calibtune import training

    monkeypatch.setattr(training.config, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = training.TrainConfig(train_data="x", training={"output_dir": str(tmp_path), "bf16": True})
    with pytest.warns(UserWarning, match="bf16: false"):
        training.training_arguments(cfg)
