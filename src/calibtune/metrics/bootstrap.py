"""Seeded percentile-bootstrap confidence intervals for any metric."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._inputs import ArrayLike, to_numpy


MAX_RESAMPLES = 100_000  # memory and time stay bounded; intervals settle long before this


def check_resamples(n_resamples: int) -> None:
    """``n_resamples`` is an integer in ``[1, MAX_RESAMPLES]``."""
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or not 1 <= n_resamples <= MAX_RESAMPLES:
        raise ValueError(f"Expected argument `n_resamples` (--bootstrap) in [1, {MAX_RESAMPLES}], but got {n_resamples!r}.")


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: ArrayLike,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``metric(*arrays)`` over ``n_resamples`` resamples of the rows.

    All arrays are resampled with the same row indices (numpy ``default_rng(seed)``), so the
    interval is reproducible. Resamples where the metric is undefined (NaN) are ignored.

    Example:
        >>> from calibtune.metrics import accuracy
        >>> lo, hi = bootstrap_ci(accuracy, [0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1], n_resamples=200)
        >>> 0 <= lo <= 0.75 <= hi <= 1
        True
    """
    check_resamples(n_resamples)
    if not 0 < confidence_level < 1:
        raise ValueError(f"Expected argument `confidence_level` in (0, 1), but got {confidence_level!r}.")
    data = [to_numpy(a) for a in arrays]
    n = len(data[0])
    if any(len(a) != n for a in data):
        raise ValueError("Expected all arrays to have the same number of rows.")
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples)
    for b in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        values[b] = metric(*(a[idx] for a in data))
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - confidence_level) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)
