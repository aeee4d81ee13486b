"""Evaluation data: one multiple-choice item type, one open-QA item type, and loaders.

Every labelled data set under the shared data directory (see its PROVENANCE.md) is read in place
and turned into :class:`MCItem` (multiple choice) or :class:`OpenItem` (short-answer QA).
Every row is validated; a bad row raises :class:`DataError` naming file, line, field and problem,
or, with ``skip_invalid=True``, is skipped and counted in :attr:`Dataset.n_skipped`.

Spec strings accepted by :func:`load_dataset`:

* ``NAME[:SPLIT]`` / ``NAME/SUBSET[,SUBSET...][:SPLIT]`` for the registry :data:`DATASETS`
  (``val`` and ``dev`` are aliases where a data set has only one of them; MMLU has both);
* a path to a ``.jsonl``/``.json``/``.csv``/``.tsv`` file (generic format, see
  :func:`load_dataset`);
* ``hf:OWNER/NAME[:SPLIT]`` for a Hugging Face hub data set (needs ``datasets`` and ``fields``).

Any of them may end in a slice, read as ``datasets`` reads splits: ``[lo:hi]``, ``[:200]``, ``[:80%]``
are rows in file order; ``[lo:hi](shuffled)`` is the fixed pseudo-random partition (:class:`Slice`).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import functools
import io
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import numpy as np

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "MCItem",
    "OpenItem",
    "data_dir",
    "exemplar_pool",
    "load_dataset",
    "parse_fields",
    "takes_fields",
]

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


# --------------------------------------------------------------------------------------------
# File readers. They yield (row, record) and put per-row problems (bad JSON, ragged CSV) in as
# DataError values; problems with the file as a whole are raised.


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


# --------------------------------------------------------------------------------------------
# Registry loaders: (root, split, subsets) -> rows. ``src`` paths are relative to the data dir.

_Loader = Callable[[Path, str, Union[tuple[str, ...], None]], Iterator[_Parsed]]


def _mmlu_subjects(root: Path, split: str) -> list[str]:
    suffix = f"_{split}.csv"
    return sorted(p.name[: -len(suffix)] for p in (root / "mmlu" / split).glob(f"*{suffix}"))


def _load_mmlu(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """Header-less CSV per subject: question, A, B, C, D, answer letter."""
    columns = ("question", "A", "B", "C", "D", "answer")
    for subject in subsets or _mmlu_subjects(root, split):
        src = f"mmlu/{split}/{subject}_{split}.csv"

        def parse(row: _Row, rec: dict[str, str], subject: str = subject) -> MCItem:
            return MCItem(
                id=f"mmlu/{subject}:{split}:{row.index}",
                question=_text(row, rec["question"], "question"),
                options=_options(row, [(c, rec[c]) for c in "ABCD"], "options"),
                gold=_gold_label(row, rec["answer"].strip(), "ABCD", "answer"),
                subject=subject,
                source="mmlu",
            )

        yield from _parsed(_table_records(root / src, src, delimiter=",", columns=columns), parse)


def _choices_item(row: _Row, rec: Any, *, source: str) -> MCItem:
    """ARC / CommonsenseQA schema: question.stem, question.choices[{label,text}], answerKey."""
    question = _get(row, rec, "question")
    choices = _get(row, question, "choices") if isinstance(question, Mapping) else None
    if not isinstance(choices, list):
        raise row.error("question.choices", "expected a list of {label, text}")
    labels, pairs = [], []
    for k, choice in enumerate(choices):
        if not isinstance(choice, Mapping) or "label" not in choice or "text" not in choice:
            raise row.error(f"question.choices[{k}]", "expected an object with 'label' and 'text'")
        labels.append(str(choice["label"]).strip())
        pairs.append((f"question.choices[{k}].text", choice["text"]))
    if len(set(labels)) != len(labels):
        raise row.error("question.choices", f"duplicate option labels {labels}")
    options = _options(row, pairs, "question.choices")
    return MCItem(
        id=_text(row, _get(row, rec, "id"), "id"),
        question=_text(row, _get(row, question, "stem"), "question.stem"),
        options=options,
        gold=_gold_label(row, _get(row, rec, "answerKey"), labels, "answerKey"),
        source=source,
    )


def _arc(level: str) -> _Loader:
    def load(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
        """ARC JSONL (retrieved ``para`` fields are dropped: closed-book evaluation)."""
        src = f"arc/arc_{level}/official/{split}.jsonl"
        return _parsed(_jsonl_records(root / src, src), functools.partial(_choices_item, source=f"arc-{level}"))

    return load


def _load_commonsenseqa(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    src = f"commonsenseqa/{split}_rand_split.jsonl"
    return _parsed(_jsonl_records(root / src, src), functools.partial(_choices_item, source="commonsenseqa"))


def _split_labelled(row: _Row, text: str, labels: str, field: str) -> list[tuple[str, str]]:
    """Split ``"(A) x (B) y ..."`` by searching the labels in order, so that a later repeated or
    embedded ``(X)`` stays part of the option text instead of creating a bogus option."""
    starts, pos = [], 0
    for k, label in enumerate(labels):
        marker = f"({label})"
        at = text.find(marker, pos) if k == 0 else text.find(f" {marker}", pos)
        if at < 0 or (k == 0 and text[:at].strip()):
            raise row.error(field, f"cannot find option marker {marker} in {text!r}")
        at += 0 if k == 0 else 1
        starts.append((label, at, at + len(marker)))
        pos = at + len(marker)
    ends = [s[1] for s in starts[1:]] + [len(text)]
    return [(f"{field} ({label})", text[body:end]) for (label, _, body), end in zip(starts, ends)]


def _load_openbookqa(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """OpenBookQA Main TSV: ID, Question Stem, Choices "(A) ... (D) ...", Complete Question, Answer Key."""
    src = f"openbookqa/Main/{split}.tsv"

    def parse(row: _Row, rec: dict[str, str]) -> MCItem:
        choices = _text(row, _get(row, rec, "Choices"), "Choices")
        labels = "".join(itertools.takewhile(lambda c: f"({c})" in choices, LETTERS))
        pairs = _split_labelled(row, choices, labels if len(labels) >= 2 else "AB", "Choices")
        return MCItem(
            id=_text(row, _get(row, rec, "ID"), "ID"),
            question=_text(row, _get(row, rec, "Question Stem"), "Question Stem"),
            options=_options(row, pairs, "Choices"),
            gold=_gold_label(row, _get(row, rec, "Answer Key"), LETTERS[: len(pairs)], "Answer Key"),
            source="openbookqa",
        )

    return _parsed(_table_records(root / src, src, delimiter="\t"), parse)


def _load_sciq(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    src = "sciq/sciq_test_formatted.csv"

    def parse(row: _Row, rec: dict[str, str]) -> MCItem:
        cols = [f"Option {c}" for c in "ABCD"]
        return MCItem(
            id=_text(row, _get(row, rec, "Question ID"), "Question ID"),
            question=_text(row, _get(row, rec, "Question"), "Question"),
            options=_options(row, [(c, _get(row, rec, c)) for c in cols], "options"),
            gold=_gold_label(row, _get(row, rec, "Correct Answer Letter"), "ABCD", "Correct Answer Letter"),
            source="sciq",
        )

    return _parsed(_table_records(root / src, src, delimiter=","), parse)


def _load_medmcqa(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """MedMCQA dev; the "A. " prefixes of the option strings are removed."""
    src = "medmcqa/validation.jsonl"

    def parse(row: _Row, rec: Any) -> MCItem:
        choices = _get(row, rec, "choices")
        if not isinstance(choices, list):
            raise row.error("choices", "expected a list")
        pairs = [(f"choices[{k}]", _strip_prefix(c, LETTERS[k % 26])) for k, c in enumerate(choices)]
        options = _options(row, pairs, "choices")
        return MCItem(
            id=f"medmcqa:{split}:{row.index}",
            question=_text(row, _get(row, rec, "question"), "question"),
            options=options,
            gold=_gold_int(row, _get(row, rec, "answer"), len(options), "answer"),
            source="medmcqa",
        )

    return _parsed(_jsonl_records(root / src, src), parse)


def _strip_prefix(text: Any, label: str) -> Any:
    """Remove a leading ``"A. "``-style label (only the expected one); non-text is left for validation."""
    return re.sub(rf"^\s*{label}\.\s*", "", text) if isinstance(text, str) else text


_PUBMEDQA_OPTIONS = ("yes", "no", "maybe")


def _load_pubmedqa(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """PQA-L: test = the 500 PMIDs of test_ground_truth.json, train = the other 500 (file order).

    Options are ("yes", "no", "maybe"); context = the abstract's CONTEXTS joined by newlines.
    """
    src, truth_src = "pubmedqa/data/ori_pqal.json", "pubmedqa/data/test_ground_truth.json"
    data, truth = _json_value(root / src, src), _json_value(root / truth_src, truth_src)
    for doc, s in ((data, src), (truth, truth_src)):
        if not isinstance(doc, dict):
            raise DataError("expected a JSON object keyed by PMID", path=s)
    pmids = list(truth) if split == "test" else [p for p in data if p not in truth]

    def records() -> Iterator[tuple[_Row, Any]]:
        for index, pmid in enumerate(pmids):
            row = _Row(src, None, index, field_prefix=f"{pmid}.")
            missing = row.error(None, f"PMID {pmid} of {truth_src} is missing")
            yield row, (pmid, data[pmid]) if pmid in data else missing

    def parse(row: _Row, pmid_rec: tuple[str, Any]) -> MCItem:
        pmid, rec = pmid_rec
        decision = _get(row, rec, "final_decision")
        if split == "test" and truth[pmid] != decision:
            raise row.error("final_decision", f"{decision!r} disagrees with test_ground_truth.json ({truth[pmid]!r})")
        contexts = _get(row, rec, "CONTEXTS")
        if not isinstance(contexts, list) or not contexts:
            raise row.error("CONTEXTS", "expected a non-empty list of passages")
        return MCItem(
            id=pmid,
            question=_text(row, _get(row, rec, "QUESTION"), "QUESTION"),
            options=_PUBMEDQA_OPTIONS,
            gold=_gold_label(row, decision, _PUBMEDQA_OPTIONS, "final_decision"),
            context="\n".join(_text(row, c, f"CONTEXTS[{k}]") for k, c in enumerate(contexts)),
            source="pubmedqa",
        )

    return _parsed(records(), parse)


_LOGIQA_LINES = ("separator", "answer", "context", "question", "option A", "option B", "option C", "option D")
_LOGIQA_LABEL = re.compile(r"^\s*([A-Da-d])(?:\s*[.?．:：]\s*|\s+)")


def _logiqa_options(row: _Row, lines: Sequence[str]) -> list[tuple[str, str]]:
    """The four option lines, label prefixes removed.

    Some blocks list options in the order A, C, B, D (a two-column layout read column-wise); the
    answer letter refers to the printed label, so when all four lines carry distinct labels the
    options are ordered by label. Otherwise (translation artefacts such as "In the B.NEC ...")
    the position decides, and a stray mid-text "B." label of that position is removed.
    """
    labels = [m.group(1).upper() if (m := _LOGIQA_LABEL.match(s)) else None for s in lines]
    if sorted(x or "" for x in labels) == list("ABCD"):
        by_label = {lab: _LOGIQA_LABEL.sub("", s, count=1) for lab, s in zip(labels, lines)}
        return [(f"option {c}", by_label[c]) for c in "ABCD"]
    out = []
    for k, s in enumerate(lines):
        c = "ABCD"[k]
        if labels[k] == c:
            s = _LOGIQA_LABEL.sub("", s, count=1)
        elif len(hits := list(re.finditer(rf"(?<![A-Za-z]){c}\.", s))) == 1:
            s = s[: hits[0].start()] + s[hits[0].end() :]
        out.append((f"option {c}", s))
    return out


def _load_logiqa(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """LogiQA text: 8-line blocks (blank, answer a-d, context, question, four options)."""
    src = f"logiqa/{split.capitalize()}.txt"
    lines = [s.rstrip("\r") for s in _read_text(root / src, src).split("\n")]
    if lines and not lines[-1].strip() and len(lines) % 8 == 1:
        lines.pop()  # trailing newline at end of file

    def records() -> Iterator[tuple[_Row, Any]]:
        for index, start in enumerate(range(0, len(lines), 8)):
            yield _Row(src, start + 1, index), lines[start : start + 8]

    def parse(row: _Row, block: list[str]) -> MCItem:
        first = row.line or 1
        at = lambda k: replace(row, line=first + k)  # noqa: E731  (row positioned at block line k)
        if len(block) < 8:
            what = f"missing (incomplete block: {len(block)} of 8 lines)"
            raise at(len(block)).error(_LOGIQA_LINES[len(block)], what)
        if block[0].strip():
            raise at(0).error(None, f"expected a blank separator line, got {block[0][:40]!r}")
        pairs = _logiqa_options(at(4), block[4:8])
        options = tuple(_text(at(4 + k), v, name) for k, (name, v) in enumerate(pairs))
        return MCItem(
            id=f"logiqa:{split}:{row.index}",
            question=_text(at(3), block[3], "question"),
            options=options,
            gold=_gold_label(at(1), block[1].strip().upper(), "ABCD", "answer"),
            context=_text(at(2), block[2], "context"),
            source="logiqa",
        )

    return _parsed(records(), parse)


def _load_cosmosqa(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    src = "cosmosqa/valid.csv"

    def parse(row: _Row, rec: dict[str, str]) -> MCItem:
        pairs = [(f"answer{k}", _get(row, rec, f"answer{k}")) for k in range(4)]
        return MCItem(
            id=_text(row, _get(row, rec, "id"), "id"),
            question=_text(row, _get(row, rec, "question"), "question"),
            options=_options(row, pairs, "answers"),
            gold=_gold_int(row, _get(row, rec, "label"), 4, "label"),
            context=_text(row, _get(row, rec, "context"), "context"),
            source="cosmosqa",
        )

    return _parsed(_table_records(root / src, src, delimiter=","), parse)


def _load_piqa(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """PIQA: JSONL of goal/sol1/sol2 plus a line-aligned label file (0/1 per line)."""
    src, labels_src = "piqa/dev.jsonl", "piqa/dev-labels.lst"
    records = list(_jsonl_records(root / src, src))
    labels = _read_text(root / labels_src, labels_src).split("\n")
    if labels and not labels[-1].strip():
        labels.pop()
    if len(labels) != len(records):
        what = f"{len(labels)} labels for {len(records)} questions in {src} (files must be line-aligned)"
        raise DataError(what, path=labels_src)

    def parse(row: _Row, rec: Any) -> MCItem:
        label_row = _Row(labels_src, row.index + 1, row.index)
        return MCItem(
            id=_text(row, _get(row, rec, "id"), "id"),
            question=_text(row, _get(row, rec, "goal"), "goal"),
            options=_options(row, [(k, _get(row, rec, k)) for k in ("sol1", "sol2")], "sol1/sol2"),
            gold=_gold_int(label_row, labels[row.index].strip(), 2, "label"),
            source="piqa",
        )

    return _parsed(records, parse)


BOOLQ_OPTIONS = ("true", "false")  # gold 0 = "true", 1 = "false"


def _load_boolq(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """BoolQ: options ("true", "false") in that order, answered as words; context = passage."""
    src = "boolq/val.jsonl"

    def parse(row: _Row, rec: Any) -> MCItem:
        label = _get(row, rec, "label")
        label = str(label).lower() if isinstance(label, bool) else label  # SuperGLUE uses JSON booleans
        return MCItem(
            id=_text(row, _get(row, rec, "idx"), "idx"),
            question=_text(row, _get(row, rec, "question"), "question"),
            options=BOOLQ_OPTIONS,
            gold=_gold_label(row, label, BOOLQ_OPTIONS, "label"),
            context=_text(row, _get(row, rec, "passage"), "passage"),
            source="boolq",
            answer_format="boolean",
        )

    return _parsed(_jsonl_records(root / src, src), parse)


def _winogrande_blank(row: _Row, first: Any, second: Any, continuation: Any) -> tuple[str, tuple[str, str]]:
    """Rebuild the ``_``-blank sentence and the two fillers from llm_foundry's
    ``context_options`` (prefix + filler) and ``continuation``.

    The fillers start after the common prefix, backed off to a word boundary (so "home"/"house"
    are not split after "ho").
    """
    a = _text(row, first, "context_options[0]")
    b = _text(row, second, "context_options[1]")
    rest = _text(row, continuation, "continuation")
    p = len(os.path.commonprefix([a, b]))
    while p > 0 and a[p - 1].isalnum():
        p -= 1
    fillers = (a[p:].strip(), b[p:].strip())
    if not all(fillers) or fillers[0] == fillers[1]:
        raise row.error("context_options", f"cannot find two different fillers in {a!r} / {b!r}")
    joiner = "" if rest[0] in ".,;:!?'’)" else " "
    return f"{a[:p]}_{joiner}{rest}", fillers


def _load_winogrande(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """WinoGrande dev (llm_foundry copy); gold is cross-checked against the official dev-labels.lst."""
    src, labels_src = "winogrande/llm_foundry/winogrande.jsonl", "winogrande/dev-labels.lst"
    records = list(_jsonl_records(root / src, src))
    labels = _read_text(root / labels_src, labels_src).split()
    if len(labels) != len(records):
        raise DataError(f"{len(labels)} labels for {len(records)} questions in {src}", path=labels_src)

    def parse(row: _Row, rec: Any) -> MCItem:
        opts = _get(row, rec, "context_options")
        if not isinstance(opts, list) or len(opts) != 2:
            raise row.error("context_options", "expected a list of 2 strings")
        question, fillers = _winogrande_blank(row, opts[0], opts[1], _get(row, rec, "continuation"))
        gold = _gold_int(row, _get(row, rec, "gold"), 2, "gold")
        if labels[row.index] != str(gold + 1):
            what = f"{gold} disagrees with {labels_src} line {row.index + 1} ({labels[row.index]!r}, 1-based)"
            raise row.error("gold", what)
        return MCItem(
            id=f"winogrande:{split}:{row.index}", question=question, options=fillers, gold=gold, source="winogrande"
        )

    return _parsed(records, parse)


def _answers(row: _Row, value: Any, field: str) -> tuple[str, ...]:
    """Gold aliases: a non-empty list of texts (or one text), duplicates removed in order."""
    values = value if isinstance(value, list) else [value]
    out = tuple(dict.fromkeys(_text(row, v, f"{field}[{k}]") for k, v in enumerate(values)))
    if not out:
        raise row.error(field, "no answers")
    return out


def _load_triviaqa(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """llm_foundry TriviaQA subset; the "Question: ... \\nAnswer:" wrapper is removed."""
    src = "triviaqa/llm_foundry/triviaqa_sm_sub.jsonl"

    def parse(row: _Row, rec: Any) -> OpenItem:
        q = _text(row, _get(row, rec, "context"), "context")
        q = re.sub(r"\s*Answer:\s*$", "", re.sub(r"^Question:\s*", "", q))
        answer = _text(row, _get(row, rec, "answer"), "answer")
        return OpenItem(
            id=f"triviaqa:{split}:{row.index}",
            question=_text(row, q, "context"),
            answers=_answers(row, [answer, *(rec.get("aliases") or [])], "aliases"),
            source="triviaqa",
        )

    return _parsed(_jsonl_records(root / src, src), parse)


_NQ_FILES = {
    "dev": "NQ-open.dev.jsonl",
    "efficientqa-dev": "NQ-open.efficientqa.dev.1.1.jsonl",
    "efficientqa-test": "NQ-open.efficientqa.test.1.1.jsonl",
}


def _load_nq_open(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    src = f"nq_open/{_NQ_FILES[split]}"

    def parse(row: _Row, rec: Any) -> OpenItem:
        return OpenItem(
            id=f"nq-open:{split}:{row.index}",
            question=_text(row, _get(row, rec, "question"), "question"),
            answers=_answers(row, _get(row, rec, "answer"), "answer"),
            source="nq-open",
        )

    return _parsed(_jsonl_records(root / src, src), parse)


def _eq_relations(root: Path, split: str) -> list[str]:
    suffix = f".{split}.json"
    names = [p.name[: -len(suffix)] for p in (root / "entity_questions" / "dataset" / split).glob(f"P*{suffix}")]
    return sorted(names, key=lambda r: int(r[1:]) if r[1:].isdigit() else 0)


def _load_entity_questions(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """EntityQuestions: one JSON list per Wikidata relation; ``subject`` = relation id (e.g. "P19")."""
    for rel in subsets or _eq_relations(root, split):
        src = f"entity_questions/dataset/{split}/{rel}.{split}.json"
        doc = _json_value(root / src, src)
        if not isinstance(doc, list):
            raise DataError("expected a JSON list of {question, answers}", path=src)

        def parse(row: _Row, rec: Any, rel: str = rel) -> OpenItem:
            return OpenItem(
                id=f"entity-questions/{rel}:{split}:{row.index}",
                question=_text(row, _get(row, rec, "question"), "question"),
                answers=_answers(row, _get(row, rec, "answers"), "answers"),
                source="entity-questions",
                subject=rel,
            )

        yield from _parsed(((_Row(src, None, i, f"[{i}]."), rec) for i, rec in enumerate(doc)), parse)


# --------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class DatasetInfo:
    """One registry entry: valid splits, default split, few-shot pool preference and loader."""

    name: str
    splits: tuple[str, ...]
    default_split: str
    loader: _Loader = field(repr=False)
    kind: str = "mc"  # "mc" -> MCItem, "open" -> OpenItem
    pool_splits: tuple[str, ...] = ()  # exemplar pool: the first of these that is not the eval split
    subsets: Callable[[Path, str], list[str]] | None = field(default=None, repr=False)
    unavailable: Mapping[str, str] = field(default_factory=dict)  # split -> why it cannot be loaded
    description: str = ""


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("mmlu", ("dev", "val", "test"), "test", _load_mmlu, pool_splits=("dev", "val"),
                    subsets=_mmlu_subjects, description="MMLU, 57 subjects (mmlu/SUBJECT[,SUBJECT]:split)"),
        DatasetInfo("arc-easy", ("train", "dev", "test"), "test", _arc("easy"), pool_splits=("train", "dev"),
                    description="AI2 ARC Easy"),
        DatasetInfo("arc-challenge", ("train", "dev", "test"), "test", _arc("challenge"),
                    pool_splits=("train", "dev"), description="AI2 ARC Challenge"),
        DatasetInfo("openbookqa", ("train", "dev", "test"), "test", _load_openbookqa, pool_splits=("train", "dev"),
                    description="OpenBookQA Main"),
        DatasetInfo("commonsenseqa", ("train", "dev"), "dev", _load_commonsenseqa, pool_splits=("train",),
                    unavailable={"test": "the CommonsenseQA test split has no public answers; use commonsenseqa:dev "
                                         "(the standard evaluation split)"},
                    description="CommonsenseQA (random split)"),
        DatasetInfo("sciq", ("test",), "test", _load_sciq, description="SciQ test"),
        DatasetInfo("medmcqa", ("dev",), "dev", _load_medmcqa, description="MedMCQA dev"),
        DatasetInfo("pubmedqa", ("train", "test"), "test", _load_pubmedqa, pool_splits=("train",),
                    description="PubMedQA PQA-L, yes/no/maybe with context"),
        DatasetInfo("logiqa", ("eval", "test"), "test", _load_logiqa, pool_splits=("eval", "test"),
                    description="LogiQA (English) with context"),
        DatasetInfo("cosmosqa", ("dev",), "dev", _load_cosmosqa, description="Cosmos QA dev with context"),
        DatasetInfo("piqa", ("dev",), "dev", _load_piqa, description="PIQA validation"),
        DatasetInfo("boolq", ("val",), "val", _load_boolq, description="BoolQ validation (true/false words)"),
        DatasetInfo("winogrande", ("dev",), "dev", _load_winogrande, description="WinoGrande v1.1 dev"),
        DatasetInfo("triviaqa", ("test",), "test", _load_triviaqa, kind="open",
                    description="TriviaQA 3k subset (open QA)"),
        DatasetInfo("nq-open", ("dev", "efficientqa-dev", "efficientqa-test"), "dev", _load_nq_open, kind="open",
                    pool_splits=("efficientqa-dev", "dev"), description="Natural Questions Open (open QA)"),
        DatasetInfo("entity-questions", ("dev", "test"), "test", _load_entity_questions, kind="open",
                    pool_splits=("dev", "test"), subsets=_eq_relations,
                    description="EntityQuestions (open QA; entity-questions/P19:test)"),
    )
}
_ALIASES = {"obqa": "openbookqa", "csqa": "commonsenseqa", "nq": "nq-open"}
_SPLIT_ALIASES = {"val": ("dev",), "dev": ("val",), "validation": ("val", "dev"), "valid": ("val", "dev")}


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The shared data directory: ``explicit``, else ``$CALIBTUNE_DATA_DIR``; an error says how to set it."""
    value = explicit if explicit is not None else os.environ.get(ENV_VAR)
    if not value:
        raise DataError(f"no data directory: pass data_dir=... or set {ENV_VAR}=/path/to/shared/data")
    path = Path(value).expanduser()
    if not path.is_dir():
        origin = "data_dir" if explicit is not None else ENV_VAR
        raise DataError(f"data directory {str(path)!r} (from {origin}) does not exist")
    return path


