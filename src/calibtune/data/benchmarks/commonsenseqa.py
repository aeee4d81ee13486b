"""CommonsenseQA, random split (JSONL, ARC's schema; alias ``csqa``); the test split has no public answers."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

from ..items import _parsed, _Parsed
from ..readers import _jsonl_records
from ..registry import register_benchmark
from .arc import _choices_item


@register_benchmark("commonsenseqa", splits=("train", "dev"), default_split="dev", pool_splits=("train",),
                    unavailable={"test": "the CommonsenseQA test split has no public answers; use commonsenseqa:dev "
                                         "(the standard evaluation split)"},
                    description="CommonsenseQA (random split)", aliases=("csqa",))
def _load_commonsenseqa(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    src = f"commonsenseqa/{split}_rand_split.jsonl"
    return _parsed(_jsonl_records(root / src, src), functools.partial(_choices_item, source="commonsenseqa"))
