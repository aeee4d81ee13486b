r"""Cross-entropy over the options: :math:`\ell_i = -\log p_{i,y_i}`."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .base import Objective, per_sample_nll


def loss(scores: Tensor, labels: Tensor) -> Tensor:
    r"""Per-sample cross-entropy :math:`-\log p_{i,y_i}` over each item's real options, shape ``(B,)``."""
    return per_sample_nll(scores, labels)


@dataclass(frozen=True)
class CEConfig(Objective):
    """Plain cross-entropy over the options (no hyper-parameters)."""

    name = "ce"
    loss_fn = staticmethod(loss)