_data_dir = data_dir  # load_dataset's ``data_dir`` argument shadows the function


def _valid_names() -> str:
    return ", ".join(f"{n}:{'|'.join(i.splits)}" for n, i in DATASETS.items())


def _resolve(spec: str) -> tuple[DatasetInfo, tuple[str, ...] | None, str]:
    """Parse ``NAME[/SUBSET,...][:SPLIT]`` into (info, subsets or None, canonical split)."""
    head, _, split = spec.strip().partition(":")
    base, _, subset = head.partition("/")
    key = base.strip().lower().replace("_", "-")
    info = DATASETS.get(_ALIASES.get(key, key))
    if info is None:
        raise DataError(
            f"unknown data set {base!r} in spec {spec!r}; valid: {_valid_names()} (or a file path, or hf:OWNER/NAME)"
        )
    split = split.strip().lower() or info.default_split
    if split in info.unavailable:
        raise DataError(info.unavailable[split])
    if split not in info.splits:
        alias = next((a for a in _SPLIT_ALIASES.get(split, ()) if a in info.splits), None)
        if alias is None:
            raise DataError(f"{info.name} has no split {split!r}; valid: {', '.join(info.splits)}")
        split = alias
    subsets = None
    if subset:
        if info.subsets is None:
            raise DataError(f"{info.name} has no subsets (got {subset!r} in spec {spec!r})")
        subsets = tuple(s.strip() for s in subset.split(",") if s.strip())
    return info, subsets, split


