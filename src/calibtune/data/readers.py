"""Record readers for text, JSONL, whole-file JSON and CSV/TSV files.

They yield ``(row, record)`` and put per-row problems (bad JSON, ragged CSV) in as
:class:`~calibtune.data.DataError` values, with the file and line; problems with the file as a
whole are raised.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .items import DataError, _Row


def _read_text(path: Path, src: str) -> str:
    """Whole file as text (UTF-8, BOM tolerated), with clear errors for missing/undecodable files."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"file not found ({path})", path=src) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 at byte {exc.start}", path=src) from None


def _jsonl_records(path: Path, src: str) -> Iterator[tuple[_Row, Any]]:
    """One JSON value per non-blank line."""
    index = 0
    for lineno, line in enumerate(_read_text(path, src).split("\n"), start=1):
        if not line.strip():
            continue
        row = _Row(src, lineno, index)
        index += 1
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            value = row.error(None, f"invalid JSON ({exc.msg} at column {exc.colno})")
        except RecursionError:
            value = row.error(None, "invalid JSON (nested too deeply)")
        yield row, value


def _json_value(path: Path, src: str) -> Any:
    """A whole-file JSON document."""
    try:
        return json.loads(_read_text(path, src))
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON ({exc.msg} at column {exc.colno})", path=src, line=exc.lineno) from None
    except RecursionError:
        raise DataError("invalid JSON (nested too deeply)", path=src) from None


def _table_records(
    path: Path, src: str, *, delimiter: str, columns: Sequence[str] | None = None
) -> Iterator[tuple[_Row, Any]]:
    """CSV/TSV rows as dicts keyed by the header (or by ``columns`` for header-less files).

    TSV is read without quote processing (``csv.QUOTE_NONE``): tab-separated data sets are
    unquoted and may contain literal ``"``.
    """
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(_read_text(path, src), newline=""), delimiter=delimiter, quoting=quoting)
    try:
        header = list(columns) if columns is not None else next(reader, None)
        if header is None:
            raise DataError("empty file (no header row)", path=src)
        start, index = reader.line_num + 1, 0
        for rec in reader:
            row = _Row(src, start, index)
            start = reader.line_num + 1
            if not rec:  # blank line, not a row
                continue
            index += 1
            if len(rec) < len(header):
                yield row, row.error(header[len(rec)], f"missing (row has {len(rec)} of {len(header)} columns)")
            elif len(rec) > len(header):
                yield row, row.error(None, f"row has {len(rec)} columns, expected {len(header)}")
            else:
                yield row, dict(zip(header, rec))
    except csv.Error as exc:
        raise DataError(f"unreadable CSV ({exc})", path=src, line=reader.line_num) from None
