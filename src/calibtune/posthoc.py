"""Post-hoc calibrators, scikit-learn style: ``fit`` on a held-out split, then ``transform``.

Never fit on the split you report: ``calibtune eval --temperature-data SPEC`` fits one temperature
per scoring on a held-out data set and adds ``+ts`` results for the evaluated ones. ``calibtune
calibrate fit FILE`` fits on any scored file (calibtune predictions, lm-eval samples, per-option
log-likelihoods) and saves the temperature (:func:`save_calibrator`); ``calibtune calibrate apply``
applies it to another file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import atomic_write


def _padded_logits(log_probs: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Rows of option log-scores (ragged allowed) as an ``(N, K)`` array with ``-inf`` padding."""
    if isinstance(log_probs, np.ndarray) and log_probs.ndim == 2:
        return log_probs.astype(np.float64)
    k = max(len(r) for r in log_probs)
    out = np.full((len(log_probs), k), -np.inf)
    for i, r in enumerate(log_probs):
        out[i, : len(r)] = r
    return out


class TemperatureScaling:
    r"""Temperature scaling (Guo et al. 2017): :math:`p = \mathrm{softmax}(z / T)` with one scalar :math:`T`.

    ``fit`` minimises the NLL of the held-out labels over :math:`\log T` with L-BFGS and a real
    autograd gradient (the CFT release's version never updated :math:`T`), so :math:`T > 0` always.
    Inputs are option logits or log-probabilities (equivalent: a softmax is shift-invariant), one row
    per item; rows may have different numbers of options.

    Example:
        >>> ts = TemperatureScaling().fit([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 0.0]], [0, 1, 1, 0])
        >>> ts.temperature_ > 1  # overconfident logits are softened
        True
    """

    def __init__(self, *, max_iter: int = 200, init_temperature: float = 1.0) -> None:
        self.max_iter = max_iter
        self.init_temperature = init_temperature

    def fit(self, logits: Sequence[Sequence[float]] | np.ndarray, labels: Sequence[int] | np.ndarray) -> TemperatureScaling:
        raw = torch.tensor(_padded_logits(logits))
        real = torch.isfinite(raw)
        z = torch.where(real, raw, torch.zeros_like(raw))  # padding must not put inf/NaN in the gradient
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if z.shape[0] != y.shape[0] or z.shape[0] == 0:
            raise ValueError(f"Expected as many labels as rows of logits (and at least one), got {y.shape[0]} and {z.shape[0]}")
        if not real.gather(1, y[:, None]).all():
            raise ValueError("Every label must point at a real option (a finite logit)")
        log_t = torch.tensor([float(np.log(self.init_temperature))], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def nll(temperature: torch.Tensor) -> torch.Tensor:
            scaled = torch.where(real, z / temperature, torch.full_like(z, -torch.inf))
            return torch.nn.functional.cross_entropy(scaled, y)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = nll(log_t.exp())
            loss.backward()
            return loss

        opt.step(closure)
        self.temperature_ = float(log_t.exp().item())
        with torch.no_grad():
            self.nll_before_ = float(nll(torch.tensor(1.0, dtype=torch.float64)))
            self.nll_after_ = float(nll(torch.tensor(self.temperature_, dtype=torch.float64)))
        return self

    def transform(self, logits: Sequence[Sequence[float]] | np.ndarray) -> list[np.ndarray]:
        """Calibrated probabilities per row (ragged rows stay ragged)."""
        return [np.exp(lp) for lp in self.transform_log(logits)]

    def transform_log(self, logits: Sequence[Sequence[float]] | np.ndarray) -> list[np.ndarray]:
        """Calibrated log-probabilities per row, ``log_softmax(z / T)`` (exact, no clipping; ragged rows stay ragged).

        >>> ts = TemperatureScaling()
        >>> ts.temperature_ = 2.0
        >>> np.round(np.exp(ts.transform_log([[0.0, np.log(9.0)]])[0]), 4)
        array([0.25, 0.75])
        """
        if not hasattr(self, "temperature_"):
            raise RuntimeError("This TemperatureScaling instance is not fitted yet; call fit(logits, labels) first")
        z = _padded_logits(logits) / self.temperature_
        z = z - z.max(axis=1, keepdims=True)
        z = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        lengths = [len(r) for r in logits]
        return [z[i, :n] for i, n in enumerate(lengths)]


CALIBRATOR_FORMAT = "calibtune-calibrator/1"


def save_calibrator(ts: TemperatureScaling, path: str | os.PathLike[str], **meta: Any) -> dict[str, Any]:
    """Write a fitted temperature to a small JSON file (``calibtune calibrate fit``); returns its content.

    ``meta`` (what it was fitted on: file, format, normalisation, n) is stored beside the temperature,
    so ``apply`` can refuse scores of another kind.
    """
    if not hasattr(ts, "temperature_"):
        raise RuntimeError("This TemperatureScaling instance is not fitted yet; call fit(logits, labels) first")
    doc = {"format": CALIBRATOR_FORMAT, "calibrator": "temperature", "temperature": ts.temperature_,
           "nll_before": ts.nll_before_, "nll_after": ts.nll_after_, **meta}
    with atomic_write(path) as fh:
        json.dump(doc, fh, indent=2)
    return doc


def load_calibrator(path: str | os.PathLike[str]) -> tuple[TemperatureScaling, dict[str, Any]]:
    """A calibrator written by :func:`save_calibrator` and its stored fields; a bad file is a ``ValueError``
    naming the file and field."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != CALIBRATOR_FORMAT:
        raise ValueError(f"{path}: field 'format' is not {CALIBRATOR_FORMAT!r}: not a calibtune calibrator file")
    if doc.get("calibrator") != "temperature":
        raise ValueError(f"{path}: field 'calibrator' = {doc.get('calibrator')!r}; only 'temperature' is known")
    t = doc.get("temperature")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise ValueError(f"{path}: field 'temperature' = {t!r} is not a positive number")
    ts = TemperatureScaling()
    ts.temperature_ = float(t)
    return ts, doc
