"""The YAML config of ``calibtune train``, its checks, and the Trainer arguments it gives."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from transformers import TrainingArguments

from ..devices import cpu_has_native_bf16, native_bf16, notice, resolve_device
from ..objectives import get_objective
from ..config import load_yaml, validation_problems
from ..settings import AttnImplementation, Dtype
from .arguments import CALIBRATION_FIELDS, CalibrationSettings, CalibrationTrainingArguments
from .checkpoints import last_checkpoint


class LoraSettings(BaseModel):
    """LoRA through PEFT; ``targets`` is "all-linear" or a list of module names."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: str | list[str] = "all-linear"


class TrainConfig(CalibrationSettings):
    """A ``calibtune train`` run, as read from YAML (unknown keys are errors, with their path); the
    calibration settings (objective, scoring, known indicator ...) are ``CalibrationTrainingArguments``'."""

    model: str = "smollm2"
    dtype: Dtype = "float32"
    device: str = Field("auto", description="auto, cpu, cuda or mps; under accelerate launch each process takes its own GPU")
    attn_implementation: AttnImplementation | None = Field(
        None, description="None: transformers' default (sdpa); cloze rows are unpacked when it takes no 4D mask")
    batch_size: Annotated[int, Field(gt=0)] | Literal["auto"] | None = Field(
        None, description="per-device train batch (training.per_device_train_batch_size); auto: the Trainer's "
                          "auto_find_batch_size")
    train_data: str
    train_limit: int | None = Field(None, ge=1)
    train_ids: list[str] | None = Field(None, description="train only on these item ids of train_data (in this order)")
    data_seed: int | None = Field(None, description="seed of the train/eval subsets (default: seed)")
    eval_data: str | None = None
    eval_limit: int | None = Field(None, ge=1)
    data_dir: str | None = None
    fields: dict[str, str] = Field(default_factory=dict, description="columns of file/hf: train and eval data (question, options, gold...)")
    seed: int = 0
    template: str = "blob"
    probe: str | None = Field(None, description="probe JSONL (calibtune probe) with known labels by item id")
    eval_probe: str | None = Field(None, description="probe JSONL of the held-out items: splits the curve into known/unknown")
    lora: LoraSettings | None = Field(default_factory=LoraSettings, description="null = full fine-tuning")
    eval_every: int = Field(0, ge=0)
    qa_template: str = Field("qa", description="open questions: qa (SliCK's Q:/A:), chat, or a template file")
    max_new_tokens: int = Field(16, gt=0, description="open questions: answer length cap of the held-out curve")
    early_stopping: bool = Field(False, description="with eval_every: keep the best held-out-accuracy model in output_dir/best")
    training: dict[str, Any] = Field(default_factory=dict, description="any transformers TrainingArguments field")


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and validate a YAML config; ``overrides`` (CLI flags) win, ``training.*`` keys included."""
    raw = load_yaml(path)
    for key, value in (overrides or {}).items():
        if key.startswith("training."):
            raw.setdefault("training", {})[key.split(".", 1)[1]] = value
        else:
            raw[key] = value
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        raise ValueError(f"{path}: {validation_problems(e)}") from None


def load_weights_dtype(cfg: TrainConfig) -> str:
    """The dtype training loads the weights in: ``auto`` means float32 weights under bf16 autocast where the
    hardware has it (:func:`training_arguments`), never bf16 weights (optimiser updates would round away).

    >>> load_weights_dtype(TrainConfig(model="m", train_data="arc-easy:train", dtype="auto"))
    'float32'
    """
    return "float32" if cfg.dtype == "auto" else cfg.dtype


def training_arguments(cfg: TrainConfig) -> CalibrationTrainingArguments:
    """The Trainer arguments of ``cfg`` (``training:`` keys checked against ``TrainingArguments``).

    ``dtype: auto`` (unless ``training.bf16``/``fp16`` is set) turns on bf16 autocast where the device
    computes bf16 natively (a GPU with bf16, a CPU with avx512_bf16/amx_bf16) and says which it chose.

    ``device`` decides ``use_cpu`` (the Trainer puts each process on its own GPU); ``batch_size`` sets
    ``per_device_train_batch_size``, or ``auto_find_batch_size`` for ``"auto"``.
    """
    device = torch.device(resolve_device(cfg.device))
    if device.index:
        raise ValueError(f"device {cfg.device!r}: the Trainer places process i on GPU i; choose GPUs with "
                         "CUDA_VISIBLE_DEVICES and use device cuda")
    placed = {"use_cpu": (device.type == "cpu", "device")}
    if cfg.batch_size == "auto":
        placed["auto_find_batch_size"] = (True, "batch_size")
    elif cfg.batch_size is not None:
        placed["per_device_train_batch_size"] = (cfg.batch_size, "batch_size")
    for key, (value, source) in placed.items():
        if key in cfg.training and cfg.training[key] != value:
            raise ValueError(f"training.{key}: {cfg.training[key]!r} contradicts {source} {getattr(cfg, source)!r}")
    placed = {key: value for key, (value, _) in placed.items()}
    # checkpoints by default (every SAVE_STEPS steps, the newest two kept), so `--resume last` works after a crash
    kwargs = {"report_to": "none", "save_strategy": "steps", "save_steps": SAVE_STEPS, "save_total_limit": 2,
              "logging_steps": 10, "seed": cfg.seed, **placed, **cfg.training}
    if cfg.dtype == "auto" and "bf16" not in cfg.training and "fp16" not in cfg.training:
        # training keeps fp32 master weights (load_weights_dtype); "auto" is bf16 autocast where it is native
        native, why = native_bf16(str(device))
        kwargs["bf16"] = native
        notice(f"dtype auto (training): float32 weights{' with bf16 autocast' if native else ''} ({why})")
    if kwargs.get("bf16") and kwargs["use_cpu"] and cpu_has_native_bf16() is False:
        warnings.warn("bf16 autocast on a CPU without native bf16 (no avx512_bf16/amx_bf16) is emulated and "
                      "far slower than fp32: set training.bf16: false", stacklevel=2)
    try:
        args = CalibrationTrainingArguments(**cfg.model_dump(include=set(CALIBRATION_FIELDS)), **kwargs)
    except TypeError as e:
        raise ValueError(f"training: {e}") from None
    _check_numbers(args)
    return args


SAVE_STEPS = 50


def _check_numbers(args: TrainingArguments) -> None:
    """The numbers ``TrainingArguments`` lets through that no run wants (a negative learning rate, NaN...)."""
    from .. import checks

    for name in ("learning_rate", "weight_decay", "warmup_ratio", "max_grad_norm", "adam_epsilon", "num_train_epochs"):
        checks.at_least(f"training.{name}", getattr(args, name, None), 0)
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        checks.at_least(f"training.{name}", getattr(args, name, None), 1)
    checks.at_least("training.warmup_steps", getattr(args, "warmup_steps", None), 0)
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(f"training.max_steps must be a positive number of steps (or -1: use num_train_epochs), "
                         f"got {args.max_steps}")
    if args.max_steps == -1 and not args.num_train_epochs > 0:
        raise ValueError(f"training.num_train_epochs must be > 0 (or set max_steps), got {args.num_train_epochs}")
    if args.save_strategy == "steps":
        checks.at_least("training.save_steps", args.save_steps, 1e-12)


def prepare_output_dir(output_dir: str | Path, *, resume: str | bool | None, overwrite: bool) -> None:
    """``calibtune train``'s rule for ``output_dir``: a non-empty folder (an earlier run) is continued with
    ``resume`` or started over with ``overwrite`` (its old checkpoints are removed, so ``--resume last``
    never picks one up later), else refused: nothing an earlier run wrote is silently mixed or lost."""
    import shutil

    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the earlier run, or start over")
    folder = Path(output_dir)
    entries = [p for p in folder.iterdir() if not p.name.startswith(".calibtune-write-test-")] if folder.is_dir() else []
    if not entries or resume:
        return
    if not overwrite:
        raise FileExistsError(f"training.output_dir {folder}: is not empty (an earlier run?); pass --resume last "
                              "to continue it or --overwrite to start over")
    from ..distributed import is_main_process

    if is_main_process():
        for old in folder.glob("checkpoint-*"):
            shutil.rmtree(old)


def check_train_config(cfg: TrainConfig, resume: str | bool | None = None) -> CalibrationTrainingArguments:
    """Everything about ``cfg`` that can be checked before data or a model are loaded; returns the Trainer
    arguments. Checks the Trainer arguments and their numbers, the objective and its parameters, the
    template and model names, the probe files, that ``output_dir`` is writable, and the checkpoint to
    resume (``True``: the newest in ``output_dir``)."""
    from .. import checks
    from ..models import resolve_model

    args = training_arguments(cfg)
    get_objective(cfg.objective, **cfg.objective_params)
    checks.template(cfg.template)
    resolve_model(cfg.model)
    for name in ("probe", "eval_probe"):
        path = getattr(cfg, name)
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{name}: {path}: no such file (write it with calibtune probe)")
    checks.writable_folder(args.output_dir, what="training.output_dir")
    if resume is True and last_checkpoint(args.output_dir) is None:
        raise FileNotFoundError(f"--resume last: {args.output_dir} has no checkpoint (one is saved every "
                                f"training.save_steps = {args.save_steps} steps)")
    if isinstance(resume, (str, Path)) and not (Path(resume) / "trainer_state.json").is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no trainer_state.json)")
    return args
