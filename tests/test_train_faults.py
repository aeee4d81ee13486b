"""Training faults: a SIGKILLed `calibtune train` resumed with `--resume last` ends exactly like an uninterrupted
run (adapter, held-out curve, CogCalib thresholds, RCFT bins); a NaN loss stops at its step and keeps the last
good checkpoint; checkpoints are saved by default."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.training import STATE_FILE, NonFiniteLossError, TrainConfig, last_checkpoint, training_arguments

WORDS = ["Paris", "Berlin", "Rome", "cat", "dog", "fish", "red", "blue"]


def _items(path: Path, n: int, prefix: str) -> Path:
    rows = [{"id": f"{prefix}{i}", "question": f"Which {WORDS[i % 8]} is it?", "options": [WORDS[(i + j) % 8]
             for j in range(3)], "answer": i % 3} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _probe(path: Path, n: int, prefix: str) -> Path:
    """Probe labels (calibtune probe's format) with known and unknown items, for CogCalib's Youden fit."""
    rows = [{"id": f"{prefix}{i}", "category": "HighlyKnown" if i % 2 else "Unknown", "known": bool(i % 2),
             "p_correct": float(i % 2), "nll": 1.0, "n_prompts": 2} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(tmp_path: Path, model_dir: Path, out: Path, objective: str) -> Path:
    """16 training items in batches of 4 (4 steps an epoch) for 6 epochs; a checkpoint every 3 steps, so every
    checkpoint before the last lies inside an epoch; the held-out curve every 3 steps."""
    cfg = {"model": str(model_dir), "train_data": str(_items(tmp_path / "train.jsonl", 16, "t")),
           "eval_data": str(_items(tmp_path / "held.jsonl", 6, "h")), "eval_every": 3, "scoring": "cloze",
           "lora": {"r": 4, "alpha": 8},
           "training": {"per_device_train_batch_size": 4, "max_steps": 24, "learning_rate": 0.02,
                        "save_steps": 3, "logging_steps": 1, "output_dir": str(out)}}
    if objective == "cogcalib":
        cfg.update(objective="cogcalib", objective_params={"alpha": 1.0, "regularizer": "ls"}, known_source="nll",
                   style_steps=2, refit_every=2, probe=str(_probe(tmp_path / "probe.jsonl", 16, "t")))
    else:
        cfg.update(objective="rcft", estep="epoch")
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(*args: str) -> None:
    res = CliRunner().invoke(app, ["train", *args, "--no-progress"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("objective", ["cogcalib", "rcft"])
def test_sigkill_mid_epoch_then_resume_last_equals_an_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path,
                                                                       objective: str) -> None:
    reference = tmp_path / "reference"
    _train("--config", str(_config(tmp_path, tiny_model_dir, reference, objective)))

    killed = tmp_path / "killed"
    cfg = _config(tmp_path, tiny_model_dir, killed, objective)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "calibtune.cli", "train", "--config", str(cfg), "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while last_checkpoint(killed) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (killed / "training_summary.json").exists(), "the kill must land before the end"
    checkpoint = last_checkpoint(killed)
    assert checkpoint is not None and int(checkpoint.name.split("-")[1]) % 4, "a checkpoint inside an epoch"
    assert (checkpoint / STATE_FILE).is_file()

    _train("--config", str(cfg), "--resume", "last")
    want = load_file(reference / "adapter_model.safetensors")
    got = load_file(killed / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7)
    ref = json.loads((reference / "training_summary.json").read_text())
    res = json.loads((killed / "training_summary.json").read_text())
    assert [c["step"] for c in res["curve"]] == [c["step"] for c in ref["curve"]] == list(range(0, 25, 3))
    for a, b in zip(res["curve"], ref["curve"]):  # held-out metrics at every point, the earlier ones restored
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7)
    assert (killed / "curve.csv").read_text().count("\n") == len(ref["curve"]) + 1
    if objective == "cogcalib":
        assert res["thresholds"] and [t["step"] for t in res["thresholds"]] == [t["step"] for t in ref["thresholds"]]
        for a, b in zip(res["thresholds"], ref["thresholds"]):
            assert a["threshold"] == pytest.approx(b["threshold"], rel=1e-5)
    else:
        assert [e["step"] for e in res["e_steps"]] == [e["step"] for e in ref["e_steps"]] == [0, 4, 8, 12, 16, 20]
        for a, b in zip(res["e_steps"], ref["e_steps"]):
            assert a["bin_count"] == b["bin_count"]
            assert a["bin_accuracy"] == pytest.approx(b["bin_accuracy"], nan_ok=True)


class _PoisonAt(TrainerCallback):
    """Makes the model's output NaN from step ``step`` on (a diverging run, deterministically)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step - 1:
            with torch.no_grad():
                model.get_output_embeddings().weight.fill_(float("nan"))


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    from calibtune.data import MCItem
    from calibtune.models import load_model
    from calibtune.prompts import get_template
    from calibtune.training import CalibrationTrainer, CalibrationTrainingArguments, build_dataset, lora_model

    model, tok = load_model(str(tiny_model_dir))
    model = lora_model(model, r=4, alpha=8)
    items = [MCItem(id=f"x{i}", question=f"Which {WORDS[i % 8]}?", options=("cat", "dog"), gold=i % 2)
             for i in range(8)]
    args = CalibrationTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=6,
                                        save_strategy="steps", save_steps=1, save_total_limit=2, report_to="none",
                                        use_cpu=True, disable_tqdm=True, learning_rate=1e-3)
    trainer = CalibrationTrainer(model=model, args=args, processing_class=tok,
                                 train_dataset=build_dataset(items, tok, get_template("blob"), "cloze"))
    trainer.add_callback(_PoisonAt(4))
    with pytest.raises(NonFiniteLossError, match=r"diverged at step 4: .*NaN/inf.*last good checkpoint is "
                                                 + re.escape(f"{tmp_path}/checkpoint-3")):
        trainer.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    saved = load_file(tmp_path / "checkpoint-3" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in saved.values())
    assert not (tmp_path / "adapter_model.safetensors").exists()  # no final model from a diverged run


