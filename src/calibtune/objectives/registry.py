"""Objectives by name: ``OBJECTIVES`` (config classes), ``PRESETS`` (functions building one) and ``get_objective``.

Adding a loss is one :func:`register_objective` call on its :class:`~calibtune.objectives.Objective` subclass.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from .base import Objective
from .ce import CEConfig
from .cogcalib import CogCalibConfig
from .ecp import ECPConfig
from .focal import FocalConfig
from .label_smoothing import LabelSmoothingConfig
from .mbls import MbLSConfig
from .rcft import RCFTConfig, rcft_code
from .sft import SFTConfig

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (CEConfig, LabelSmoothingConfig, MbLSConfig, ECPConfig, FocalConfig, SFTConfig, CogCalibConfig,
                RCFTConfig)
}

# A preset's parameters are its function's; it returns a registered class with other defaults.
PRESETS: dict[str, Callable[..., Objective]] = {"rcft-code": rcft_code}


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Register the config class ``cls`` under ``cls.name`` (usable as a class decorator); returns ``cls``.

    A name already registered (or a preset's) is a ``ValueError``.

    Example:
        >>> from dataclasses import dataclass
        >>> from calibtune.objectives.ce import loss
        >>> @register_objective
        ... @dataclass(frozen=True)
        ... class DoubleCE(Objective):
        ...     name = "double-ce"
        ...     loss_fn = staticmethod(lambda scores, labels, weight: weight * loss(scores, labels))
        ...     weight: float = 2.0
        >>> get_objective("double-ce", weight=3.0)
        DoubleCE(weight=3.0)
        >>> del OBJECTIVES["double-ce"]
    """
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise ValueError(f"Expected an Objective subclass, but got {cls!r}.")
    if cls.name in OBJECTIVES or cls.name in PRESETS:
        raise ValueError(f"Objective {cls.name!r} is already registered; registered: {sorted({*OBJECTIVES, *PRESETS})}.")
    OBJECTIVES[cls.name] = cls
    return cls



def get_objective(name: str, **params: Any) -> Objective:
    """Build the objective registered (or preset) as ``name`` with hyper-parameters ``params``.

    Raises ``ValueError`` for an unknown name, an unknown parameter or an invalid value, listing what is valid.
    """
    if name not in OBJECTIVES and name not in PRESETS:
        raise ValueError(f"Expected objective to be one of {sorted({*OBJECTIVES, *PRESETS})}, but got {name!r}.")
    build = PRESETS[name] if name in PRESETS else OBJECTIVES[name]
    valid = list(inspect.signature(build).parameters) if name in PRESETS else [f.name for f in fields(build)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"Unknown parameter(s) {unknown} for objective {name!r}; valid parameters: {valid}.")
    return build(**params)
