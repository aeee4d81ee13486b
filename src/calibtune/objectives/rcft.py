r"""RCFT (ICML 2025, "Restoring Calibration for Aligned LLMs"): SFT plus a binned ECE regulariser, any K.

Per item :math:`i` with option probabilities :math:`p_i` (softmax over its :math:`K_i` real options),
top-label confidence :math:`c_i = \max_k p_{ik}` and bin :math:`b = b(c_i)`:

.. math:: \ell_i = w_{\mathrm{sft}}\,\mathrm{CE}_i + w_{\mathrm{ece}}\,e_i,\qquad
          e_i = \frac{(c_i - \mathrm{acc}_b)^2 + \sum_{j} (p_{(j),i} - t_{(j),i})^2}{N_b}

over the :math:`K_i - 1` non-max probabilities :math:`p_{(j)}`, with rank-preserving targets
:math:`t_{(j)}` summing to :math:`1-\mathrm{acc}_b` (:func:`rank_preserving_targets`).

* Bins: ``n_bins`` equal-width bins with edges :math:`k/n` (:func:`bin_index`): :math:`[k/n, (k+1)/n)`, the
  top bin :math:`[1-1/n, 1]` closed, as the authors' ``bucketize(right=True)``. The assignment is hard
  (no gradient through it).
* State (E-step): ``bin_accuracy`` :math:`\mathrm{acc}_b` and ``bin_count`` :math:`N_b` (shape
  ``(n_bins,)``), from :func:`e_step` over the whole training set; an item whose bin has :math:`N_b = 0`
  contributes :math:`e_i = 0`. :math:`e_i` is computed in float64 and cast back.
* ``detach_targets=True`` (default): the non-max targets are constants, so :math:`e_i` only pulls the
  probabilities toward fixed targets, as the paper describes an EM target. ``False`` reproduces the
  released code, where gradient also flows through the targets (which depend on the live probabilities).
* ``include_top_bin=False`` reproduces the released code's off-by-one loop that skips the top bin.
* :math:`\mathrm{CE}_i` is the answer-only SFT on the option distribution (CFT's :math:`L_{SFT1}`); the
  paper's question-plus-answer :math:`L_{SFT2}` adds the prompt's language-model loss, which needs the
  model rather than option scores: the trainer's ``sft_target="question+answer"``.

Presets: ``rcft`` (paper: weights 1 and λ = 1, top bin included) is this class's defaults;
``rcft-code`` is :func:`rcft_code` (released code: :math:`(1-\alpha)\,L_{SFT} + 10^{-3}\alpha\,L_{ECE}`,
α = 0.5, top bin skipped, targets not detached). Scale: the authors *sum* :math:`e_i` over the batch,
while the trainer averages per-sample losses, so their ECE weight corresponds to ``ece_weight`` times
the per-device batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..metrics import reliability_bins
from .base import Objective, check_flag, check_number, cross_entropy, prepare


def _check_n_bins(objective: str, n_bins: Any) -> None:
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"Expected `n_bins` of objective {objective!r} to be an int >= 1, but got {n_bins!r}.")


def bin_index(confidence: Tensor, n_bins: int) -> Tensor:
    r"""Equal-width bin of each confidence: :math:`b = \#\{k : k/n \le c\} - 1`, in ``[0, n_bins)``, int64.

    Bins :math:`[k/n, (k+1)/n)`; the top bin also holds :math:`c \ge 1` (``bucketize(right=True)`` on the
    lower edges). Computed in float64 on the detached confidence.
    """
    c = confidence.detach().double()
    edges = torch.arange(n_bins, dtype=torch.float64, device=c.device) / n_bins
    return torch.bucketize(c, edges, right=True) - 1


def e_step(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-bin accuracy and count over a scored set: ``(bin_accuracy float64, bin_count int64)``, ``(n_bins,)``.

    :math:`N_b = \#\{i : b(c_i) = b\}`, :math:`\mathrm{acc}_b = \frac{1}{N_b}\sum_{b(c_i)=b} \mathrm{correct}_i`
    (0 for an empty bin), with the same bins as :func:`bin_index`, all bins included.
    """
    _check_n_bins("rcft", n_bins)
    c = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct)
    if c.ndim != 1 or ok.shape != c.shape:
        raise ValueError(f"Expected `confidence` and `correct` of the same shape (N,), but got {c.shape} and "
                         f"{ok.shape}.")
    if not np.isin(ok, (0, 1)).all():
        raise ValueError("Expected `correct` to hold booleans (or 0/1).")
    if not ((c >= 0) & (c <= 1)).all():
        raise ValueError("Expected every confidence in [0, 1] (NaN is not).")
    table = reliability_bins(c, ok.astype(np.int64), n_bins=n_bins, binning="width", edge="left")
    return table.accuracy.astype(np.float64), table.count.astype(np.int64)


