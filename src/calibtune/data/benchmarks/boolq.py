"""BoolQ validation (JSONL): yes/no questions over a passage, answered with the words true/false."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..items import MCItem, _get, _gold_label, _parsed, _Parsed, _Row, _text
from ..readers import _jsonl_records
from ..registry import register_benchmark

BOOLQ_OPTIONS = ("true", "false")  # gold 0 = "true", 1 = "false"


@register_benchmark("boolq", splits=("val",), default_split="val", description="BoolQ validation (true/false words)")
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
