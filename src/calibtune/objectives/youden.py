r"""Youden's J threshold on per-sample NLL (CogCalib's known/unknown indicator).

A sample is predicted *known* iff :math:`\mathrm{NLL}_i \le t`; "positive" = known. The threshold
maximises :math:`J(t) = \mathrm{TPR}(t) + \mathrm{TNR}(t) - 1`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibtune.metrics._inputs import ArrayLike, to_numpy


@dataclass(frozen=True)
class Threshold:
    """A fitted threshold ``t`` (known iff ``nll <= t``) with its J, TPR and TNR on the fitting set."""

    t: float
    j: float
    tpr: float
    tnr: float


def youden_threshold(nll: ArrayLike, known: ArrayLike) -> Threshold:
    r"""The ``t`` maximising :math:`\mathrm{TPR}+\mathrm{TNR}-1`, searched exhaustively and exactly.

    Candidates: ``-inf`` (nobody known), the midpoints between consecutive sorted unique NLL values, and
    ``+inf`` (everybody known, J = 0, so never chosen) — one per distinct partition. J is compared in exact integer arithmetic,
    :math:`J = (P_t N - N_t P)/(PN)` with :math:`P_t, N_t` the known/unknown counts at or below t; ties go
    to the smallest t (so ``-inf``, i.e. no sample regularised, when NLL does not separate at all).
    """
    values = to_numpy(nll).astype(np.float64).ravel()
    labels = to_numpy(known)
    if values.size == 0:
        raise ValueError("Expected at least one NLL value, but got none.")
    if labels.shape != values.shape or labels.dtype.kind not in "biu" or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"Expected `known` to be {values.size} booleans (or 0/1), but got dtype {labels.dtype} "
                         f"and shape {labels.shape}.")
    if not np.isfinite(values).all():
        raise ValueError("Expected finite NLL values, but got NaN or inf.")
    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"Expected both known and unknown samples, but got {n_pos} known and {n_neg} unknown.")

    unique, inverse = np.unique(values, return_inverse=True)
    # Known / unknown counts at or below each unique value, with a leading 0 for t = -inf.
    pos = np.concatenate(([0], np.cumsum(np.bincount(inverse[labels], minlength=unique.size))))
    neg = np.concatenate(([0], np.cumsum(np.bincount(inverse[~labels], minlength=unique.size))))
    j_numerator = pos * n_neg - neg * n_pos
    # First maximum = smallest t. J(+inf) = J(-inf) = 0, so +inf (the last entry) never wins.
    best = int(np.argmax(j_numerator))
    if best == 0:
        t = -np.inf
    else:
        low, high = unique[best - 1], unique[best]
        mid = (low + high) / 2
        t = mid if mid < high else low  # adjacent floats: the midpoint may round up to `high`
    tpr, tnr = pos[best] / n_pos, 1.0 - neg[best] / n_neg
    return Threshold(t=float(t), j=float(j_numerator[best] / (n_pos * n_neg)), tpr=float(tpr), tnr=float(tnr))
