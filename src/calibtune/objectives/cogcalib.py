r"""CogCalib's adaptive loss (ACL 2025): calibration regulariser on *known* samples only.

.. math:: \ell_i = \mathrm{CE}_i + \alpha\,\mathbb{1}[\text{known}_i]\,L_{\mathrm{cal},i}

``L_cal`` is the regulariser term of each method *without its own weight* (α takes the place of
ε, λ, β), added to the CE as the paper's formula says:

* ``"ls"`` (CoLS): the uniform-target CE :math:`U_i = -\frac{1}{K_i}\sum_{k\le K_i}\log p_{ik}`.
  Since LS(ε) = (1−ε)·(CE + ε/(1−ε)·U), CoLS with α = ε/(1−ε) is LS(ε) rescaled by 1/(1−ε).
* ``"mbls"`` (CoMbLS): the margin term :math:`\frac{1}{K_i}\sum_k \mathrm{ReLU}(\max_j z_{ij}-z_{ik}-m)`;
  with α = λ a known sample's loss equals MbLS(λ).
* ``"ecp"`` (CoECP): :math:`-H(p_i)/K_i` (or :math:`-H(p_i)`); with α = β a known sample's loss equals ECP(β).

``known`` (bool ``(B,)``) is state: precomputed probe labels, or ``per_sample_nll(...).detach() <= t``
with ``t`` from :func:`calibtune.objectives.youden_threshold`. The paper does not give α; 1.0 is a
placeholder to tune. Style adaptation and threshold re-fitting are the trainer's phases, not here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import Objective, check_flag, check_number, cross_entropy, prepare
from .ecp import entropy_penalty
from .label_smoothing import uniform_cross_entropy
from .mbls import margin_penalty

REGULARIZERS = ("ls", "mbls", "ecp")


def calibration_term(scores: Tensor, mask: Tensor, regularizer: str, margin: float,
                     normalize_entropy: bool) -> Tensor:
    """``L_cal`` per sample on validated inputs, shape ``(B,)`` (see the module docstring)."""
    if regularizer == "ls":
        return uniform_cross_entropy(scores, mask)
    if regularizer == "mbls":
        return margin_penalty(scores, mask, margin)
    if regularizer == "ecp":
        return entropy_penalty(scores, mask, normalize_entropy)
    raise ValueError(f"Expected `regularizer` to be one of {REGULARIZERS}, but got {regularizer!r}.")


def loss(scores: Tensor, labels: Tensor, *, known: Tensor, alpha: float = 1.0, regularizer: str = "ls",
         margin: float = 10.0, normalize_entropy: bool = True) -> Tensor:
    r"""Per-sample CogCalib loss :math:`\mathrm{CE}_i + \alpha\,\mathbb{1}[\text{known}_i]\,L_{\mathrm{cal},i}`."""
    scores, labels, mask = prepare(scores, labels)
    if not isinstance(known, Tensor) or known.dtype != torch.bool or known.shape != labels.shape:
        got = f"{type(known).__name__} {getattr(known, 'dtype', '')} of shape {tuple(getattr(known, 'shape', ()))}"
        raise ValueError(f"Expected `known` to be a bool tensor of shape ({labels.shape[0]},), but got {got}.")
    ce = cross_entropy(scores, labels)
    cal = calibration_term(scores, mask, regularizer, margin, normalize_entropy)
    return torch.where(known.to(ce.device), ce + alpha * cal, ce)


@dataclass(frozen=True)
class CogCalibConfig(Objective):
    """CogCalib: CE for all samples, plus α·L_cal (CoLS / CoMbLS / CoECP) for known samples."""

    name = "cogcalib"
    loss_fn = staticmethod(loss)
    needs_known = True

    alpha: float = field(default=1.0, metadata={
        "help": "Weight α >= 0 of L_cal on known samples (not given by the paper; tune it)."})
    regularizer: str = field(default="ls", metadata={
        "help": "L_cal: 'ls' (CoLS, uniform-target CE), 'mbls' (CoMbLS, margin term), 'ecp' (CoECP, -H(p)/K)."})
    margin: float = field(default=10.0, metadata={"help": "Margin m >= 0 of the 'mbls' term (MbLS default 10)."})
    normalize_entropy: bool = field(default=True, metadata={
        "help": "'ecp' term: divide H(p) by the item's number of options K_i (reference convention)."})

    def __post_init__(self) -> None:
        check_number(self.name, "alpha", self.alpha, 0.0)
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"Expected `regularizer` of objective 'cogcalib' to be one of {REGULARIZERS}, "
                             f"but got {self.regularizer!r}.")
        check_number(self.name, "margin", self.margin, 0.0)
        check_flag(self.name, "normalize_entropy", self.normalize_entropy)
