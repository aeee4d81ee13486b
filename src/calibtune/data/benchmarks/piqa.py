"""PIQA validation: JSONL of goal/sol1/sol2 plus a line-aligned label file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..items import DataError, MCItem, _get, _gold_int, _options, _parsed, _Parsed, _Row, _text
from ..readers import _jsonl_records, _read_text
from ..registry import register_benchmark


@register_benchmark("piqa", splits=("dev",), default_split="dev", description="PIQA validation")
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