def rank_preserving_targets(probs: Tensor, valid: Tensor, accuracy: Tensor) -> Tensor:
    r"""Targets for the non-max probabilities (``valid`` entries of ``probs``), summing to :math:`1-\mathrm{acc}`.

    With :math:`m` valid entries per row, :math:`p_{(2)}` their largest and :math:`\mathrm{acc}` the row's
    bin accuracy (the authors' map, :math:`m = 3` there):

    .. math:: \gamma = \frac{\log m}{p_{(2)}\,(1-\mathrm{acc})},\quad T = \sum_j \tanh(\gamma p_{(j)}),\quad
              a = \frac{1-\mathrm{acc}}{T + m},\quad t_{(j)} = a\,\tanh(\gamma p_{(j)}) + a.

    Increasing in :math:`p_{(j)}`, so ranks are kept. :math:`\gamma = 0` (an equal split) when
    :math:`m = 1` (:math:`\log 1 = 0`), :math:`p_{(2)} = 0` (all entries equal) or :math:`\mathrm{acc} = 1`
    (then :math:`a = 0`: all targets 0). Shapes ``(B, M)``, ``(B, M)`` bool, ``(B,)``; 0 where not valid.
    """
    probs = probs.masked_fill(~valid, 0.0)
    m = valid.sum(dim=-1).to(probs.dtype)
    p2 = probs.amax(dim=-1)
    room = 1.0 - accuracy.to(probs.dtype)
    ok = (m >= 2) & (p2 > 0) & (room > 0)
    one = torch.ones_like(p2)  # stands in where gamma = 0, so no 0/0 in the value or the gradient
    safe_m, safe_p2, safe_room = (torch.where(ok, x, one) for x in (m, p2, room))
    scale = torch.where(ok, torch.log(safe_m) / safe_room, 0.0)  # gamma * p_(2), finite even for a tiny p_(2)
    squashed = torch.tanh(scale[:, None] * (probs / safe_p2[:, None])).masked_fill(~valid, 0.0)
    a = room / (squashed.sum(dim=-1) + m.clamp(min=1.0))
    return ((squashed + 1.0) * a[:, None]).masked_fill(~valid, 0.0)


def _check_state(n_bins: int, bin_accuracy: Any, bin_count: Any) -> None:
    for name, value in (("bin_accuracy", bin_accuracy), ("bin_count", bin_count)):
        if not isinstance(value, Tensor) or value.shape != (n_bins,) or value.dtype == torch.bool:
            got = f"{type(value).__name__} of shape {tuple(getattr(value, 'shape', ()))}"
            raise ValueError(f"Expected `{name}` to be a numeric tensor of shape ({n_bins},) (n_bins), but got {got}.")
    if not ((bin_accuracy >= 0) & (bin_accuracy <= 1)).all():
        raise ValueError("Expected every `bin_accuracy` in [0, 1].")
    if not (bin_count >= 0).all():
        raise ValueError("Expected every `bin_count` >= 0.")


def ece_term(scores: Tensor, mask: Tensor, bin_accuracy: Tensor, bin_count: Tensor, n_bins: int,
             include_top_bin: bool, detach_targets: bool) -> Tensor:
    r"""Per-sample :math:`e_i` on validated inputs (module docstring), float64, shape ``(B,)``."""
    p = torch.softmax(scores.double(), dim=-1)
    top = p.argmax(dim=-1, keepdim=True)
    c = p.gather(1, top).squeeze(1)
    others = mask & (torch.arange(p.shape[1], device=p.device) != top)
    b = bin_index(c, n_bins)
    acc = bin_accuracy.to(device=p.device, dtype=torch.float64)[b]
    count = bin_count.to(device=p.device, dtype=torch.float64)[b]
    targets = rank_preserving_targets(p.detach() if detach_targets else p, others, acc)
    squared = (c - acc) ** 2 + ((p - targets) ** 2).masked_fill(~others, 0.0).sum(dim=-1)
    active = count > 0
    if not include_top_bin:
        active = active & (b < n_bins - 1)
    return torch.where(active, squared / count.clamp(min=1.0), torch.zeros_like(squared))


