"""The one path from a model to calibration figures: prompts → option log-probabilities → predictions → metrics.

``calibtune eval`` (:mod:`calibtune.evaluate`), the grid's cells (:mod:`calibtune.grid.compare`), the
ratio study and the held-out training curve (:class:`calibtune.training.CalibrationCurveCallback`) all
score, turn scores into prediction records and compute metrics through these functions, so a figure
means the same thing wherever it is printed.

>>> from types import SimpleNamespace
>>> items = [SimpleNamespace(id="a", gold=0), SimpleNamespace(id="b", gold=1)]
>>> rows = predictions_rows("toy", "cloze", items, [np.log([0.8, 0.2]), np.log([0.6, 0.4])])
>>> [(r["pred"], round(r["confidence"], 2), r["correct"]) for r in rows]
[(0, 0.8, 1), (0, 0.6, 0)]
>>> curve_figures(rows, n_bins=10)["heldout_accuracy"]
0.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .distributed import score_sharded
from .metrics import calibration_error, pad_probabilities, summarize
from .prompts import Template, build_requests


def score_items(model, tokenizer, items: Sequence, template: Template, scoring: str, *, normalize: str = "sum",
                batch_size: int | str = 8, shots: int = 0, pool: Sequence | None = None, seed: int = 0,
                exemplars: str = "shared", progress: bool = False) -> list[np.ndarray]:
    """Per-item option log-probabilities of ``items`` under ``model`` (k-shot with ``shots`` and ``pool``).

    Scored over this process's shard and gathered in item order under a launcher (:func:`score_sharded`).
    """
    requests = build_requests(items, template, scoring, shots=shots, pool=pool, seed=seed, exemplars=exemplars)
    return score_sharded(model, tokenizer, requests, scoring=scoring, batch_size=batch_size, normalize=normalize,
                         progress=progress)


def predictions_rows(dataset: str, scoring: str, items, logprobs: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """Per-item prediction records (``probs, label, pred, confidence, correct, logprobs``) from option log-scores."""
    rows = []
    for item, lp in zip(items, logprobs):
        probs = np.exp(lp - lp.max())
        probs /= probs.sum()
        pred = int(np.argmax(probs))
        rows.append({"dataset": dataset, "scoring": scoring, "id": item.id, "probs": [float(p) for p in probs],
                     "label": int(item.gold), "pred": pred, "confidence": float(probs[pred]),
                     "correct": int(pred == item.gold), "logprobs": [float(v) for v in lp]})
    return rows


def rows_metrics(rows: Sequence[Mapping[str, Any]], *, n_bins: int = 15, bootstrap: int = 0,
                 seed: int = 0) -> dict[str, Any]:
    """The metric battery of :func:`calibtune.metrics.summarize` over prediction records (ragged K allowed)."""
    probs, mask, labels = rows_arrays(rows)
    return summarize(probs, labels, mask=mask, n_bins=n_bins, bootstrap=bootstrap, seed=seed)


def rows_arrays(rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probs, mask, labels)`` of prediction records: ``(N, K)`` probabilities padded with 0, the mask of
    real options, and the gold labels (what the metrics and the reliability diagrams take)."""
    probs, mask = pad_probabilities([r["probs"] for r in rows])
    return probs, mask, np.array([r["label"] for r in rows])


def curve_figures(rows: Sequence[Mapping[str, Any]], *, known: Mapping[str, bool] | None = None, n_bins: int = 15,
                  prefix: str = "heldout") -> dict[str, float]:
    """One point of a held-out training curve: accuracy, ECE, mean confidence (and NLL where rows carry
    ``logprobs``), and with ``known`` (probe labels by id) accuracy and confidence of known and unknown items.

    Items without a label are in neither group. Generated-answer rows (``confidence``, ``correct`` only)
    are taken as they are.
    """
    conf = np.array([r["confidence"] for r in rows], dtype=float)
    correct = np.array([r["correct"] for r in rows], dtype=int)
    out = {f"{prefix}_accuracy": float(correct.mean()), f"{prefix}_ece": calibration_error(conf, correct, n_bins=n_bins),
           f"{prefix}_confidence": float(conf.mean())}
    if all("logprobs" in r for r in rows):
        out[f"{prefix}_nll"] = float(np.mean([np.logaddexp.reduce(r["logprobs"]) - r["logprobs"][r["label"]]
                                              for r in rows]))
    if known is not None:
        labels = [known.get(r["id"]) for r in rows]
        for name, value in (("known", True), ("unknown", False)):
            sel = np.array([lab is value for lab in labels])
            if sel.any():
                out[f"{prefix}_{name}_confidence"] = float(conf[sel].mean())
                out[f"{prefix}_{name}_accuracy"] = float(correct[sel].mean())
                out[f"{prefix}_{name}_n"] = int(sel.sum())
    return out