def _check_subsets(info: DatasetInfo, root: Path, split: str, subsets: tuple[str, ...] | None) -> None:
    if subsets is None or info.subsets is None:
        return
    valid = info.subsets(root, split)
    bad = [s for s in subsets if s not in valid]
    if bad:
        what = f"unknown {info.name} subset(s) {', '.join(bad)} for split {split!r}; valid: {', '.join(valid)}"
        raise DataError(what)


def _canonical(info: DatasetInfo, subsets: tuple[str, ...] | None, split: str) -> str:
    return f"{info.name}{'/' + ','.join(subsets) if subsets else ''}:{split}"


# --------------------------------------------------------------------------------------------
# Generic files and the Hugging Face hub

_FIELD_NAMES = ("id", "question", "options", "gold", "context", "subject", "answers")
_GOLD_DEFAULTS = ("answer", "label", "gold")


def _is_file_spec(spec: str) -> bool:
    s = spec.strip()
    return s.lower().endswith(FILE_SUFFIXES) or s.startswith(("./", "../", "/", "~"))


def _list_value(row: _Row, value: Any, field: str) -> list[Any]:
    """A list, or a string holding a JSON/Python list literal (CSV cells)."""
    if isinstance(value, str):
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(value)
                break
            except (ValueError, SyntaxError, RecursionError, MemoryError):
                continue
    if not isinstance(value, (list, tuple)):
        raise row.error(field, f"expected a list of option texts, got {str(value)[:60]!r}")
    return list(value)


