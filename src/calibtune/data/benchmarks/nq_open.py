"""Natural Questions Open and the EfficientQA dev/test sets (open QA, JSONL; alias ``nq``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..items import OpenItem, _answers, _get, _parsed, _Parsed, _Row, _text
from ..readers import _jsonl_records
from ..registry import register_benchmark

_NQ_FILES = {
    "dev": "NQ-open.dev.jsonl",
    "efficientqa-dev": "NQ-open.efficientqa.dev.1.1.jsonl",
    "efficientqa-test": "NQ-open.efficientqa.test.1.1.jsonl",
}


@register_benchmark("nq-open", splits=("dev", "efficientqa-dev", "efficientqa-test"), default_split="dev",
                    kind="open", pool_splits=("efficientqa-dev", "dev"), description="Natural Questions Open (open QA)",
                    aliases=("nq",))
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
