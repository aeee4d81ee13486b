r"""Binned calibration error (ECE, RMSCE, MCE), reliability-bin tables and classwise ECE.

For bins :math:`B_b` with counts :math:`n_b`, mean confidence :math:`\bar c_b` and accuracy
:math:`\bar a_b` over :math:`N` predictions:

.. math::
    \mathrm{ECE} = \sum_b \tfrac{n_b}{N}\,|\bar a_b-\bar c_b|,\qquad
    \mathrm{RMSCE} = \Big(\sum_b \tfrac{n_b}{N}\,(\bar a_b-\bar c_b)^2\Big)^{1/2},\qquad
    \mathrm{MCE} = \max_{b:\,n_b>0} |\bar a_b-\bar c_b|.

The calibtune convention (``preset=None``) has none of the libraries' quirks:

* ``binning="width"``: edges are the exact decimals ``i / n_bins`` (the correctly rounded double of
  each, so a confidence written as ``0.6`` sits *on* the edge ``0.6``, never beside it);
  ``binning="mass"``: equal-count bins whose cuts lie half way between the order statistics at the
  split points (tied values are never separated: a cut between two equal values falls on that value
  and the edge rule sends all of them to the same bin).
* ``edge="right"`` (default, as Guo et al. 2017, scikit-learn and p-lambda): bins are ``(lo, hi]``;
  ``edge="left"`` (torchmetrics, netcal): bins are ``[lo, hi)``.
* Confidences of exactly 0 and 1 always go to the first and the last real bin: no extra bin for 1.0,
  nothing dropped.

``preset=`` reproduces another library's number exactly, quirks included (see ``PRESETS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ._inputs import ArrayLike, check_probabilities, check_target, confidence_and_correct, to_numpy

Binning = Literal["width", "mass"]
Edge = Literal["left", "right"]
Norm = Literal["l1", "l2", "max"]

NORMS = ("l1", "l2", "max")
BINNINGS = ("width", "mass")
EDGES = ("left", "right")


@dataclass(frozen=True)
class Preset:
    """A library's binning convention, reproduced exactly."""

    name: str
    n_bins: int
    binning: Binning
    description: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("calibtune", 15, "width", "exact decimal edges, (lo, hi] bins, 0 and 1 in the first/last bin"),
        Preset("torchmetrics", 15, "width",
               "torch.linspace edges in the input dtype, [lo, hi) bins, 1.0 in an extra (n_bins+1)-th bin"),
        Preset("netcal", 10, "width",
               "np.linspace edges (0.6000000000000001), [lo, hi) bins with the last closed, confidences "
               "clipped to [eps, 1-eps]; labels with <= 2 distinct values are read as binary"),
        Preset("sklearn", 5, "width",
               "calibration_curve(strategy='uniform'): np.linspace edges, (lo, hi] bins via searchsorted"),
        Preset("p-lambda", 15, "width", "uncertainty-calibration get_ece: upper edges i/n, (lo, hi] bins"),
        Preset("relplot", 10, "width", "relplot binnedECE: bin int(c / (1/n)), 1.0 in an extra bin"),
        Preset("helm", 10, "mass",
               "HELM ece_10_bin = uncertainty-calibration get_ece_em: equal-mass midpoint edges, (lo, hi]"),
    )
}


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin table behind every binned calibration number and reliability diagram."""

    lower: np.ndarray       # (B,) lower edge of each bin
    upper: np.ndarray       # (B,) upper edge of each bin
    count: np.ndarray       # (B,) number of predictions in the bin
    confidence: np.ndarray  # (B,) mean confidence (0 for an empty bin)
    accuracy: np.ndarray    # (B,) mean correctness (0 for an empty bin)
    n: int                  # total number of predictions

    @property
    def gap(self) -> np.ndarray:
        """Accuracy minus confidence per bin (negative = overconfident)."""
        return self.accuracy - self.confidence

    @property
    def weight(self) -> np.ndarray:
        return self.count / self.n

    @property
    def ece(self) -> float:
        return float(np.sum(self.weight * np.abs(self.gap)))

    @property
    def rmsce(self) -> float:
        return float(np.sqrt(np.sum(self.weight * self.gap**2)))

    @property
    def mce(self) -> float:
        nonempty = self.count > 0
        return float(np.max(np.abs(self.gap[nonempty]))) if nonempty.any() else 0.0

    def error(self, norm: Norm) -> float:
        """The calibration error of this table under ``norm`` (l1 = ECE, l2 = RMSCE, max = MCE)."""
        return {"l1": self.ece, "l2": self.rmsce, "max": self.mce}[norm]

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "lower": self.lower.tolist(), "upper": self.upper.tolist(), "count": self.count.tolist(),
            "confidence": self.confidence.tolist(), "accuracy": self.accuracy.tolist(),
            "gap": self.gap.tolist(),
        }


MAX_BINS = 10_000  # bins cost memory (several arrays per bin, per class, per bootstrap resample); far above any use


def _check_args(n_bins: int, binning: str, edge: str, norm: str | None = None) -> None:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or not 1 <= n_bins <= MAX_BINS:
        raise ValueError(f"Expected argument `n_bins` to be an integer in [1, {MAX_BINS}], but got {n_bins!r}.")
    if binning not in BINNINGS:
        raise ValueError(f"Expected argument `binning` to be one of {BINNINGS}, but got {binning!r}.")
    if edge not in EDGES:
        raise ValueError(f"Expected argument `edge` to be one of {EDGES}, but got {edge!r}.")
    if norm is not None and norm not in NORMS:
        raise ValueError(f"Expected argument `norm` to be one of {NORMS}, but got {norm!r}.")


def _preset(name: str | None) -> Preset:
    key = "calibtune" if name is None else name
    if key not in PRESETS:
        raise ValueError(f"Expected argument `preset` to be one of {tuple(PRESETS)}, but got {name!r}.")
    return PRESETS[key]


def convention(preset: str | None, n_bins: int | None, binning: str | None, edge: str) -> tuple[int, str, str]:
    """The effective ``(n_bins, binning, edge)``: the preset's defaults and fixed rules applied, validated."""
    p = _preset(preset)
    n_bins = p.n_bins if n_bins is None else n_bins
    if p.name != "calibtune":
        if binning not in (None, p.binning):
            raise ValueError(f"preset={p.name!r} fixes binning={p.binning!r}; drop `binning` or the preset.")
        edge = "left" if p.name in ("torchmetrics", "netcal", "relplot") else "right"
    binning = p.binning if binning is None else binning
    _check_args(n_bins, binning, edge)
    return n_bins, binning, edge


