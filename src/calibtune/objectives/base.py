"""Shared pieces of every objective: input checks, the masked option distribution, the ``Objective`` base.

Every loss reads ``scores`` of shape ``(B, K_max)`` — one score per answer option — and gold indices
``labels`` of shape ``(B,)``. An item with ``K_i < K_max`` options holds ``-inf`` in its unused columns;
those columns get no probability, no target mass and do not count in ``K_i``. Losses are returned per
sample, shape ``(B,)``, computed in at least float32 (bf16/fp16 scores are upcast).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor


def check_scores(scores: Tensor) -> tuple[Tensor, Tensor]:
    """Validate ``scores`` and return ``(scores upcast to >= float32, mask of real options (B, K_max))``."""
    if not isinstance(scores, Tensor) or scores.ndim != 2 or not scores.is_floating_point():
        got = f"{type(scores).__name__} of shape {tuple(getattr(scores, 'shape', ()))}"
        raise ValueError(f"Expected `scores` to be a floating tensor of shape (B, K_max), but got {got}.")
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
    if torch.isnan(scores).any() or (scores == math.inf).any():
        raise ValueError("Expected `scores` to be finite, or -inf in unused option columns, but got NaN or +inf.")
    mask = scores != -math.inf
    if not mask.any(dim=-1).all():
        raise ValueError("Expected every item to have at least one real (not -inf) option, but a row is all -inf.")
    return scores, mask


def prepare(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Validate both inputs; return ``(scores, labels as int64, mask of real options)``."""
    scores, mask = check_scores(scores)
    if not isinstance(labels, Tensor) or labels.shape != scores.shape[:1] or labels.is_floating_point():
        got = f"{type(labels).__name__} of shape {tuple(getattr(labels, 'shape', ()))}"
        raise ValueError(f"Expected `labels` to be an integer tensor of shape ({scores.shape[0]},), but got {got}.")
    labels = labels.long()
    bad = ((labels < 0) | (labels >= scores.shape[1])).nonzero()
    if bad.numel():
        i = int(bad[0, 0])
        raise ValueError(f"Expected each label in [0, {scores.shape[1]}), but labels[{i}] = {int(labels[i])}.")
    bad = (~mask.gather(1, labels[:, None]).squeeze(1)).nonzero()
    if bad.numel():
        raise ValueError(f"Expected each label to point at a real option, but labels[{int(bad[0, 0])}] "
                         "points at a -inf column.")
    return scores, labels, mask


def option_log_probs(scores: Tensor) -> Tensor:
    r"""Log-softmax over each item's real options: :math:`\log p_{ik} = z_{ik} - \log\sum_{j\le K_i} e^{z_{ij}}`.

    Unused (``-inf``) columns stay ``-inf`` (probability 0).
    """
    scores, _ = check_scores(scores)
    return torch.log_softmax(scores, dim=-1)


def gold(values: Tensor, labels: Tensor) -> Tensor:
    """``values[i, labels[i]]`` for each row: shape ``(B,)``."""
    return values.gather(1, labels[:, None]).squeeze(1)


def cross_entropy(scores: Tensor, labels: Tensor) -> Tensor:
    r"""Per-sample CE on validated inputs: :math:`-\log p_{i,y_i}`."""
    return -gold(torch.log_softmax(scores, dim=-1), labels)


def per_sample_nll(scores: Tensor, labels: Tensor) -> Tensor:
    r"""NLL of the gold option under the option distribution, :math:`-\log p_{i,y_i}`, shape ``(B,)``.

    Not detached: the trainer detaches it before thresholding (CogCalib's known indicator).
    """
    scores, labels, _ = prepare(scores, labels)
    return cross_entropy(scores, labels)


def check_number(objective: str, name: str, value: Any, low: float | None = None, high: float | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is a real number in ``[low, high]`` (either bound optional)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        span = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ValueError(f"Expected `{name}` of objective {objective!r} to be a number in {span}, but got {value!r}.")


def check_flag(objective: str, name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"Expected `{name}` of objective {objective!r} to be a bool, but got {value!r}.")


@dataclass(frozen=True)
class Objective:
    """Base of every objective: a frozen config dataclass of hyper-parameters that is callable as the loss.

    ``objective(scores, labels, **state)`` returns per-sample losses ``(B,)``; ``state`` must hold exactly
    the keyword tensors named in ``state_keys``, which defaults to ``("known",)`` (a bool tensor ``(B,)``)
    when ``needs_known`` and ``()`` otherwise; a subclass needing other state sets it. Subclasses set ``name``,
    ``loss_fn`` (the module's ``loss``, whose keyword arguments are the config fields) and the two flags:
    ``needs_known`` (the trainer must pass the known indicator) and ``needs_logprob_scores`` (the scorer
    must return log-probabilities of the answer: cloze with ``normalize="sum"``, or letter with
    full-vocabulary log-probs).
    """

    name: ClassVar[str]
    loss_fn: ClassVar[Callable[..., Tensor]]
    needs_known: ClassVar[bool] = False
    needs_logprob_scores: ClassVar[bool] = False
    state_keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "state_keys" not in cls.__dict__:
            cls.state_keys = ("known",) if cls.needs_known else ()

    def params(self) -> dict[str, Any]:
        """The hyper-parameters as a dict (the keyword arguments of ``loss_fn``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __call__(self, scores: Tensor, labels: Tensor, **state: Tensor) -> Tensor:
        expected = set(self.state_keys)
        if set(state) != expected:
            raise ValueError(f"Expected state {sorted(expected)} for objective {self.name!r}, but got {sorted(state)}.")
        return type(self).loss_fn(scores, labels, **state, **self.params())
