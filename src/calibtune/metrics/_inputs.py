"""Validation and reduction of metric inputs (kept apart from the computations, as torchmetrics does).

Two input forms reach every metric:

* ``preds`` of shape ``(N, K)``: class probabilities, with integer ``target`` labels in ``[0, K)``;
  reduced to top-label confidence ``max_k p_k`` and correctness ``argmax_k p_k == y``.
* ``preds`` of shape ``(N,)``: a probability with a 0/1 ``target``. Read either as a top-label
  confidence with correctness, or as binary P(y=1) with the label — the computation is the same
  (torchmetrics' binary mode).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ArrayLike = Any  # numpy array, torch tensor, or nested sequence


def to_numpy(x: ArrayLike) -> np.ndarray:
    """Return ``x`` as a numpy array, keeping float32/float64 (edges may depend on the dtype)."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype.kind == "f" and arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    if arr.dtype.kind in "iub":
        return arr
    if arr.dtype.kind != "f":
        raise TypeError(f"Expected a numeric array, but got dtype {arr.dtype}.")
    return arr


def check_probabilities(preds: np.ndarray, *, atol: float | None = None) -> None:
    """Raise ``ValueError`` unless ``preds`` are finite probabilities (rows summing to 1 within ``atol``)."""
    if preds.dtype.kind not in "fiub":
        raise TypeError(f"Expected probabilities, but got dtype {preds.dtype}.")
    if preds.ndim not in (1, 2):
        raise ValueError(f"Expected `preds` of shape (N,) or (N, K), but got shape {preds.shape}.")
    if preds.shape[0] == 0:
        raise ValueError("Expected at least one prediction, but got none.")
    if not np.all(np.isfinite(preds)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(preds.reshape(len(preds), -1)), axis=1))[0])
        raise ValueError(f"Expected finite probabilities, but row {bad} holds NaN or inf.")
    if preds.min() < 0 or preds.max() > 1:
        bad = int(np.flatnonzero(np.any((preds < 0) | (preds > 1), axis=-1) if preds.ndim == 2
                                 else (preds < 0) | (preds > 1))[0])
        raise ValueError(f"Expected probabilities in [0, 1], but row {bad} is outside.")
    if preds.ndim == 2 and atol is not None:
        sums = preds.sum(axis=1, dtype=np.float64)
        off = np.flatnonzero(np.abs(sums - 1.0) > atol)
        if off.size:
            raise ValueError(f"Expected each row of probabilities to sum to 1 (within {atol}), "
                             f"but row {int(off[0])} sums to {sums[off[0]]:.6g}.")


def check_target(target: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Validate labels against ``preds`` and return them as int64."""
    if target.ndim != 1 or target.shape[0] != preds.shape[0]:
        raise ValueError(f"Expected `target` of shape ({preds.shape[0]},), but got shape {target.shape}.")
    if target.dtype.kind == "f":
        if not np.all(np.isfinite(target)) or np.any(target != np.round(target)):
            raise ValueError("Expected integer labels in `target`, but got non-integer values.")
    t = target.astype(np.int64, copy=False)
    upper = preds.shape[1] if preds.ndim == 2 else 2
    bad = np.flatnonzero((t < 0) | (t >= upper))
    if bad.size:
        what = f"a class index in [0, {upper})" if preds.ndim == 2 else "0 or 1"
        raise ValueError(f"Expected each label to be {what}, but target[{int(bad[0])}] = {t[bad[0]]}.")
    return t


def confidence_and_correct(preds: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Reduce validated inputs to ``(confidence, correct)``; 2-D probabilities become top-label.

    ``correct`` is an int64 array of 0/1 (no float copy: at 10^7 rows the copy costs more than the ECE).
    """
    p = to_numpy(preds)
    check_probabilities(p)
    t = check_target(to_numpy(target), p)
    if p.ndim == 1:
        return p, t
    pred = np.argmax(p, axis=1)
    return p[np.arange(len(p)), pred], (pred == t).astype(np.int64)