def _generic_item(row: _Row, rec: Any, fields: Mapping[str, str], source: str, stem: str) -> Item:
    """One generic record (JSON object or CSV row) -> MCItem, or OpenItem when it has answers but no options."""
    if not isinstance(rec, Mapping):
        raise row.error(None, f"expected an object, got {type(rec).__name__}")

    def col(name: str) -> str:
        """Our field name -> the file's column name."""
        return fields.get(name, name)

    def optional(name: str) -> str | None:
        value = rec.get(col(name))
        return None if value in (None, "") else _text(row, value, col(name))

    item_id = optional("id") or f"{stem}:{row.index}"
    question = _text(row, _get(row, rec, col("question")), col("question"))

    if "options" in fields and "," in fields["options"]:
        pairs = [(c.strip(), _get(row, rec, c.strip())) for c in fields["options"].split(",")]
    elif "options" in fields or "options" in rec or "choices" in rec:
        key = fields.get("options") or ("options" if "options" in rec else "choices")
        values = _list_value(row, _get(row, rec, key), key)
        pairs = [(f"{key}[{k}]", v) for k, v in enumerate(values)]
    elif "A" in rec and "B" in rec:
        pairs = [(c, rec[c]) for c in itertools.takewhile(lambda c: c in rec, LETTERS)]
    elif col("answers") in rec:
        answers = _answers(row, _list_or_text(rec[col("answers")]), col("answers"))
        return OpenItem(id=item_id, question=question, answers=answers, source=source, subject=optional("subject"))
    else:
        what = "missing (expected a list column 'options'/'choices', columns A, B, ..., or 'answers')"
        raise row.error(col("options"), what)
    options = _options(row, pairs, fields.get("options", "options"))

    gold_key = fields.get("gold") or next((k for k in _GOLD_DEFAULTS if k in rec), None)
    if gold_key is None:
        raise row.error("gold", f"missing (looked for {', '.join(_GOLD_DEFAULTS)}; map it with fields={{'gold': ...}})")
    return MCItem(
        id=item_id,
        question=question,
        options=options,
        gold=_gold_any(row, _get(row, rec, gold_key), options, gold_key),
        context=optional("context"),
        subject=optional("subject"),
        source=source,
    )


