r"""Smooth ECE (Błasiok & Nakkiran, "Smooth ECE: Principled Reliability Diagrams via Kernel Smoothing", ICLR 2024).

With residuals :math:`r_i = f_i - y_i` and a Gaussian kernel of bandwidth :math:`\sigma` reflected at
0 and 1 (so no mass leaks out of [0, 1]),

.. math::
    \mathrm{smECE}_\sigma = \frac{\int_0^1 |\sum_i K_\sigma(t, f_i)\, r_i|\,dt}{\int_0^1 \sum_i K_\sigma(t, f_i)\,dt},

and the automatic bandwidth is the fixed point :math:`\sigma^* = \mathrm{smECE}_{\sigma^*}` (the
paper's choice, also relplot's ``smECE``), found here by bisection. The integral runs on a mesh of
``max(200, 10/σ)`` points; the data are linearly binned onto a grid finer than ``σ/4`` first, which
keeps the cost O(N + grid·mesh).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._inputs import ArrayLike, confidence_and_correct

_MESH_MIN = 200
_BISECTIONS = 20


def _linear_binning(x: np.ndarray, w: np.ndarray, grid_points: int) -> np.ndarray:
    """Spread each weight over the two nearest grid nodes of ``linspace(0, 1, grid_points)``."""
    pos = x * (grid_points - 1)
    lo = np.clip(pos.astype(np.int64), 0, grid_points - 2)
    frac = pos - lo
    out = np.bincount(lo, weights=(1 - frac) * w, minlength=grid_points)
    out += np.bincount(lo + 1, weights=frac * w, minlength=grid_points)
    return out


def _reflected_kernel(t: np.ndarray, g: np.ndarray, sigma: float) -> np.ndarray:
    """K(t, g) for the Gaussian reflected at 0 and 1, shape (len(t), len(g))."""
    d = t[:, None]
    k = np.exp(-0.5 * ((d - g) / sigma) ** 2)
    k += np.exp(-0.5 * ((d + g) / sigma) ** 2)
    k += np.exp(-0.5 * ((d - (2.0 - g)) / sigma) ** 2)
    return k / (np.sqrt(2 * np.pi) * sigma)


def smooth_ece_at(confidence: ArrayLike, correct: ArrayLike, sigma: float) -> float:
    """smECE at a fixed bandwidth ``sigma``.

    Example:
        >>> round(smooth_ece_at([0.9] * 10, [1] * 5 + [0] * 5, sigma=0.1), 4)  # one confidence: |0.9 - 0.5|
        0.4
    """
    if not sigma > 0:
        raise ValueError(f"Expected argument `sigma` > 0, but got {sigma!r}.")
    f, y = confidence_and_correct(confidence, correct)
    f = f.astype(np.float64)
    return _smooth_ece(f, f - y, sigma)


def _smooth_ece(f: np.ndarray, r: np.ndarray, sigma: float) -> float:
    grid_points = max(2001, int(np.ceil(4.0 / sigma)) + 1)
    g = np.linspace(0.0, 1.0, grid_points)
    wr = _linear_binning(f, r, grid_points)
    w1 = _linear_binning(f, np.ones_like(f), grid_points)
    keep = w1 > 0
    g, wr, w1 = g[keep], wr[keep], w1[keep]
    mesh = np.linspace(0.0, 1.0, max(_MESH_MIN, round(10.0 / sigma)))
    num = den = 0.0
    for chunk in np.array_split(mesh, max(1, len(mesh) * len(g) // 4_000_000 + 1)):
        k = _reflected_kernel(chunk, g, sigma)
        num += np.abs(k @ wr).sum()
        den += (k @ w1).sum()
    return float(num / den)


def smooth_ece(confidence: ArrayLike, correct: ArrayLike, *, min_sigma: float = 1e-3,
               return_sigma: bool = False) -> float | tuple[float, float]:
    """smECE with the automatic bandwidth ``σ* = smECE_σ*`` (never below ``min_sigma``).

    Accepts ``(N, K)`` probabilities with labels (top-label) or ``(N,)`` confidences with 0/1 targets.

    Example:
        >>> smooth_ece([1.0, 1.0, 0.0, 0.0], [1, 1, 0, 0])  # a perfect forecaster
        0.0
        >>> value, sigma = smooth_ece([0.9] * 10, [1] * 5 + [0] * 5, return_sigma=True)
        >>> round(value, 4), round(sigma, 4)
        (0.4, 0.4)
    """
    f, y = confidence_and_correct(confidence, correct)
    f = f.astype(np.float64)
    r = f - y
    lo, hi = 0.0, 1.0  # invariant: smECE_hi <= hi (bandwidth large enough)
    if _smooth_ece(f, r, hi) > hi:
        value = _smooth_ece(f, r, hi)
        return (value, hi) if return_sigma else value
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        if mid < min_sigma or mid < _smooth_ece(f, r, mid):
            lo = mid
        else:
            hi = mid
    value = _smooth_ece(f, r, hi)
    return (value, hi) if return_sigma else value


@dataclass(frozen=True)
class SmoothReliability:
    r"""A smooth reliability diagram: :math:`\hat a(t) = \sum_i K_\sigma(t, f_i) y_i / \sum_i K_\sigma(t, f_i)`.

    Nadaraya–Watson kernel regression of correctness on confidence with the reflected Gaussian
    kernel of the smooth ECE, at its automatic bandwidth :math:`\sigma^*` (the diagram the smECE
    measures: Błasiok & Nakkiran 2024, relplot). ``lower``/``upper`` are a pointwise percentile band
    of the same regression on bootstrap resamples of the items (``None`` without resamples);
    ``density`` is the kernel density of the confidences (integrates to about 1 over [0, 1]).
    """

    t: np.ndarray
    accuracy: np.ndarray
    density: np.ndarray
    lower: np.ndarray | None
    upper: np.ndarray | None
    sigma: float
    smece: float
    n: int
    level: float


def smooth_reliability(confidence: ArrayLike, correct: ArrayLike, *, sigma: float | None = None, n_points: int = 201,
                       n_resamples: int = 200, level: float = 0.95, seed: int = 0) -> SmoothReliability:
    """The smooth reliability curve on ``n_points`` confidences in [0, 1], with a bootstrap band.

    ``sigma`` defaults to the smooth-ECE bandwidth of the data; the resamples keep it fixed (the band
    is the curve's sampling variability at that bandwidth). Accepts ``(N, K)`` probabilities with
    labels (top-label) or ``(N,)`` confidences with 0/1 targets. Where the kernel puts no weight on any
    item (far from all confidences) the curve is NaN.

    Example:
        >>> curve = smooth_reliability([0.9] * 10, [1] * 5 + [0] * 5, n_resamples=0)
        >>> len(curve.t), round(curve.smece, 4), round(float(curve.accuracy[180]), 4)  # accuracy 0.5 at t = 0.9
        (201, 0.4, 0.5)
    """
    if not 0 < level < 1:
        raise ValueError(f"Expected argument `level` in (0, 1), but got {level!r}.")
    if n_resamples < 0 or n_points < 2:
        raise ValueError(f"Expected `n_resamples` >= 0 and `n_points` >= 2, but got {n_resamples!r} and {n_points!r}.")
    f, y = confidence_and_correct(confidence, correct)
    f, y = f.astype(np.float64), y.astype(np.float64)
    smece, auto = smooth_ece(f, y, return_sigma=True)
    sigma = auto if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"Expected argument `sigma` > 0, but got {sigma!r}.")
    grid_points = max(2001, int(np.ceil(4.0 / sigma)) + 1)
    g = np.linspace(0.0, 1.0, grid_points)
    t = np.linspace(0.0, 1.0, n_points)
    weights = np.ones((len(f), 1))
    if n_resamples:
        picks = np.random.default_rng(seed).integers(0, len(f), size=(n_resamples, len(f)))
        counts = np.stack([np.bincount(p, minlength=len(f)) for p in picks], axis=1).astype(np.float64)
        weights = np.concatenate([weights, counts], axis=1)  # column 0: the data themselves
    ones = np.stack([_linear_binning(f, w, grid_points) for w in weights.T], axis=1)
    hits = np.stack([_linear_binning(f, w * y, grid_points) for w in weights.T], axis=1)
    keep = ones[:, 0] > 0
    k = _reflected_kernel(t, g[keep], sigma)
    num, den = k @ hits[keep], k @ ones[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        curves = np.where(den > 0, num / den, np.nan)
    lower = upper = None
    if n_resamples:
        alpha = (1 - level) / 2
        lower, upper = np.nanquantile(curves[:, 1:], [alpha, 1 - alpha], axis=1)
    return SmoothReliability(t=t, accuracy=curves[:, 0], density=den[:, 0] / len(f), lower=lower, upper=upper,
                             sigma=float(sigma), smece=float(smece), n=len(f), level=level)
