"""Training scale-out on one machine: gradient checkpointing with LoRA through the Trainer, unpacked cloze rows
for attention implementations without 4D masks, device/batch-size keys, the curve callback's logging, and
why FSDP is not tested on the CPU."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from calibtune import devices, training
from calibtune.models import load_model
from calibtune.prompts import get_template
from calibtune.training import CalibrationCurveCallback, CalibrationTrainer, build_dataset, lora_model
from test_training import _args, _params, make_items


def _lora_trainer(model_dir: Path, out: Path, *, attn: str | None = None, **kw) -> CalibrationTrainer:
    model, tok = load_model(str(model_dir), attn_implementation=attn)
    model.train()
    torch.manual_seed(0)
    model = lora_model(model, r=4, alpha=8)
    ds = build_dataset(make_items(8), tok, get_template("blob"), "cloze")
    return CalibrationTrainer(model=model, args=_args(out, **kw), train_dataset=ds, processing_class=tok)


def test_gradient_checkpointing_with_lora_gives_the_same_steps(tiny_model_dir: Path, tmp_path: Path) -> None:
    kw = dict(max_steps=2, optim="sgd", learning_rate=0.1, per_device_train_batch_size=4)
    plain = _lora_trainer(tiny_model_dir, tmp_path / "plain", **kw)
    ckpt = _lora_trainer(tiny_model_dir, tmp_path / "ckpt", gradient_checkpointing=True, **kw)
    before = _params(plain.model)
    calls = {}
    for name, trainer in (("plain", plain), ("ckpt", ckpt)):
        first_op = trainer.model.base_model.model.model.layers[0].input_layernorm  # inside the checkpointed forward
        calls[name] = 0

        def count(*_, name=name):
            calls[name] += 1

        first_op.register_forward_pre_hook(count)  # a pre-hook: the recompute may stop before the layer's end
        trainer.train()
    assert ckpt.model.base_model.model.is_activation_checkpointing
    assert calls["ckpt"] == 2 * calls["plain"] == 4  # each step's layer runs again in the backward
    a, b = _params(plain.model), _params(ckpt.model)
    assert max((a[k] - before[k]).abs().max().item() for k in a) > 1e-4  # LoRA moved
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-7)


def test_training_falls_back_to_unpacked_cloze_rows(tiny_model_dir: Path, tmp_path: Path, two_d_attention: str,
                                                    monkeypatch, caplog) -> None:
    monkeypatch.setattr(devices, "_said", set())
    packed = _lora_trainer(tiny_model_dir, tmp_path / "a", max_steps=2)
    with caplog.at_level(logging.INFO, logger="calibtune"):
        flash_like = _lora_trainer(tiny_model_dir, tmp_path / "b", attn=two_d_attention, max_steps=2)
    assert packed.scorer.share_prompt is True and flash_like.scorer.share_prompt is False
    assert "cannot take the packed 4D mask; scoring one row per option (unpacked)" in caplog.text
    features = [packed.train_dataset[i] for i in range(4)]
    with torch.no_grad():
        expected = packed.compute_loss(packed.model, packed.data_collator(features))
        got = flash_like.compute_loss(flash_like.model, flash_like.data_collator(features))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    flash_like.train()  # would raise "packed cloze scoring needs an attention implementation taking a 4D mask"
    assert flash_like.state.global_step == 2


def test_curve_callback_leaves_every_steps_loss_logged(tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer = _lora_trainer(tiny_model_dir, tmp_path, max_steps=4, logging_steps=1)
    _, tok = load_model(str(tiny_model_dir))
    trainer.add_callback(CalibrationCurveCallback(make_items(5), tok, get_template("blob"), every=2, trainer=trainer))
    trainer.train()
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [1, 2, 3, 4]
    assert [h["step"] for h in trainer.state.log_history if "heldout_ece" in h] == [0, 2, 4]


def test_device_and_batch_size_keys_become_trainer_arguments(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)

    def args(**kw):
        return training.training_arguments(training.TrainConfig(train_data="x", training={
            "output_dir": str(tmp_path), **kw.pop("training", {})}, **kw))

    auto = args(device="auto", batch_size="auto")
    assert auto.use_cpu is True and auto.auto_find_batch_size is True
    assert args(device="cpu", batch_size=6).per_device_train_batch_size == 6
    with pytest.raises(ValueError, match="training.use_cpu: False contradicts device 'cpu'"):
        args(device="cpu", training={"use_cpu": False})
    with pytest.raises(ValueError, match="training.per_device_train_batch_size: 4 contradicts batch_size 8"):
        args(batch_size=8, training={"per_device_train_batch_size": 4})
    with pytest.raises(ValueError, match="no CUDA device is visible"):
        args(device="cuda")
    with pytest.raises(ValueError, match="batch_size"):
        training.TrainConfig(train_data="x", batch_size=0)


def test_fsdp_through_accelerate_is_not_available_on_the_cpu(tmp_path: Path) -> None:
    """Pins the reason BENCHMARKS.md gives: with `distributed_type: FSDP` and `use_cpu: true` accelerate
    1.15 runs plain multi-CPU data parallelism (FSDP is only set up for GPU-like devices), although torch's
    own FSDP2 runs on CPU/gloo. When accelerate changes this, this test fails: add an FSDP test then."""
    probe = ("import torch.distributed as dist\n"
             "from torch.distributed.device_mesh import init_device_mesh\n"
             "from torch.distributed.fsdp import fully_shard\n"
             "from accelerate import Accelerator\n"
             "acc = Accelerator(cpu=True)\n"
             "net = torch.nn.Linear(4, 4)\n"
             "fully_shard(net, mesh=init_device_mesh('cpu', (1,)))\n"
             "print(acc.distributed_type, type(net).__name__)\n")
    env = {**os.environ, "ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "RANK": "0", "LOCAL_RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29551",
           "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", "import torch\n" + probe], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["DistributedType.MULTI_CPU", "FSDPLinear"]