def _list_or_text(value: Any) -> Any:
    """Answers cell: a JSON list string becomes a list; plain text stays one alias."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _check_fields(fields: Mapping[str, str] | None) -> dict[str, str]:
    fields = dict(fields or {})
    unknown = [k for k in fields if k not in _FIELD_NAMES]
    if unknown:
        raise DataError(f"unknown key(s) {unknown} in fields; valid: {', '.join(_FIELD_NAMES)}")
    return fields


def _load_file(spec: str, fields: Mapping[str, str]) -> Iterator[_Parsed]:
    path = Path(spec.strip()).expanduser()
    src = str(spec.strip())
    if not path.is_file():
        raise DataError(f"file not found ({path.resolve()})", path=src)
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise DataError(f"unsupported file type {suffix!r}; use one of {', '.join(FILE_SUFFIXES)}", path=src)
    parse = functools.partial(_generic_item, fields=fields, source=path.stem, stem=path.stem)
    if suffix == ".jsonl":
        records: Iterable[tuple[_Row, Any]] = _jsonl_records(path, src)
    elif suffix == ".json":
        doc = _json_value(path, src)
        if not isinstance(doc, list):
            raise DataError("expected a JSON list of objects (use .jsonl for one object per line)", path=src)
        records = ((_Row(src, None, i, f"[{i}]."), rec) for i, rec in enumerate(doc))
    else:
        records = _table_records(path, src, delimiter="\t" if suffix == ".tsv" else ",")
    return _parsed(records, parse)


def _flatten(rec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``rec`` plus a dotted key for every nested field (``choices.text``), so ``fields`` can name them."""
    out: dict[str, Any] = {}
    for key, value in rec.items():
        out[f"{prefix}{key}"] = value
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
    return out


