"""Proper scores and ranking metrics: accuracy, Brier, NLL, AUROC, selective accuracy, AURC."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.stats import rankdata

from ._inputs import ArrayLike, check_probabilities, check_target, confidence_and_correct, to_numpy

NLL_EPS = 1e-12  # probabilities are clipped here so a hard 0 gives a large finite NLL, not inf


def _probs_target(preds: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = to_numpy(preds).astype(np.float64)
    check_probabilities(p)
    return p, check_target(to_numpy(target), p)


def accuracy(preds: ArrayLike, target: ArrayLike) -> float:
    """Fraction correct: argmax vs label for ``(N, K)``; mean of 0/1 correctness for ``(N,)`` confidences.

    Example:
        >>> round(accuracy([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3]], [0, 0, 0]), 4)
        0.6667
        >>> accuracy([0.9, 0.6, 0.8, 0.7], [1, 0, 1, 1])
        0.75
    """
    _, correct = confidence_and_correct(preds, target)
    return float(correct.mean())


def brier_score(preds: ArrayLike, target: ArrayLike, *, reduction: Literal["sum", "mean"] = "sum") -> float:
    r"""Multiclass Brier score, :math:`\frac1N\sum_i\sum_k (p_{ik}-1[y_i=k])^2` (``reduction="sum"``).

    ``"sum"`` is Brier's original definition and lm-evaluation-harness' ``brier_score``; ``"mean"``
    divides by K (Thermometer). For ``(N,)`` inputs it is the binary score :math:`\frac1N\sum(p_i-y_i)^2`
    (the two reductions coincide there by convention).

    Example:
        >>> brier_score([[1.0, 0.0], [0.5, 0.5]], [0, 1])
        0.25
        >>> brier_score([[1.0, 0.0], [0.5, 0.5]], [0, 1], reduction="mean")
        0.125
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"Expected argument `reduction` to be 'sum' or 'mean', but got {reduction!r}.")
    p, t = _probs_target(preds, target)
    if p.ndim == 1:
        return float(np.mean((p - t) ** 2))
    onehot = np.zeros_like(p)
    onehot[np.arange(len(p)), t] = 1.0
    per_item = np.sum((p - onehot) ** 2, axis=1)
    if reduction == "mean":
        per_item = per_item / p.shape[1]
    return float(per_item.mean())


def nll(preds: ArrayLike, target: ArrayLike) -> float:
    """Mean negative log-likelihood of the label (probabilities clipped at ``NLL_EPS``).

    For ``(N,)`` inputs: the binary log loss of P(y=1) (or of confidence vs correctness).

    Example:
        >>> round(nll([[0.5, 0.5], [0.25, 0.75]], [0, 1]), 4)  # (ln 2 + ln 4/3) / 2
        0.4904
    """
    p, t = _probs_target(preds, target)
    q = p[np.arange(len(p)), t] if p.ndim == 2 else np.where(t == 1, p, 1.0 - p)
    return float(-np.mean(np.log(np.clip(q, NLL_EPS, 1.0))))


def auroc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the ROC curve of confidence as a detector of correct answers (ties count 1/2).

    Returns NaN when all answers are right or all are wrong (the AUROC is undefined).
    Accepts ``(N, K)`` probabilities with labels too (top-label confidence).

    Example:
        >>> auroc([0.9, 0.8, 0.3, 0.6], [1, 1, 0, 0])  # every right answer more confident than every wrong one
        1.0
        >>> auroc([0.9, 0.8, 0.3, 0.6], [1, 0, 0, 1])
        0.75
    """
    conf, corr = confidence_and_correct(confidence, correct)
    pos = corr == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(conf)  # Mann-Whitney U with average ranks for ties
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _tie_aware_cumulative_correct(conf: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Expected number correct among the k most confident, k = 1..N, ties taken in random order."""
    order = np.argsort(-conf, kind="stable")
    c, y = conf[order], correct[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    ends = np.r_[starts[1:], len(c)]
    group_rate = np.add.reduceat(y, starts) / (ends - starts)
    rate = np.repeat(group_rate, ends - starts)
    return np.cumsum(rate)


def selective_accuracy(confidence: ArrayLike, correct: ArrayLike, *, coverage: float = 0.1) -> float:
    """Accuracy on the ``coverage`` fraction of answers with the highest confidence (at least one).

    Example:
        >>> selective_accuracy([0.9, 0.8, 0.3, 0.6], [1, 0, 0, 1], coverage=0.5)  # the 0.9 and 0.8 answers
        0.5
    """
    if not 0 < coverage <= 1:
        raise ValueError(f"Expected argument `coverage` in (0, 1], but got {coverage!r}.")
    conf, corr = confidence_and_correct(confidence, correct)
    k = max(1, int(np.floor(coverage * len(conf))))
    return float(_tie_aware_cumulative_correct(conf, corr)[k - 1] / k)


def risk_coverage_curve(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Coverage ``k/N`` and selective risk (error rate among the k most confident), k = 1..N.

    Example:
        >>> coverage, risk = risk_coverage_curve([0.9, 0.8, 0.3, 0.6], [1, 1, 0, 0])
        >>> coverage.tolist(), risk.round(4).tolist()
        ([0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.3333, 0.5])
    """
    conf, corr = confidence_and_correct(confidence, correct)
    k = np.arange(1, len(conf) + 1)
    return k / len(conf), 1.0 - _tie_aware_cumulative_correct(conf, corr) / k


def aurc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk-coverage curve (Geifman & El-Yaniv): mean selective risk over k = 1..N.

    Lower is better; ties in confidence are averaged, so the value does not depend on row order.

    Example:
        >>> round(aurc([0.9, 0.8, 0.3, 0.6], [1, 1, 0, 0]), 4)  # mean of the risks 0, 0, 1/3, 1/2
        0.2083
    """
    _, risk = risk_coverage_curve(confidence, correct)
    return float(risk.mean())
