r"""Focal loss (Lin et al. 2017): :math:`\ell_i = -(1-p_{i,y_i})^{\gamma}\log p_{i,y_i}`; γ = 0 is CE."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import Objective, check_number, gold, prepare


def loss(scores: Tensor, labels: Tensor, *, gamma: float = 2.0) -> Tensor:
    r"""Per-sample focal loss :math:`-(1-p_{i,y_i})^{\gamma}\log p_{i,y_i}`, shape ``(B,)``."""
    scores, labels, _ = prepare(scores, labels)
    log_p_gold = gold(torch.log_softmax(scores, dim=-1), labels)
    # 1 - p via expm1 (exact near p = 1); floored at the smallest normal so that 0 < γ < 1 has no inf * 0 gradient
    one_minus_p = (-torch.expm1(log_p_gold)).clamp_min(torch.finfo(log_p_gold.dtype).tiny)
    return -(one_minus_p**gamma) * log_p_gold


@dataclass(frozen=True)
class FocalConfig(Objective):
    """Focal loss over the options."""

    name = "focal"
    loss_fn = staticmethod(loss)

    gamma: float = field(default=2.0, metadata={"help": "Focusing γ >= 0 (Lin et al. default 2; 0 gives CE)."})

    def __post_init__(self) -> None:
        check_number(self.name, "gamma", self.gamma, 0.0)
