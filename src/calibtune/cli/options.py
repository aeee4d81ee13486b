"""The command line's option vocabulary: the choice enums, the shared help texts and option declarations.

The settings of eval and probe are flags built from calibtune.settings (:mod:`.flags`); an option that
several other commands take with the same meaning is declared once here, as an ``Annotated``
alias (``progress: ProgressOption = True``), so its flag and help cannot drift apart between commands.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from ..settings import (ATTN_HELP, BATCH_HELP, BOOTSTRAP_HELP, DEVICE_HELP, DTYPE_HELP, PROGRESS_HELP, AttnImplementation,
                        Dtype)
from .flags import choice_enum

__all__ = [
    "ATTN_HELP", "BATCH_HELP", "DEVICE_HELP", "DTYPE_HELP", "SCORED_FILE",
    "AttnOpt", "BinningOpt", "DtypeOpt", "EdgeOpt", "FormatOpt", "LmEvalMetricOpt", "NormOpt", "PresetOpt",
    "AttnOverrideOption", "BootstrapOption", "OverwriteFileOption", "ProgressOption",
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


# Choices of settings in calibtune.settings (one list of values each); the same keys in YAML.
DtypeOpt = choice_enum(Dtype, "DtypeOpt")
AttnOpt = choice_enum(AttnImplementation, "AttnOpt")


SCORED_FILE = ("calibtune predictions (with probs/logprobs), lm-eval --log_samples JSONL of a multiple-choice "
               "task, or per-option log-likelihoods JSONL ({\"loglikelihoods\": [...], \"label\": k})")

# Options several commands declare alike (each command gives its own default).
AttnOverrideOption = Annotated[Optional[AttnOpt], typer.Option(help="Override `attn_implementation`: " + ATTN_HELP)]
BootstrapOption = Annotated[int, typer.Option(help=BOOTSTRAP_HELP)]
OverwriteFileOption = Annotated[bool, typer.Option(help="Replace an existing --out file.")]
ProgressOption = Annotated[bool, typer.Option(help=PROGRESS_HELP)]


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
