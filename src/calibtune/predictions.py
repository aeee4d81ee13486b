"""Predictions files: the JSONL/CSV that ``calibtune eval`` writes and ``calibtune metrics`` reads.

One prediction per line, either ``{"probs": [...], "label": k}`` (class probabilities) or
``{"confidence": c, "correct": 0|1}``. CSV: a header with ``confidence,correct``, or ``label`` plus
probability columns ``p0,p1,...`` (or one ``probs`` column holding a JSON list). Other fields
(``id``, ``pred``...) are kept by the writer and ignored by the reader.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .metrics import pad_probabilities

PROB_SUM_ATOL = 1e-3


class PredictionsError(ValueError):
    """A bad predictions file: the message names the file, the line and the field."""


@dataclass(frozen=True)
class Predictions:
    """Parsed predictions: either ``probs``/``labels`` (+ ``mask`` of real options) or ``confidence``/``correct``."""

    path: str
    probs: np.ndarray | None = None
    mask: np.ndarray | None = None
    labels: np.ndarray | None = None
    confidence: np.ndarray | None = None
    correct: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.labels if self.labels is not None else self.correct)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(preds, target)`` for :mod:`calibtune.metrics`."""
        if self.probs is not None:
            return self.probs, self.labels
        return self.confidence, self.correct


def _number(value: Any, where: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PredictionsError(f"{where}: field '{field}' must be a number, got {value!r}")
    if not math.isfinite(value):
        raise PredictionsError(f"{where}: field '{field}' is {value!r}; NaN and inf are not allowed")
    return float(value)


def _row(rec: dict[str, Any], where: str, mode: str | None) -> tuple[str, Any, Any]:
    """Validate one record; return ``(mode, x, y)`` with mode ``"probs"`` or ``"confidence"``."""
    this = "probs" if "probs" in rec else "confidence" if "confidence" in rec else None
    if this is None:
        raise PredictionsError(f"{where}: missing field 'probs' (with 'label') or 'confidence' (with 'correct')")
    if mode is not None and this != mode:
        raise PredictionsError(f"{where}: field '{this}' given, but earlier lines use '{mode}'; do not mix the two forms")
    if this == "probs":
        probs = rec["probs"]
        if not isinstance(probs, list) or len(probs) < 2:
            raise PredictionsError(f"{where}: field 'probs' must be a list of at least 2 probabilities, got {probs!r}")
        p = [_number(v, where, f"probs[{j}]") for j, v in enumerate(probs)]
        bad = [j for j, v in enumerate(p) if not 0.0 <= v <= 1.0]
        if bad:
            raise PredictionsError(f"{where}: field 'probs[{bad[0]}]' = {p[bad[0]]} is outside [0, 1]")
        if abs(sum(p) - 1.0) > PROB_SUM_ATOL:
            raise PredictionsError(f"{where}: field 'probs' sums to {sum(p):.6g}, not 1 (tolerance {PROB_SUM_ATOL})")
        if "label" not in rec:
            raise PredictionsError(f"{where}: missing field 'label'")
        label = rec["label"]
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(p):
            raise PredictionsError(f"{where}: field 'label' must be an integer in [0, {len(p)}), got {label!r}")
        return this, p, label
    c = _number(rec["confidence"], where, "confidence")
    if not 0.0 <= c <= 1.0:
        raise PredictionsError(f"{where}: field 'confidence' = {c} is outside [0, 1]")
    if "correct" not in rec:
        raise PredictionsError(f"{where}: missing field 'correct'")
    corr = rec["correct"]
    if isinstance(corr, bool):
        corr = int(corr)
    if corr not in (0, 1) or isinstance(corr, float) and not float(corr).is_integer():
        raise PredictionsError(f"{where}: field 'correct' must be 0 or 1, got {rec['correct']!r}")
    return this, c, int(corr)


def _records_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {i}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise PredictionsError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise PredictionsError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            yield where, rec


def _parse_csv_value(text: str, where: str, field: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise PredictionsError(f"{where}: field '{field}' = {text!r} is not a number") from None


def _records_csv(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        prob_cols = sorted((h for h in header if h.startswith("p") and h[1:].isdigit()), key=lambda h: int(h[1:]))
        for i, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            where = f"{path}, line {i}"
            if len(row) != len(header):
                raise PredictionsError(f"{where}: {len(row)} fields, but the header has {len(header)}")
            cells = dict(zip(header, row))
            rec: dict[str, Any] = {}
            for key in ("confidence", "correct", "label", "probs"):
                if key in cells and cells[key].strip() != "":
                    rec[key] = _parse_csv_value(cells[key], where, key)
            if prob_cols and "probs" not in rec:
                rec["probs"] = [_parse_csv_value(cells[h], where, h) for h in prob_cols if cells[h].strip() != ""]
            yield where, rec


def read_predictions(path: str | os.PathLike[str]) -> Predictions:
    """Read and validate a predictions file; any bad line raises :class:`PredictionsError`.

    Items may have different numbers of options (ARC has 3–5): probabilities are zero-padded and
    ``mask`` marks the real options.
    """
    p = Path(path)
    if not p.is_file():
        raise PredictionsError(f"{p}: no such file")
    records = _records_csv(p) if p.suffix.lower() == ".csv" else _records_jsonl(p)
    mode: str | None = None
    xs: list[Any] = []
    ys: list[int] = []
    for where, rec in records:
        mode, x, y = _row(rec, where, mode)
        xs.append(x)
        ys.append(y)
    if not xs:
        raise PredictionsError(f"{p}: empty file, no predictions")
    if mode == "probs":
        probs, mask = pad_probabilities(xs)
        return Predictions(str(p), probs=probs, mask=mask, labels=np.array(ys, dtype=np.int64))
    return Predictions(str(p), confidence=np.array(xs), correct=np.array(ys, dtype=np.int64))


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path`` and rename it into place only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically."""
    with atomic_write(path) as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