def _hf_table(repo: str, split: str) -> Any:
    """One split as a ``datasets.Dataset``: a folder written by ``save_to_disk`` is read with
    ``load_from_disk``; anything else (a hub id, a local folder or loading script) with ``load_dataset``."""
    try:
        import datasets  # noqa: PLC0415  (optional, heavy)
    except ImportError:
        raise DataError("hf: specs need the Hugging Face 'datasets' package: pip install 'calibtune[hub]'") from None
    folder = Path(repo).expanduser()
    if folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()):
        try:
            saved = datasets.load_from_disk(str(folder))
        except Exception as exc:  # a damaged or incompatible folder
            raise DataError(f"cannot read the saved data set ({exc})", path=f"hf:{repo}") from exc
        if isinstance(saved, datasets.DatasetDict):
            if split not in saved:
                raise DataError(f"no split {split!r}; the saved data set has {', '.join(saved)}", path=f"hf:{repo}")
            return saved[split]
        return saved
    try:
        return datasets.load_dataset(repo, split=split)
    except Exception as exc:  # network, missing repo/split, ...: report with the spec
        raise DataError(f"cannot load {repo!r} split {split!r} with datasets.load_dataset: {exc}") from exc


def _load_hf(spec: str, fields: Mapping[str, str]) -> tuple[str, Iterator[_Parsed]]:
    """``hf:OWNER/NAME[:SPLIT]`` (or ``hf:FOLDER[:SPLIT]``, a local or ``save_to_disk`` folder) via the
    optional ``datasets`` package (default split: test). Nested columns are named with dots (``choices.text``)."""
    repo, _, split = spec.strip()[3:].partition(":")
    split = split or "test"
    if not fields:
        raise DataError(f"{spec}: name its columns with --field question=COLUMN --field options=COLUMN "
                        "--field gold=COLUMN (fields={'question': ..., 'options': ..., 'gold': ...} in Python)")
    table = _hf_table(repo, split)
    src = f"hf:{repo}:{split}"
    records = ((_Row(src, None, i, f"[{i}]."), _flatten(rec)) for i, rec in enumerate(table))
    return src, _parsed(records, lambda row, rec: _generic_item(row, rec, fields, f"hf:{repo}", f"{repo}:{split}"))


