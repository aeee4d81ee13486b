"""TriviaQA, llm_foundry's 3k subset (open QA, JSONL)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..items import OpenItem, _answers, _get, _parsed, _Parsed, _Row, _text
from ..readers import _jsonl_records
from ..registry import register_benchmark


@register_benchmark("triviaqa", splits=("test",), default_split="test", kind="open",
                    description="TriviaQA 3k subset (open QA)")
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