def test_nan_loss_from_the_cli_is_one_error_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = {"model": str(tiny_model_dir), "train_data": str(_items(tmp_path / "t.jsonl", 8, "t")), "objective": "ce",
           "lora": {"r": 4, "alpha": 8}, "training": {"per_device_train_batch_size": 4, "max_steps": 6,
                                                       "learning_rate": 1.0e30, "save_steps": 1, "output_dir": str(out)}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "c.yaml"), "--no-progress"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert [line for line in res.stderr.splitlines() if line.startswith("error:")] == [
        line for line in res.stderr.splitlines() if "diverged at step" in line]
    assert "training diverged at step 2" in res.stderr and f"{out}/checkpoint-1" in res.stderr
    assert last_checkpoint(out) == out / "checkpoint-1" and not (out / "adapter_model.safetensors").exists()


def test_checkpoints_are_saved_by_default(tmp_path: Path) -> None:
    args = training_arguments(TrainConfig(train_data="x.jsonl", training={"output_dir": str(tmp_path)}))
    assert args.save_strategy == "steps" and args.save_steps == 50 and args.save_total_limit == 2
    off = training_arguments(TrainConfig(train_data="x.jsonl", training={"output_dir": str(tmp_path),
                                                                          "save_strategy": "no"}))
    assert off.save_strategy == "no"  # still the user's to switch off


def test_last_checkpoint_skips_an_incomplete_one(tmp_path: Path) -> None:
    for step, complete in ((3, True), (6, True), (9, False)):  # checkpoint-9: killed while the Trainer saved it
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-6"
    assert last_checkpoint(tmp_path / "none") is None


def test_kept_model_scores_like_the_saved_adapter_reloaded_under_bf16_autocast(tiny_model_dir: Path,
                                                                                 tmp_path: Path) -> None:
    """A grid cell evaluates the model run_training keeps; under training.bf16 Accelerate had wrapped its
    forward in bf16 autocast, so the kept model must be unwrapped to score as the reloaded adapter does."""
    from calibtune.models import load_model
    from calibtune.training import load_train_config, run_training

    out = tmp_path / "run"
    cfg = yaml.safe_load(_config(tmp_path, tiny_model_dir, out, "rcft").read_text())
    cfg["training"].update(max_steps=2, bf16=True, save_steps=50)
    cfg.pop("eval_data"), cfg.pop("eval_every")
    (tmp_path / "bf16.yaml").write_text(yaml.safe_dump(cfg))
    summary = run_training(load_train_config(tmp_path / "bf16.yaml"), progress=False, keep_model=True)
    kept, tok = summary["model"], summary["tokenizer"]
    assert "_original_forward" not in kept.__dict__
    reloaded, _ = load_model(str(tiny_model_dir), adapter=str(out), device="cpu")
    ids = tok(["The capital of France is Paris"], return_tensors="pt")
    with torch.inference_mode():
        a, b = kept(**ids).logits, reloaded(**ids).logits
    assert a.dtype == torch.float32 and torch.allclose(a, b, atol=1e-5)
