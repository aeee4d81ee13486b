"""Item types and the row-level field helpers every loader validates its records with.

Every labelled record becomes an :class:`MCItem` (multiple choice) or an :class:`OpenItem`
(short-answer QA). A bad record raises :class:`DataError` naming file, line, field and problem;
loaders yield ``(row, item-or-DataError)`` pairs so that ``skip_invalid`` can continue past it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

ENV_VAR = "CALIBTUNE_DATA_DIR"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")


class DataError(ValueError):
    """Bad input data or spec.

    The message is ``"<path>, line <n>, field '<f>': <message>"`` with the parts that are known, e.g.
    ``"openbookqa/Main/test.tsv, line 17, field 'Answer Key': 'E' is not one of the option labels A-D"``.
    ``path``, ``line`` (1-based), ``field`` and the bare ``reason`` stay available as attributes.
    """

    def __init__(
        self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None
    ) -> None:
        self.reason = message
        self.path = path
        self.line = line
        self.field = field
        where = [str(path)] if path is not None else []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question; ``gold`` is a 0-based index into ``options``."""

    id: str
    question: str
    options: tuple[str, ...]
    gold: int
    context: str | None = None
    subject: str | None = None
    source: str = ""
    answer_format: str = "letter"  # "letter" (options labelled A, B, ...) or "boolean" (answered as words)


@dataclass(frozen=True)
class OpenItem:
    """One short-answer question with its gold aliases (for prior-knowledge probing)."""

    id: str
    question: str
    answers: tuple[str, ...]
    source: str = ""
    subject: str | None = None


Item = Union[MCItem, OpenItem]


@dataclass(frozen=True)
class Dataset:
    """A loaded, validated data set; ``name`` is the canonical spec (e.g. ``"arc-easy:test"``)."""

    name: str
    items: tuple
    n_skipped: int = 0

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __getitem__(self, index: int) -> Item:
        return self.items[index]


# --------------------------------------------------------------------------------------------
# Row-level helpers: every loader yields (row, item-or-DataError) so skip_invalid can continue.


@dataclass(frozen=True)
class _Row:
    """Where a record came from: file (relative to the data dir), 1-based line, 0-based index."""

    src: str
    line: int | None
    index: int
    field_prefix: str = ""  # for records without a line, e.g. "[3]." or "21645374."

    def error(self, field: str | None, what: str) -> DataError:
        name = None if field is None else f"{self.field_prefix}{field}"
        return DataError(what, path=self.src, line=self.line, field=name)


_Parsed = tuple[_Row, Union[Item, DataError]]


def _parsed(records: Iterable[tuple[_Row, Any]], parse: Callable[[_Row, Any], Item]) -> Iterator[_Parsed]:
    """Apply ``parse`` to each record, turning its DataError into a value (one bad row stops nothing)."""
    for row, rec in records:
        if isinstance(rec, DataError):
            yield row, rec
            continue
        try:
            yield row, parse(row, rec)
        except DataError as exc:
            yield row, exc


def _get(row: _Row, rec: Mapping[str, Any], key: str) -> Any:
    """``rec[key]``, or a DataError naming the missing field."""
    if not isinstance(rec, Mapping):
        raise row.error(None, f"expected an object with field {key!r}, got {type(rec).__name__}")
    if key not in rec:
        raise row.error(key, "missing")
    return rec[key]


_MISSING = ("nan",)  # what pandas and spreadsheets write for an empty cell


def _text(row: _Row, value: Any, field: str) -> str:
    """A non-empty text; numbers are accepted and converted (CSV-like sources), NaN/inf and the text
    ``nan`` (a missing value written by pandas and spreadsheets) are not: they would be scored as words."""
    if isinstance(value, float) and not np.isfinite(value) or isinstance(value, str) and value.strip().lower() in _MISSING:
        raise row.error(field, f"missing ({value!r} is a missing-value marker, not text)")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if value is None:
        raise row.error(field, "missing (null)")
    if not isinstance(value, str):
        raise row.error(field, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise row.error(field, "empty")
    return value.strip()


def _options(row: _Row, pairs: Sequence[tuple[str, Any]], field: str) -> tuple[str, ...]:
    """Validated option texts from ``(field name, value)`` pairs."""
    if len(pairs) < 2:
        raise row.error(field, f"needs at least 2 options, got {len(pairs)}")
    return tuple(_text(row, value, name) for name, value in pairs)


def _gold_int(row: _Row, value: Any, n: int, field: str) -> int:
    """A 0-based index given as int or digit string, checked against ``n`` options."""
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise row.error(field, f"{value!r} is not an option index")
    if not 0 <= value < n:
        raise row.error(field, f"{value} is out of range for {n} options (0-{n - 1})")
    return value


def _gold_label(row: _Row, value: Any, labels: Sequence[str], field: str) -> int:
    """Index of the option whose label equals ``value`` (e.g. 'C' among A-D, '2' among 1-4)."""
    key = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if key is None or key not in labels:
        shown = f"{labels[0]}-{labels[-1]}" if labels else "(none)"
        raise row.error(field, f"{value!r} is not one of the option labels {shown}")
    return list(labels).index(key)


def _gold_any(row: _Row, value: Any, options: Sequence[str], field: str) -> int:
    """Generic gold: an int index (0-based), a letter A.., or the exact text of one option."""
    n = len(options)
    if isinstance(value, int) and not isinstance(value, bool):
        return _gold_int(row, value, n, field)
    if isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"-?\d+", s):
            return _gold_int(row, s, n, field)
        if len(s) == 1 and s.upper() in LETTERS:
            return _gold_label(row, s.upper(), LETTERS[:n], field)
        if options.count(s) == 1:
            return options.index(s)
    raise row.error(
        field, f"{value!r} is neither an index 0-{n - 1}, a letter A-{LETTERS[n - 1]}, nor one of the option texts"
    )


def _answers(row: _Row, value: Any, field: str) -> tuple[str, ...]:
    """Gold aliases: a non-empty list of texts (or one text), duplicates removed in order."""
    values = value if isinstance(value, list) else [value]
    out = tuple(dict.fromkeys(_text(row, v, f"{field}[{k}]") for k, v in enumerate(values)))
    if not out:
        raise row.error(field, "no answers")
    return out


@dataclass(frozen=True)
class FieldMap:
    """A declarative record -> :class:`MCItem` map, for benchmarks whose columns map one-to-one onto
    item fields: the columns are read and checked in the order id, question, options, gold.

    >>> fm = FieldMap(source="toy", id="qid", question="q", options=("a", "b"), gold="key", gold_labels="AB")
    >>> fm(_Row("toy.csv", 2, 0), {"qid": "7", "q": "Why?", "a": "yes", "b": "no", "key": "B"}).gold
    1
    """

    source: str
    id: str
    question: str
    options: tuple[str, ...]
    gold: str
    gold_labels: str  # the labels the gold column holds, one per option in order (e.g. "ABCD")
    options_field: str = "options"  # the field named when there are fewer than 2 options

    def __call__(self, row: _Row, rec: Any) -> MCItem:
        return MCItem(
            id=_text(row, _get(row, rec, self.id), self.id),
            question=_text(row, _get(row, rec, self.question), self.question),
            options=_options(row, [(c, _get(row, rec, c)) for c in self.options], self.options_field),
            gold=_gold_label(row, _get(row, rec, self.gold), self.gold_labels, self.gold),
            source=self.source,
        )
