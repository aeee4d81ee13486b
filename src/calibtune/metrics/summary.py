"""The full metric battery in one call: the dictionary behind ``calibtune metrics`` JSON output.

The keys are a public contract read by other tools: ``n``, ``accuracy``, ``ece``, ``mce``,
``rmsce``, ``ace``, ``classwise_ece`` (only when class probabilities are given), ``smece``,
``brier``, ``nll``, ``auroc``, and ``<key>_ci = [lo, hi]`` when bootstrapped. Extra keys:
``aurc``, ``selective_accuracy_10``, ``calibration_error`` (under the chosen ``norm``), the binning
convention and the reliability ``bins`` table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .bootstrap import bootstrap_ci
from .calibration import convention, reliability_bins
from .registry import METRICS, Bins

CONTRACT_KEYS = ("n", *(name for name, spec in METRICS.items() if spec.contract))


def pad_probabilities(rows: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Stack rows with different numbers of options: zeros where an item has no option, and a mask."""
    k = max(len(r) for r in rows)
    probs = np.zeros((len(rows), k), dtype=np.float64)
    mask = np.zeros((len(rows), k), dtype=bool)
    for i, r in enumerate(rows):
        probs[i, : len(r)] = r
        mask[i, : len(r)] = True
    return probs, mask


def _clean(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def summarize(
    preds: Any,
    target: Any,
    *,
    n_bins: int | None = None,
    binning: str | None = None,
    norm: str = "l1",
    edge: str = "right",
    preset: str | None = None,
    mask: np.ndarray | None = None,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric for ``(N, K)`` probabilities with labels or ``(N,)`` confidences with correctness.

    The binning arguments apply to ``ece``/``mce``/``rmsce``; ``ace`` is the equal-mass ECE with the
    same number of bins; ``classwise_ece`` follows the CFT definition with the same bins and edge rule.
    NaN (e.g. AUROC when every answer is right) is reported as ``None``. The metrics are those of
    :data:`~calibtune.metrics.METRICS`, in its order.

    Example:
        >>> s = summarize([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.9, 0.1]], [0, 1, 1, 0], n_bins=2)
        >>> s["n"], s["accuracy"], round(s["ece"], 4), set(CONTRACT_KEYS) <= set(s)
        (4, 0.75, 0.05, True)
    """
    preds = np.asarray(preds, dtype=np.float64)
    target = np.asarray(target)
    nb, eff_binning, eff_edge = convention(preset, n_bins, binning, edge)
    bins = Bins(n_bins=nb, binning=binning, edge=edge, preset=preset)
    metrics = {name: spec.bind(bins) for name, spec in METRICS.items() if preds.ndim == 2 or not spec.class_probs_only}
    arrays = (preds, target, mask) if mask is not None and preds.ndim == 2 else (preds, target)
    out: dict[str, Any] = {"n": int(len(preds))}
    for key, fn in metrics.items():
        out[key] = _clean(fn(*arrays))
    out["calibration_error"] = out[{"l1": "ece", "l2": "rmsce", "max": "mce"}[norm]]
    out.update({"norm": norm, "n_bins": nb, "binning": eff_binning, "edge": eff_edge, "preset": preset or "calibtune"})
    out["bins"] = reliability_bins(preds, target, n_bins=nb, binning=binning, edge=edge, preset=preset).to_dict()
    if bootstrap:
        for key, fn in metrics.items():
            out[f"{key}_ci"] = [_clean(v) for v in bootstrap_ci(fn, *arrays, n_resamples=bootstrap, seed=seed)]
    return out
