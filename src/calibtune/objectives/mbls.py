r"""Margin-based label smoothing (Liu et al., CVPR 2022; ``LogitMarginL1`` of github.com/by-liu/MbLS).

.. math:: \ell_i = \mathrm{CE}_i + \lambda\,M_i,\qquad
          M_i = \frac{1}{K_i}\sum_{k\le K_i}\mathrm{ReLU}\big(\max_j z_{ij} - z_{ik} - m\big)

The reference averages the margin term over samples *and* classes; per sample that is the mean over
the item's :math:`K_i` real options (the max option itself contributes :math:`\mathrm{ReLU}(-m)=0`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import Objective, check_number, cross_entropy, prepare


def margin_penalty(scores: Tensor, mask: Tensor, margin: float) -> Tensor:
    r"""The margin term :math:`M_i = \frac{1}{K_i}\sum_{k\le K_i}\mathrm{ReLU}(\max_j z_{ij} - z_{ik} - m)`."""
    top = scores.max(dim=-1, keepdim=True).values
    penalty = torch.relu(top - scores - margin).masked_fill(~mask, 0.0)  # unused columns: inf -> 0
    return penalty.sum(dim=-1) / mask.sum(dim=-1).to(scores.dtype)


def loss(scores: Tensor, labels: Tensor, *, margin: float = 10.0, lam: float = 0.1) -> Tensor:
    r"""Per-sample MbLS loss :math:`\mathrm{CE}_i + \lambda M_i`, shape ``(B,)``."""
    scores, labels, mask = prepare(scores, labels)
    return cross_entropy(scores, labels) + lam * margin_penalty(scores, mask, margin)


@dataclass(frozen=True)
class MbLSConfig(Objective):
    """Margin-based label smoothing: CE plus a linear penalty on logit distances beyond a margin."""

    name = "mbls"
    loss_fn = staticmethod(loss)

    margin: float = field(default=10.0, metadata={
        "help": "Margin m >= 0: distances max_j z_j - z_k up to m are free (MbLS default 10)."})
    lam: float = field(default=0.1, metadata={"help": "Weight λ >= 0 of the margin term (MbLS default 0.1)."})

    def __post_init__(self) -> None:
        check_number(self.name, "margin", self.margin, 0.0)
        check_number(self.name, "lam", self.lam, 0.0)
