"""SciQ test (CSV), a pure field map."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..items import FieldMap, _parsed, _Parsed
from ..readers import _table_records
from ..registry import register_benchmark

_SCIQ_FIELDS = FieldMap(
    source="sciq",
    id="Question ID",
    question="Question",
    options=tuple(f"Option {c}" for c in "ABCD"),
    gold="Correct Answer Letter",
    gold_labels="ABCD",
)


@register_benchmark("sciq", splits=("test",), default_split="test", description="SciQ test")
def _load_sciq(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    src = "sciq/sciq_test_formatted.csv"
    return _parsed(_table_records(root / src, src, delimiter=","), _SCIQ_FIELDS)
