"""Objectives by name: ``OBJECTIVES`` and ``get_objective``."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from .base import Objective
from .ce import CEConfig
from .cogcalib import CogCalibConfig
from .ecp import ECPConfig
from .focal import FocalConfig
from .label_smoothing import LabelSmoothingConfig
from .mbls import MbLSConfig
from .sft import SFTConfig

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (CEConfig, LabelSmoothingConfig, MbLSConfig, ECPConfig, FocalConfig, SFTConfig, CogCalibConfig)
}


def get_objective(name: str, **params: Any) -> Objective:
    """Build the objective registered as ``name`` with hyper-parameters ``params``.

    Raises ``ValueError`` for an unknown name, an unknown parameter or an invalid value, listing what is valid.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"Expected objective to be one of {sorted(OBJECTIVES)}, but got {name!r}.")
    cls = OBJECTIVES[name]
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"Unknown parameter(s) {unknown} for objective {name!r}; valid parameters: {valid}.")
    return cls(**params)
