"""Generic data files (``.jsonl``/``.json``/``.csv``/``.tsv``) and ``hf:`` data sets, with field maps.

A generic record has the fields ``question``, ``options`` (a list, a JSON-list cell, or columns
``A``, ``B``, ...), a gold (``gold``/``answer``/``label``) and optional ``id``, ``context``,
``subject``; a record with ``answers`` and no options becomes an :class:`~calibtune.data.OpenItem`.
``fields`` maps these names to the file's own columns.
"""

from __future__ import annotations

import ast
import functools
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .items import (
    FILE_SUFFIXES,
    LETTERS,
    DataError,
    Item,
    MCItem,
    OpenItem,
    _answers,
    _get,
    _gold_any,
    _options,
    _parsed,
    _Parsed,
    _Row,
    _text,
)
from .readers import _json_value, _jsonl_records, _table_records

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
