r"""Label smoothing (Szegedy et al. 2016; ``LabelSmoothingCrossEntropy`` of github.com/by-liu/MbLS).

Target :math:`(1-\varepsilon)\,\mathrm{onehot}(y_i) + \varepsilon/K_i` over the item's :math:`K_i` real
options:

.. math:: \ell_i = (1-\varepsilon)\,\mathrm{CE}_i + \varepsilon\,U_i,\qquad
          U_i = -\frac{1}{K_i}\sum_{k\le K_i}\log p_{ik}

(with all items at full K this is ``F.cross_entropy(..., label_smoothing=ε)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import Objective, check_number, cross_entropy, prepare


def uniform_cross_entropy(scores: Tensor, mask: Tensor) -> Tensor:
    r"""CE against the uniform target over real options, :math:`U_i = -\frac{1}{K_i}\sum_{k\le K_i}\log p_{ik}`."""
    log_p = torch.log_softmax(scores, dim=-1).masked_fill(~mask, 0.0)  # no 0 * -inf
    return -log_p.sum(dim=-1) / mask.sum(dim=-1).to(log_p.dtype)


def loss(scores: Tensor, labels: Tensor, *, epsilon: float = 0.05) -> Tensor:
    r"""Per-sample label-smoothed CE :math:`(1-\varepsilon)\,\mathrm{CE}_i + \varepsilon\,U_i`, shape ``(B,)``."""
    scores, labels, mask = prepare(scores, labels)
    return (1.0 - epsilon) * cross_entropy(scores, labels) + epsilon * uniform_cross_entropy(scores, mask)


@dataclass(frozen=True)
class LabelSmoothingConfig(Objective):
    """Label smoothing over the options."""

    name = "ls"
    loss_fn = staticmethod(loss)

    epsilon: float = field(default=0.05, metadata={
        "help": "Smoothing ε in [0, 1]: target (1-ε)·onehot + ε/K_i. 0.05 is the MbLS repository's config."})

    def __post_init__(self) -> None:
        check_number(self.name, "epsilon", self.epsilon, 0.0, 1.0)
