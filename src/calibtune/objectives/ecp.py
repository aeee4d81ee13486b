r"""Entropy confidence penalty (Pereyra et al. 2017; ``PenaltyEntropy`` of github.com/by-liu/MbLS).

.. math:: \ell_i = \mathrm{CE}_i - \beta\,\frac{H(p_i)}{K_i},\qquad H(p_i) = -\sum_{k\le K_i} p_{ik}\log p_{ik}

Convention: the reference takes ``ent.mean()`` over samples *and* classes, i.e. the entropy divided by
K; per sample that is :math:`H(p_i)/K_i` over the item's real options (``normalize_entropy=True``, the
default). ``normalize_entropy=False`` gives the paper's :math:`\mathrm{CE} - \beta H`. The reference
also clamps p to [EPS, 1-EPS]; here :math:`0\log 0 = 0` exactly instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import Objective, check_flag, check_number, cross_entropy, prepare


def entropy_penalty(scores: Tensor, mask: Tensor, normalize_entropy: bool) -> Tensor:
    r"""The penalty :math:`-H(p_i)/K_i` (or :math:`-H(p_i)` when not normalised); :math:`\le 0`."""
    log_p = torch.log_softmax(scores, dim=-1).masked_fill(~mask, 0.0)  # p = 0 there: no 0 * -inf
    neg_entropy = (log_p.exp() * log_p).sum(dim=-1)
    return neg_entropy / mask.sum(dim=-1).to(scores.dtype) if normalize_entropy else neg_entropy


def loss(scores: Tensor, labels: Tensor, *, beta: float = 0.1, normalize_entropy: bool = True) -> Tensor:
    r"""Per-sample ECP loss :math:`\mathrm{CE}_i - \beta H(p_i)/K_i`, shape ``(B,)``."""
    scores, labels, mask = prepare(scores, labels)
    return cross_entropy(scores, labels) + beta * entropy_penalty(scores, mask, normalize_entropy)


@dataclass(frozen=True)
class ECPConfig(Objective):
    """Confidence penalty: CE minus β times the (per-option) entropy of the option distribution."""

    name = "ecp"
    loss_fn = staticmethod(loss)

    beta: float = field(default=0.1, metadata={
        "help": "Weight β >= 0 of the entropy term (MbLS config penalty_ent.yaml: 0.1)."})
    normalize_entropy: bool = field(default=True, metadata={
        "help": "Divide H(p) by the item's number of options K_i, as the reference's mean over classes does."})

    def __post_init__(self) -> None:
        check_number(self.name, "beta", self.beta, 0.0)
        check_flag(self.name, "normalize_entropy", self.normalize_entropy)