def sequence_ece_term(confidence: Tensor, bin_accuracy: Tensor, bin_count: Tensor, n_bins: int = 10,
                      include_top_bin: bool = True) -> Tensor:
    r"""RCFT's ECE term on sequence confidences (open questions): :math:`e_i = (c_i - \mathrm{acc}_b)^2 / N_b`.

    :math:`c_i` is the probability of the item's own generated answer (differentiable), :math:`b = b(c_i)`
    its bin (:func:`bin_index`) and :math:`\mathrm{acc}_b`, :math:`N_b` the E-step's exact-match accuracy
    and count over the training set's generated answers. There are no non-max targets: the alternatives
    to a generated answer cannot be enumerated. Float64, shape ``(B,)``; 0 in an empty (or skipped top) bin.

    Example:
        >>> acc, count = torch.tensor([0.0, 0.5]), torch.tensor([2, 4])
        >>> sequence_ece_term(torch.tensor([0.8, 0.2]), acc, count, n_bins=2)
        tensor([0.0225, 0.0200], dtype=torch.float64)
    """
    _check_n_bins("rcft", n_bins)
    _check_state(n_bins, bin_accuracy, bin_count)
    c = confidence.double()
    b = bin_index(c, n_bins)
    acc = bin_accuracy.to(device=c.device, dtype=torch.float64)[b]
    count = bin_count.to(device=c.device, dtype=torch.float64)[b]
    active = count > 0
    if not include_top_bin:
        active = active & (b < n_bins - 1)
    return torch.where(active, (c - acc) ** 2 / count.clamp(min=1.0), torch.zeros_like(c))


def loss(scores: Tensor, labels: Tensor, *, bin_accuracy: Tensor, bin_count: Tensor, sft_weight: float = 1.0,
         ece_weight: float = 1.0, n_bins: int = 10, include_top_bin: bool = True,
         detach_targets: bool = True) -> Tensor:
    r"""Per-sample RCFT loss :math:`w_{\mathrm{sft}}\,\mathrm{CE}_i + w_{\mathrm{ece}}\,e_i`, shape ``(B,)``."""
    scores, labels, mask = prepare(scores, labels)
    _check_state(n_bins, bin_accuracy, bin_count)
    ce = cross_entropy(scores, labels)
    e = ece_term(scores, mask, bin_accuracy, bin_count, n_bins, include_top_bin, detach_targets)
    return sft_weight * ce + ece_weight * e.to(ce.dtype)


@dataclass(frozen=True)
class RCFTConfig(Objective):
    """RCFT: answer-only CE plus λ·(binned squared error to E-step accuracy and rank-preserving targets)."""

    name = "rcft"
    loss_fn = staticmethod(loss)
    state_keys = ("bin_accuracy", "bin_count")

    sft_weight: float = field(default=1.0, metadata={"help": "Weight >= 0 of the CE (answer-only SFT) term."})
    ece_weight: float = field(default=1.0, metadata={
        "help": "Weight λ >= 0 of the binned ECE term (paper: 1; the authors sum it over the batch, we average)."})
    n_bins: int = field(default=10, metadata={"help": "Number of equal-width confidence bins (the E-step's too)."})
    include_top_bin: bool = field(default=True, metadata={
        "help": "Regularise items in the top bin [1-1/n, 1]; False = the released code's off-by-one."})
    detach_targets: bool = field(default=True, metadata={
        "help": "Non-max targets are constants; False = the released code (gradient through the targets)."})

    def __post_init__(self) -> None:
        check_number(self.name, "sft_weight", self.sft_weight, 0.0)
        check_number(self.name, "ece_weight", self.ece_weight, 0.0)
        _check_n_bins(self.name, self.n_bins)
        check_flag(self.name, "include_top_bin", self.include_top_bin)
        check_flag(self.name, "detach_targets", self.detach_targets)


def rcft_code(alpha: float = 0.5, n_bins: int = 10) -> RCFTConfig:
    r"""The released code's RCFT (preset ``rcft-code``): :math:`(1-\alpha)\,\mathrm{CE} + 10^{-3}\alpha\,e`.

    Top bin skipped, gradient through the non-max targets; α = 0 is CFT, α = 1 the ECE-only ablation.
    """
    check_number("rcft-code", "alpha", alpha, 0.0, 1.0)
    return RCFTConfig(sft_weight=1.0 - alpha, ece_weight=alpha * 1e-3, n_bins=n_bins, include_top_bin=False,
                      detach_targets=False)
