"""Predictions files: the JSONL/CSV that ``calibtune eval`` writes and ``calibtune metrics`` reads.

One prediction per line, either ``{"probs": [...], "label": k}`` (class probabilities) or
``{"confidence": c, "correct": 0|1}``. CSV: a header with ``confidence,correct``, or ``label`` plus
probability columns ``p0,p1,...`` (or one ``probs`` column holding a JSON list). Other fields
(``id``, ``pred``...) are kept by the writer and ignored by the reader, except ``dataset`` and
``scoring``: a file that mixes several (``calibtune eval`` writes one row per item, data set and
scoring) is read as groups, never pooled (:meth:`Predictions.by_group`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_write, staged_folder, write_jsonl  # noqa: F401 (re-exported: their old home)
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
    group: np.ndarray | None = None  # per row "dataset · scoring" (None when no row names either)

    @property
    def n(self) -> int:
        return len(self.labels if self.labels is not None else self.correct)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(preds, target)`` for :mod:`calibtune.metrics`."""
        if self.probs is not None:
            return self.probs, self.labels
        return self.confidence, self.correct

    def by_group(self) -> dict[str, Predictions]:
        """The rows of each ``dataset · scoring`` group in file order (one entry ``""`` when the file has no groups)."""
        if self.group is None:
            return {"": self}
        out = {}
        for name in dict.fromkeys(self.group.tolist()):
            rows = self.group == name
            pick = {k: None if v is None else v[rows] for k, v in (
                ("probs", self.probs), ("mask", self.mask), ("labels", self.labels),
                ("confidence", self.confidence), ("correct", self.correct))}
            if pick["probs"] is not None:  # drop option columns no item of the group has
                k = int(pick["mask"].sum(1).max())
                pick["probs"], pick["mask"] = pick["probs"][:, :k], pick["mask"][:, :k]
            out[name] = Predictions(self.path, **pick, group=self.group[rows])
        return out


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


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines of a UTF-8 text file, with the line of an undecodable byte in the error."""
    with path.open("rb") as fh:
        for i, raw in enumerate(fh, start=1):
            try:
                yield i, raw.decode("utf-8-sig" if i == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise PredictionsError(f"{path}, line {i}: not valid UTF-8 (byte {raw[e.start:e.start + 1]!r} "
                                       f"at column {e.start + 1})") from None


def jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("<path>, line <i>", object)`` per non-blank line of a JSONL file; a bad line is one named error."""
    for i, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}, line {i}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise PredictionsError(f"{where}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise PredictionsError(f"{where}: JSON nested too deeply") from None
        if not isinstance(rec, dict):
            raise PredictionsError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        yield where, rec


def _parse_csv_value(text: str, where: str, field: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise PredictionsError(f"{where}: field '{field}' = {text!r} is not a number") from None


def _csv_text(path: Path) -> str:
    """The file as text, or an error naming the line of the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise PredictionsError(f"{path}, line {line}: not valid UTF-8 (byte {data[e.start:e.start + 1]!r})") from None


def _prob_columns(path: Path, header: list[str]) -> list[str]:
    """The ``p0, p1, ...`` columns in order; a gap (``p0,p2``) is an error, not a silently shifted option."""
    seen = [h for h in header if h.startswith("p") and h[1:].isdigit()]
    cols = sorted(seen, key=lambda h: int(h[1:]))
    for k, h in enumerate(cols):
        if h != f"p{k}":
            raise PredictionsError(f"{path}, line 1: probability column 'p{k}' is missing (columns: {', '.join(cols)})")
    return cols


def _records_csv(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """CSV rows as records. An empty probability cell is an error unless only trailing cells are empty
    (an item with fewer options); an empty ``label``/``confidence``/``correct`` cell is an error."""
    reader = csv.reader(io.StringIO(_csv_text(path), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise PredictionsError(f"{path}, line 1: duplicate column(s) {dupes}")
        prob_cols = _prob_columns(path, header)
        start = reader.line_num + 1
        for row in reader:
            where, start = f"{path}, line {start}", reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise PredictionsError(f"{where}: {len(row)} fields, but the header has {len(header)}")
            cells = {h: c.strip() for h, c in zip(header, row)}
            rec: dict[str, Any] = {k: cells[k] for k in ("dataset", "scoring") if cells.get(k)}
            empty = {k for k in ("confidence", "correct", "label", "probs") if cells.get(k) == ""}
            for key in ("confidence", "correct", "label", "probs"):
                if key in cells and key not in empty:
                    rec[key] = _parse_csv_value(cells[key], where, key)
            if prob_cols and "probs" not in rec:
                values = [cells[h] for h in prob_cols]
                n = len(values)
                while n and values[n - 1] == "":
                    n -= 1  # trailing empty cells: the item has fewer options
                gap = next((h for h, v in zip(prob_cols[:n], values[:n]) if v == ""), None)
                if gap is not None:
                    raise PredictionsError(f"{where}: field '{gap}' is empty between probabilities; "
                                           "only trailing cells may be empty (an item with fewer options)")
                rec["probs"] = [_parse_csv_value(v, where, h) for h, v in zip(prob_cols[:n], values[:n])]
            needed = ("label",) if "probs" in rec else ("confidence", "correct")
            blank = next((k for k in needed if k in empty), None)
            if blank is not None:
                raise PredictionsError(f"{where}: field '{blank}' is empty")
            yield where, rec
    except csv.Error as e:
        raise PredictionsError(f"{path}, line {reader.line_num}: unreadable CSV ({e})") from None


def read_predictions(path: str | os.PathLike[str]) -> Predictions:
    """Read and validate a predictions file; any bad line raises :class:`PredictionsError`.

    Items may have different numbers of options (ARC has 3–5): probabilities are zero-padded and
    ``mask`` marks the real options. Rows naming more than one ``dataset``/``scoring`` get a ``group``
    each (``"arc-easy:test · cloze"``), so metrics are computed per group, never pooled.
    """
    p = Path(path)
    if not p.is_file():
        raise PredictionsError(f"{p}: no such file" if not p.exists() else f"{p}: is a folder, not a predictions file")
    records = _records_csv(p) if p.suffix.lower() == ".csv" else jsonl_records(p)
    mode: str | None = None
    xs: list[Any] = []
    ys: list[int] = []
    groups: list[str] = []
    try:
        for where, rec in records:
            mode, x, y = _row(rec, where, mode)
            xs.append(x)
            ys.append(y)
            groups.append(" · ".join(str(rec[k]) for k in ("dataset", "scoring") if rec.get(k) is not None))
    except OSError as e:
        raise PredictionsError(f"{p}: cannot read ({e.strerror or e})") from None
    if not xs:
        raise PredictionsError(f"{p}: empty file, no predictions")
    group = np.array(groups, dtype=object) if len(set(groups)) > 1 else None
    if mode == "probs":
        probs, mask = pad_probabilities(xs)
        return Predictions(str(p), probs=probs, mask=mask, labels=np.array(ys, dtype=np.int64), group=group)
    return Predictions(str(p), confidence=np.array(xs), correct=np.array(ys, dtype=np.int64), group=group)