def takes_fields(spec: str) -> bool:
    """Whether ``spec`` names a file or an ``hf:`` data set, whose columns ``fields`` may map."""
    spec, _ = _split_slice(spec)
    return spec.strip().startswith("hf:") or _is_file_spec(spec)


def parse_fields(pairs: Iterable[str]) -> dict[str, str]:
    """``["question=q", "options=choices.text"]`` (the CLI's ``--field``) -> ``{"question": "q", ...}``, checked."""
    fields: dict[str, str] = {}
    for pair in pairs:
        key, sep, column = pair.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise DataError(f"--field {pair!r}: expected KEY=COLUMN, e.g. question=query")
        if key.strip() in fields:
            raise DataError(f"--field {pair!r}: {key.strip()!r} is mapped twice")
        fields[key.strip()] = column.strip()
    return _check_fields(fields)


# --------------------------------------------------------------------------------------------
# Public entry points


def _collect(rows: Iterable[_Parsed], skip_invalid: bool) -> tuple[list[Item], int]:
    """Items in order; bad rows and duplicate ids raise, or are counted when ``skip_invalid``."""
    items: list[Item] = []
    seen: dict[str, _Row] = {}
    skipped = 0
    for row, value in rows:
        if isinstance(value, (MCItem, OpenItem)) and value.id in seen:
            first = seen[value.id]
            where = first.src if first.line is None else f"{first.src}, line {first.line}"
            value = row.error("id", f"duplicate id {value.id!r} (first at {where})")
        if isinstance(value, DataError):
            if not skip_invalid:
                raise value
            skipped += 1
            continue
        seen[value.id] = row
        items.append(value)
    return items, skipped


