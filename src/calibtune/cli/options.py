"""The command line's option vocabulary: the choice enums, the shared help texts and option declarations.

An option that several commands take with the same meaning is declared once here, as an ``Annotated``
alias (``progress: ProgressOption = True``), so its flag and help cannot drift apart between commands.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = [
    "ATTN_HELP", "BATCH_HELP", "DEVICE_HELP", "DTYPE_HELP", "SCORED_FILE",
    "AttnOpt", "BinningOpt", "ConfidenceOpt", "CorrectnessOpt", "DtypeOpt", "EdgeOpt", "ExemplarsOpt",
    "FormatOpt", "KnownRuleOpt", "LmEvalMetricOpt", "NormOpt", "PresetOpt", "ScoringOpt",
    "AttnOption", "AttnOverrideOption", "BootstrapOption", "DataDirOption", "DeviceOption",
    "OverwriteFileOption", "ProgressOption",
    "batch_size_value", "device_overrides",
]


class BinningOpt(str, Enum):
    width = "width"
    mass = "mass"


class NormOpt(str, Enum):
    l1 = "l1"
    l2 = "l2"
    max = "max"


class EdgeOpt(str, Enum):
    left = "left"
    right = "right"


class PresetOpt(str, Enum):
    calibtune = "calibtune"
    torchmetrics = "torchmetrics"
    netcal = "netcal"
    sklearn = "sklearn"
    p_lambda = "p-lambda"
    relplot = "relplot"
    helm = "helm"


class FormatOpt(str, Enum):
    json = "json"
    table = "table"


class LmEvalMetricOpt(str, Enum):
    acc = "acc"
    acc_norm = "acc_norm"
    acc_bytes = "acc_bytes"
    acc_mutual_info = "acc_mutual_info"


class ScoringOpt(str, Enum):
    letter = "letter"
    cloze = "cloze"


class ExemplarsOpt(str, Enum):
    shared = "shared"
    per_item = "per-item"


class DtypeOpt(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
    auto = "auto"


class AttnOpt(str, Enum):
    sdpa = "sdpa"
    eager = "eager"
    flash_attention_2 = "flash_attention_2"


class ConfidenceOpt(str, Enum):
    ptrue = "ptrue"
    verbalized = "verbalized"


class CorrectnessOpt(str, Enum):
    em = "em"
    f1 = "f1"
    judge = "judge"


class KnownRuleOpt(str, Enum):
    chance = "chance"
    any = "any"
    majority = "majority"
    all = "all"


# One device story for eval, probe, train and compare (calibtune.devices); the same keys in YAML.
DEVICE_HELP = "cpu, cuda, cuda:N, mps or auto (CUDA, else MPS, else the CPU; says which). A missing device is an error."
DTYPE_HELP = ("auto = bfloat16 where the hardware has it (a CUDA GPU with bf16, a CPU with avx512_bf16/amx_bf16), "
              "else float32; says which.")
ATTN_HELP = ("Attention implementation (default: transformers', sdpa). Cloze falls back to one row per option, with "
             "a notice, when it takes no 4D mask (flash_attention_2).")
BATCH_HELP = "Items per forward pass, or auto: the largest from 64 down that fits, halving on out-of-memory."
SCORED_FILE = ("calibtune predictions (with probs/logprobs), lm-eval --log_samples JSONL of a multiple-choice "
               "task, or per-option log-likelihoods JSONL ({\"loglikelihoods\": [...], \"label\": k})")

# Options several commands declare alike (each command gives its own default).
DeviceOption = Annotated[str, typer.Option(help=DEVICE_HELP)]
AttnOption = Annotated[Optional[AttnOpt], typer.Option(help=ATTN_HELP)]
AttnOverrideOption = Annotated[Optional[AttnOpt], typer.Option(help="Override `attn_implementation`: " + ATTN_HELP)]
DataDirOption = Annotated[Optional[Path], typer.Option(help="Root of the data sets (default: $CALIBTUNE_DATA_DIR).")]
BootstrapOption = Annotated[int, typer.Option(help="Bootstrap resamples for confidence intervals (0 = none).")]
OverwriteFileOption = Annotated[bool, typer.Option(help="Replace an existing --out file.")]
ProgressOption = Annotated[bool, typer.Option(help="Show progress bars.")]


def batch_size_value(value: str):
    """The ``--batch-size`` value: a positive int or ``"auto"`` (a bad one is an error line).

    >>> batch_size_value("16"), batch_size_value("auto")
    (16, 'auto')
    """
    from ..devices import parse_batch_size

    return parse_batch_size(value)


def device_overrides(device: str | None, dtype: DtypeOpt | None, attn_implementation: AttnOpt | None,
                     batch_size: str | None) -> dict:
    """The config keys that train's and compare's ``--device/--dtype/--attn-implementation/--batch-size`` set.

    >>> device_overrides("cpu", DtypeOpt.bfloat16, None, "auto")
    {'device': 'cpu', 'dtype': 'bfloat16', 'batch_size': 'auto'}
    """
    return {key: value for key, value in (
        ("device", device), ("dtype", dtype.value if dtype else None),
        ("attn_implementation", attn_implementation.value if attn_implementation else None),
        ("batch_size", batch_size_value(batch_size) if batch_size is not None else None)) if value is not None}
