"""Training objectives on the distribution over an item's answer options.

Every objective takes ``scores (B, K_max)`` (``-inf`` in unused option columns) and ``labels (B,)``,
and returns per-sample losses ``(B,)``; the trainer reduces them. Each lives in one module as a config
dataclass plus a ``loss`` function, registered by name in ``OBJECTIVES`` (``register_objective`` adds one):

``ce``, ``ls``, ``mbls``, ``ecp``, ``focal``, ``sft`` (needs log-prob scores), ``cogcalib`` (needs ``known``),
``rcft`` (needs ``bin_accuracy``, ``bin_count`` from ``e_step``; preset ``rcft-code`` in ``PRESETS``).
"""

from .base import Objective, option_log_probs, per_sample_nll
from .ce import CEConfig
from .cogcalib import CogCalibConfig
from .ecp import ECPConfig
from .focal import FocalConfig
from .label_smoothing import LabelSmoothingConfig
from .mbls import MbLSConfig
from .rcft import RCFTConfig, e_step, rcft_code, sequence_ece_term
from .registry import OBJECTIVES, PRESETS, get_objective, register_objective
from .sft import SFTConfig
from .youden import Threshold, youden_threshold

__all__ = [
    "OBJECTIVES", "PRESETS", "CEConfig", "CogCalibConfig", "ECPConfig", "FocalConfig", "LabelSmoothingConfig",
    "MbLSConfig", "Objective", "RCFTConfig", "SFTConfig", "Threshold", "e_step", "get_objective", "option_log_probs",
    "per_sample_nll", "rcft_code", "register_objective", "sequence_ece_term", "youden_threshold",
]