def decimal_edges(n_bins: int) -> np.ndarray:
    """Edges ``i / n_bins`` as correctly rounded doubles (``3/5`` is the double written ``0.6``)."""
    return np.array([i / n_bins for i in range(n_bins + 1)], dtype=np.float64)


def equal_mass_edges(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-count edges: cuts half way between the sorted values at the split points.

    With more bins than values there is one bin per value (as uncertainty-calibration does); equal
    cuts collapse, so tied values stay together. Returns ``[0, cut_1, ..., 1]``.
    """
    s = np.sort(confidence.astype(np.float64, copy=False))
    parts = min(n_bins, len(s))
    # np.array_split puts the larger parts first: boundaries after these cumulative sizes.
    sizes = np.full(parts, len(s) // parts)
    sizes[: len(s) % parts] += 1
    ends = np.cumsum(sizes)[:-1]
    cuts = (s[ends - 1] + s[ends]) / 2.0
    return np.concatenate(([0.0], np.unique(cuts[cuts < 1.0]), [1.0]))


def _assign(c: np.ndarray, upper_interior: np.ndarray, edge: str, n: int) -> np.ndarray:
    """Bin index per confidence for sorted interior edges; 0 and 1 land in the first/last bin."""
    side = "left" if edge == "right" else "right"
    idx = np.searchsorted(upper_interior, c, side=side)
    return np.minimum(idx, n - 1)


def _assign_uniform(c: np.ndarray, edges: np.ndarray, side: str, offset: int) -> np.ndarray:
    """``searchsorted(edges, c, side) + offset`` for edges that are (close to) ``i / n``, fast.

    ``floor(c * n)`` is already the answer for every value that is not within a hair of an edge;
    only those few are resolved by an exact comparison against ``edges``. One multiply and a
    handful of elementwise passes instead of a binary search per value.
    """
    n = len(edges) - 1
    scaled = c * n
    k = scaled.astype(np.intp)
    frac = scaled - k
    tol = 1e-9 if c.dtype == np.float64 else 1e-4
    near = np.flatnonzero((frac < tol) | (frac > 1 - tol))
    idx = k + 1 + offset  # strictly between edges, both sides agree
    if near.size:
        idx[near] = np.searchsorted(edges, c[near], side=side) + offset
    return idx


def _binned_indices(c: np.ndarray, n_bins: int, binning: str, edge: str, preset: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(bin_index, edges)`` for the convention; ``edges`` has one more entry than bins."""
    if preset == "torchmetrics":
        import torch

        dtype = torch.float32 if c.dtype == np.float32 else torch.float64
        edges = torch.linspace(0, 1, n_bins + 1, dtype=dtype).numpy()
        # torch.bucketize(right=True) - 1: [lo, hi) and 1.0 -> bin n_bins (the extra bin).
        return _assign_uniform(c, edges, "right", -1), np.append(edges, edges[-1])
    if preset == "relplot":
        idx = (c / (1.0 / n_bins)).astype(int)
        edges = np.append(np.arange(n_bins + 1) * (1.0 / n_bins), 1.0)
        return idx, edges
    if preset == "netcal":
        edges = np.linspace(0.0, 1.0, n_bins + 1)  # np.histogramdd: [lo, hi), last bin closed
        return np.minimum(_assign_uniform(c, edges, "right", -1), n_bins - 1), edges
    if preset == "sklearn":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        return np.clip(_assign_uniform(c, edges, "left", -1), 0, n_bins - 1), edges
    if binning == "mass":
        edges = equal_mass_edges(c, n_bins)
        return _assign(c, edges[1:-1], edge, len(edges) - 1), edges
    edges = decimal_edges(n_bins)
    side = "left" if edge == "right" else "right"
    return np.clip(_assign_uniform(c, edges, side, -1), 0, n_bins - 1), edges


def _netcal_reduce(preds: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """netcal's input handling: clip to [eps, 1-eps] and its binary auto-detection."""
    if preds.dtype.kind != "f":
        preds = preds.astype(np.float64)
    eps = np.finfo(preds.dtype).eps
    p = np.clip(preds, eps, 1.0 - eps)
    t = check_target(to_numpy(target), preds)
    if p.ndim == 1:
        return p, t
    if len(np.unique(t)) <= 2:
        if p.shape[1] > 2:
            raise ValueError(
                "preset='netcal' reproduces netcal's binary auto-detection: the labels hold <= 2 distinct "
                "values, so netcal treats the input as binary and raises RuntimeError('Asserted binary "
                "classification problem but retrieved more than 2 confidence dims.')")
        return p[:, 1], t
    pred = np.argmax(p, axis=1)
    return p[np.arange(len(p)), pred], (pred == t).astype(np.int64)


def reliability_bins(
    preds: ArrayLike,
    target: ArrayLike,
    *,
    n_bins: int | None = None,
    binning: Binning | None = None,
    edge: Edge = "right",
    preset: str | None = None,
) -> ReliabilityBins:
    """Per-bin counts, mean confidence and accuracy.

    Args:
        preds: ``(N, K)`` class probabilities, or ``(N,)`` confidences / P(y=1).
        target: ``(N,)`` class labels for 2-D ``preds``; 0/1 correctness (or binary labels) for 1-D.
        n_bins: number of bins; default from the preset (calibtune 15).
        binning: ``"width"`` or ``"mass"``; default from the preset.
        edge: ``"right"`` for ``(lo, hi]`` bins, ``"left"`` for ``[lo, hi)`` (ignored by presets,
            which fix their own rule).
        preset: ``None``/``"calibtune"`` or a library name from ``PRESETS``.

    Example:
        >>> bins = reliability_bins([0.25, 0.25, 0.55, 0.75, 0.75], [0, 0, 1, 1, 1], n_bins=2)
        >>> bins.count.tolist(), round(bins.ece, 4)
        ([2, 3], 0.29)
    """
    p = _preset(preset)
    n_bins, binning, edge = convention(preset, n_bins, binning, edge)
    if p.name == "netcal":
        arr = to_numpy(preds)
        check_probabilities(arr)
        conf, correct = _netcal_reduce(arr, target)
    else:
        conf, correct = confidence_and_correct(preds, target)
    idx, edges = _binned_indices(conf, n_bins, binning, edge, p.name)
    nb = len(edges) - 1
    # one integer pass gives both the counts and the number correct per bin
    pairs = np.bincount(idx * 2 + correct.astype(np.intp, copy=False), minlength=2 * nb).reshape(nb, 2)
    count = pairs.sum(axis=1).astype(np.int64)
    sum_acc = pairs[:, 1].astype(np.float64)
    sum_conf = np.bincount(idx, weights=conf, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, sum_conf / np.maximum(count, 1), 0.0)
        mean_acc = np.where(count > 0, sum_acc / np.maximum(count, 1), 0.0)
    return ReliabilityBins(
        lower=np.asarray(edges[:-1], dtype=np.float64), upper=np.asarray(edges[1:], dtype=np.float64),
        count=count, confidence=mean_conf, accuracy=mean_acc, n=int(len(conf)),
    )


def calibration_error(
    preds: ArrayLike,
    target: ArrayLike,
    *,
    n_bins: int | None = None,
    binning: Binning | None = None,
    norm: Norm = "l1",
    edge: Edge = "right",
    preset: str | None = None,
) -> float:
    """Binned calibration error: ``norm="l1"`` ECE, ``"l2"`` RMSCE, ``"max"`` MCE.

    See :func:`reliability_bins` for the arguments.

    Example (torchmetrics' documentation, multiclass):
        >>> p = [[.25, .20, .55], [.55, .05, .40], [.10, .30, .60], [.90, .05, .05]]
        >>> round(calibration_error(p, [0, 1, 2, 0], n_bins=3), 4)
        0.2
    """
    if norm not in NORMS:
        raise ValueError(f"Expected argument `norm` to be one of {NORMS}, but got {norm!r}.")
    return reliability_bins(preds, target, n_bins=n_bins, binning=binning, edge=edge, preset=preset).error(norm)


def classwise_calibration_error(
    probs: ArrayLike,
    target: ArrayLike,
    *,
    n_bins: int = 10,
    edge: Edge = "right",
    mask: ArrayLike | None = None,
) -> float:
    r"""Classwise ECE as the CFT authors define it (papers.md §2.6).

    For each class :math:`j`, bin :math:`p_{ij}` of every sample, compare in each bin the fraction of
    samples labelled :math:`j` with the mean :math:`p_{ij}`, weight by :math:`n_{j,b}/N`, sum over
    bins; then average over classes.

    ``mask`` (``(N, K)`` booleans) marks which options an item really has when items have different
    numbers of options; a class's sum then runs over the items that have it (``N_j`` instead of ``N``).
    """
    p = to_numpy(probs)
    check_probabilities(p)
    if p.ndim != 2:
        raise ValueError(f"Expected `probs` of shape (N, K), but got shape {p.shape}.")
    t = check_target(to_numpy(target), p)
    _check_args(n_bins, "width", edge)
    m = np.ones(p.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != p.shape:
        raise ValueError(f"Expected `mask` of shape {p.shape}, but got shape {m.shape}.")
    interior = decimal_edges(n_bins)[1:-1]
    per_class = []
    for j in range(p.shape[1]):
        rows = m[:, j]
        if not rows.any():
            continue
        pj = p[rows, j].astype(np.float64)
        yj = (t[rows] == j).astype(np.float64)
        idx = _assign(pj, interior, edge, n_bins)
        gap = np.abs(np.bincount(idx, weights=yj, minlength=n_bins) - np.bincount(idx, weights=pj, minlength=n_bins))
        per_class.append(gap.sum() / rows.sum())
    return float(np.mean(per_class))
