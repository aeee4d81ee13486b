"""WinoGrande v1.1 dev (llm_foundry copy), gold cross-checked against the official dev labels."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..items import DataError, MCItem, _get, _gold_int, _parsed, _Parsed, _Row, _text
from ..readers import _jsonl_records, _read_text
from ..registry import register_benchmark


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


@register_benchmark("winogrande", splits=("dev",), default_split="dev", description="WinoGrande v1.1 dev")
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