def _subsample(items: list[Item], limit: int | None, seed: int) -> list[Item]:
    """A seeded random subset of ``limit`` items, in their original order."""
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise DataError(f"limit must be a positive number of items, got {limit}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
    return [items[i] for i in chosen]


def _item_rng(seed: int, item_id: str) -> np.random.Generator:
    """An rng that depends only on (seed, item id), not on position, limit or process."""
    digest = hashlib.sha256(f"{seed}\0{item_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def shuffle_item_options(item: MCItem, seed: int) -> MCItem:
    """``item`` with its options permuted by an rng derived from (seed, item.id); gold follows its text."""
    perm = _item_rng(seed, item.id).permutation(len(item.options))
    return replace(item, options=tuple(item.options[p] for p in perm), gold=int(np.flatnonzero(perm == item.gold)[0]))


_SLICE = re.compile(r"^(?P<spec>.*)\[(?P<lo>-?\d+%?)?:(?P<hi>-?\d+%?)?\](?:\((?P<mode>[^()]*)\))?$")
SLICE_MODES = ("shuffled",)


@dataclass(frozen=True)
class Slice:
    """A ``[lo:hi]`` part of a split, read as Hugging Face ``datasets`` reads ``split="test[lo:hi]"``.

    Bounds are row positions in file order (negative counts from the end) or percentages of the
    split (``[:80%]``, rounded to the closest row as ``datasets``' default ``rounding="closest"``).
    With ``shuffled`` (spec suffix ``(shuffled)``), the positions are taken in a fixed pseudo-random
    order of the split's items instead (seed 0, independent of the run's seed) and the chosen items
    kept in file order: the partition round-1 experiments used, unbiased by file order.
    """

    lo: str | None
    hi: str | None
    shuffled: bool = False

    def bounds(self, n: int) -> tuple[int, int]:
        """Absolute ``(start, stop)`` over ``n`` rows, clipped to ``[0, n]`` like ``datasets``."""

        def absolute(bound: str | None, default: int) -> int:
            if bound is None:
                return default
            value = round(int(bound[:-1]) * n / 100) if bound.endswith("%") else int(bound)
            return min(max(n + value, 0) if value < 0 else value, n)

        return absolute(self.lo, 0), absolute(self.hi, n)

    def __str__(self) -> str:
        return f"[{self.lo or ''}:{self.hi or ''}]" + ("(shuffled)" if self.shuffled else "")


def _split_slice(spec: str) -> tuple[str, Slice | None]:
    """``boolq:val[0:300]`` -> (``boolq:val``, the slice); ``(shuffled)`` after the brackets selects the
    fixed pseudo-random partition (:class:`Slice`)."""
    m = _SLICE.match(spec.strip())
    if not m:
        return spec, None
    lo, hi, mode = m["lo"], m["hi"], m["mode"]
    if mode is not None and mode.strip() not in SLICE_MODES:
        raise DataError(f"{spec}: unknown slice mode ({mode}); valid: {', '.join(f'({s})' for s in SLICE_MODES)}")
    if lo and hi and lo.endswith("%") != hi.endswith("%"):
        raise DataError(f"{spec}: both slice bounds must be row numbers or both percentages, got [{lo}:{hi}]")
    if any(b and b.endswith("%") and abs(int(b[:-1])) > 100 for b in (lo, hi)):
        raise DataError(f"{spec}: percentage slice bounds must lie in [-100%, 100%], got [{lo or ''}:{hi or ''}]")
    if lo and hi and not lo.startswith("-") and not hi.startswith("-") and int(hi.rstrip("%")) <= int(lo.rstrip("%")):
        raise DataError(f"{spec}: empty slice [{lo}:{hi}]")
    return m["spec"], Slice(lo, hi, shuffled=mode is not None)


def _slice_rows(rows: Iterable[_Parsed], part: Slice) -> list[_Parsed]:
    """The records at positions ``part.bounds`` of the file (before validation, as ``datasets`` counts rows)."""
    rows = list(rows)
    start, stop = part.bounds(len(rows))
    return rows[start:stop]


def _slice_partition(items: list, part: Slice) -> list:
    """The items at positions ``lo:hi`` of a fixed pseudo-random order (seed 0, independent of the run's
    seed), kept in file order: slices of one split never overlap and are not biased by file order."""
    order = np.random.default_rng(0).permutation(len(items))
    start, stop = part.bounds(len(items))
    chosen = set(order[start:stop].tolist())
    return [it for i, it in enumerate(items) if i in chosen]


def load_dataset(
    spec: str,
    *,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
    shuffle_options: bool = False,
    skip_invalid: bool = False,
    fields: Mapping[str, str] | None = None,
) -> Dataset:
    """Load and validate the data set named by ``spec`` (see the module docstring).

    Generic files (``.jsonl`` one object per line, ``.json`` a list of objects, ``.csv``, ``.tsv``)
    use the fields ``question``, ``options`` (a list, a JSON-list cell, or columns ``A``, ``B``, ...),
    gold from ``gold``/``answer``/``label`` (0-based int, letter, or the option text), and optional
    ``id``, ``context``, ``subject``; a record with ``answers`` and no options becomes an OpenItem.
    ``fields`` maps these names to the file's columns, e.g. ``{"question": "q", "gold": "answer"}``,
    or ``{"options": "A,B,C,D"}`` for option columns.

    A trailing ``[lo:hi]`` takes rows ``lo`` to ``hi`` in file order, as ``datasets`` reads
    ``split="dev[lo:hi]"`` (``[:200]``, ``[-100:]``, ``[:80%]``; see :class:`Slice`);
    ``[lo:hi](shuffled)`` takes them in a fixed, seed-independent pseudo-random order instead, so
    ``[0:400](shuffled)`` and ``[400:](shuffled)`` are disjoint and not biased by file order.
    ``limit`` keeps a seeded random subset in original order; ``shuffle_options`` permutes each
    item's options with an rng derived from (seed, item id). ``skip_invalid`` skips bad rows and
    counts them in ``n_skipped`` instead of raising.
    """
    fields = _check_fields(fields)
    if "+" in str(spec) and not _is_file_spec(str(spec)):
        return _load_mixture(str(spec), data_dir=data_dir, limit=limit, seed=seed, shuffle_options=shuffle_options,
                             skip_invalid=skip_invalid)
    spec, part = _split_slice(str(spec))
    if spec.strip().startswith("hf:"):
        name, rows = _load_hf(spec, fields)
    elif _is_file_spec(spec):
        name, rows = spec.strip(), _load_file(spec, fields)
    else:
        if fields:
            raise DataError(f"fields apply only to file and hf: specs, not to the registered data set {spec!r}")
        info, subsets, split = _resolve(spec)
        root = _data_dir(data_dir)
        _check_subsets(info, root, split, subsets)
        name, rows = _canonical(info, subsets, split), info.loader(root, split, subsets)
    if part is not None and not part.shuffled:
        rows = _slice_rows(rows, part)
    items, skipped = _collect(rows, skip_invalid)
    if part is not None:
        items = _slice_partition(items, part) if part.shuffled else items
        name = f"{name}{part}"
    if not items:
        raise DataError(f"{name}: no items" + (f" ({skipped} invalid rows skipped)" if skipped else ""))
    items = _subsample(items, limit, seed)
    if shuffle_options:
        items = [shuffle_item_options(it, seed) if isinstance(it, MCItem) else it for it in items]
    return Dataset(name=name, items=tuple(items), n_skipped=skipped)


def _load_mixture(spec: str, *, data_dir, limit: int | None, seed: int, shuffle_options: bool,
                  skip_invalid: bool) -> Dataset:
    """``a+b+c``: the items of several specs together (e.g. a training mixture of MMLU, MedMCQA and
    OpenBookQA slices), ids kept unique; ``limit`` then samples from the union."""
    parts = [load_dataset(part.strip(), data_dir=data_dir, shuffle_options=shuffle_options, seed=seed,
                          skip_invalid=skip_invalid) for part in spec.split("+")]
    items: list = []
    seen: set[str] = set()
    for part in parts:
        for it in part.items:
            if it.id in seen:
                raise DataError(f"{spec}: item id {it.id!r} appears in more than one part of the mixture")
            seen.add(it.id)
            items.append(it)
    items = _subsample(items, limit, seed)
    return Dataset(name="+".join(p.name for p in parts), items=tuple(items), n_skipped=sum(p.n_skipped for p in parts))


def exemplar_pool(spec: str, *, data_dir: str | os.PathLike | None = None) -> Dataset | None:
    """Items to draw few-shot exemplars from for ``spec``: another labelled split of the same data
    set (and same subsets), e.g. MMLU dev for MMLU test, ARC/OBQA/CSQA train; ``None`` when the
    data set has no other labelled split (and for file / hf: specs)."""
    if "+" in spec or spec.strip().startswith("hf:") or _is_file_spec(spec):
        return None
    spec, _ = _split_slice(spec)  # a slice of a split draws exemplars like its whole split
    info, subsets, split = _resolve(spec)
    pool = next((s for s in info.pool_splits if s != split), None)
    if pool is None:
        return None
    return load_dataset(_canonical(info, subsets, pool), data_dir=data_dir)
