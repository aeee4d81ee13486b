"""The grid's configuration: tasks, methods, probe settings, and the known:unknown training mix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import load_yaml, validation_problems
from ..settings import AttnImplementation, Exemplars
from ..training.arguments import OBJECTIVE_FIELDS, ObjectiveSettings


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    train: str
    train_limit: int | None = None
    heldout: str
    heldout_limit: int | None = None
    test: list[str]
    test_limit: int | None = None
    ood: list[str] = Field(default_factory=list)
    ood_limit: int | None = None
    seeds: list[int] = Field(default_factory=lambda: [0])
    data_seed: int | None = Field(None, description="seed of every subset (train, held-out, test, ood) and of the "
                                  "probe, so all seeds share items and one probe; None = each cell's own seed")
    mix: str | None = Field(None, description="known:unknown ratio of the training set, e.g. '3:2', drawn from the "
                            "probe of the train pool (train, train_limit) per seed; needs train_size")
    train_size: int | None = Field(None, gt=0, description="size of the mixed training set (with mix)")


class Method(ObjectiveSettings):
    """A method of the grid: a training objective with its settings (``CalibrationTrainingArguments``'
    fields), the untouched model (``base``: no objective) or temperature scaling of another method."""

    name: str
    objective: str | None = Field(None, description="None: no training (base) or post-hoc (ts)")
    temperature_of: str | None = Field(None, description="ts: the method whose model is temperature-scaled")



class ProbeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_prompts: int = 3
    shots: int = 1
    known_rule: str = "any"
    false_known: float = 0.05  # the chance rule's rate
    exemplars: Exemplars = "per-item"  # round-1 grids probed with per-item exemplars
    normalize: Literal["sum", "mean"] | None = None  # cloze probe: None = the grid's own normalize


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    model: str = "smollm2"
    dtype: str = "float32"  # auto: bfloat16 where the hardware has it, else float32 (calibtune.devices)
    device: str = "auto"  # probing, training and evaluation all run here
    attn_implementation: AttnImplementation | None = None
    batch_size: Annotated[int, Field(gt=0)] | Literal["auto"] = 8  # probing and evaluation (training: train.training)
    scoring: str = "cloze"
    normalize: str = "mean"
    template: str = "blob"
    out: str
    n_bins: int = 15
    probe: ProbeSettings | None = Field(default_factory=ProbeSettings)
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields shared by every trained method")
    tasks: list[Task]
    methods: list[Method]
    baselines: list[str] = Field(default_factory=lambda: ["sft", "ts"],
                                 description="methods the report's Δ% columns compare against")


def train_config(cfg: CompareConfig, method: Method, output_dir: Path, **data: Any) -> TrainConfig:
    """The ``TrainConfig`` of ``method`` in the grid ``cfg``: the grid's ``train`` settings, model, scoring and
    template, the method's objective settings, then the cell's ``data`` (train/held-out sets, seed, probes)."""
    from ..training import TrainConfig

    return TrainConfig.model_validate({
        **cfg.train, "model": cfg.model, "dtype": cfg.dtype, "device": cfg.device,
        "attn_implementation": cfg.attn_implementation, "template": cfg.template, "scoring": cfg.scoring,
        "normalize": cfg.normalize, **method.model_dump(include=set(OBJECTIVE_FIELDS)), **data,
        "training": {**cfg.train.get("training", {}), "output_dir": str(output_dir)}})


def load_compare_config(path: str | Path) -> CompareConfig:
    """The experiment YAML at ``path``, validated; every problem one ``ValueError`` line naming the file."""
    raw = load_yaml(path)
    try:
        return CompareConfig.model_validate(raw)
    except ValidationError as e:
        raise ValueError(f"{path}: {validation_problems(e)}") from None


def parse_mix(mix: str) -> tuple[int, int]:
    """``"3:2"`` → ``(3, 2)``: parts of known and unknown items (non-negative, not both zero).

    >>> parse_mix("3:2"), parse_mix("0:5")
    ((3, 2), (0, 5))
    """
    parts = mix.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or sum(int(p) for p in parts) == 0:
        raise ValueError(f"mix: expected 'known:unknown' with non-negative integers, e.g. '3:2', but got {mix!r}")
    return int(parts[0]), int(parts[1])


def draw_mix(known: dict[str, bool], size: int, mix: str, seed: int) -> list[str]:
    """Ids of ``size`` distinct items, known and unknown in the ratio ``mix``, drawn with ``seed``.

    The known count is ``round(size * k / (k + u))``; the ids of each group are drawn without
    replacement from the probe's labels (in sorted id order, so the draw depends only on the seed),
    then shuffled together. Too few items of a group is an error.
    """
    k, u = parse_mix(mix)
    n_known = round(size * k / (k + u))
    rng = np.random.default_rng(seed)
    picked = []
    for label, n in ((True, n_known), (False, size - n_known)):
        pool = sorted(i for i, v in known.items() if v is label)
        if n > len(pool):
            raise ValueError(f"mix {mix!r}: {n} {'known' if label else 'unknown'} items needed for a set of {size}, "
                             f"but the probe has {len(pool)}")
        picked += [pool[j] for j in rng.choice(len(pool), size=n, replace=False)]
    return [picked[j] for j in rng.permutation(len(picked))]
