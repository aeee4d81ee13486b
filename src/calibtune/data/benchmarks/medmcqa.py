"""MedMCQA dev (JSONL); the ``"A. "`` label prefixes of the option strings are removed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..items import LETTERS, MCItem, _get, _gold_int, _options, _parsed, _Parsed, _Row, _text
from ..readers import _jsonl_records
from ..registry import register_benchmark


@register_benchmark("medmcqa", splits=("dev",), default_split="dev", description="MedMCQA dev")
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
