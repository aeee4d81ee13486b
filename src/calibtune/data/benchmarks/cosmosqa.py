"""Cosmos QA dev (CSV) with context.

Not a :class:`~calibtune.data.items.FieldMap`: the gold is an index, there is a context, and the
option columns are read before the id (the error a row with several problems reports depends on it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..items import MCItem, _get, _gold_int, _options, _parsed, _Parsed, _Row, _text
from ..readers import _table_records
from ..registry import register_benchmark


@register_benchmark("cosmosqa", splits=("dev",), default_split="dev", description="Cosmos QA dev with context")
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
