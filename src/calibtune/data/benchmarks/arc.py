"""AI2 ARC Easy and Challenge (JSONL), and the question/choices/answerKey schema CommonsenseQA shares."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..items import MCItem, _get, _gold_label, _options, _parsed, _Parsed, _Row, _text
from ..readers import _jsonl_records
from ..registry import _Loader, register_benchmark


def _choices_item(row: _Row, rec: Any, *, source: str) -> MCItem:
    """ARC / CommonsenseQA schema: question.stem, question.choices[{label,text}], answerKey."""
    question = _get(row, rec, "question")
    choices = _get(row, question, "choices") if isinstance(question, Mapping) else None
    if not isinstance(choices, list):
        raise row.error("question.choices", "expected a list of {label, text}")
    labels, pairs = [], []
    for k, choice in enumerate(choices):
        if not isinstance(choice, Mapping) or "label" not in choice or "text" not in choice:
            raise row.error(f"question.choices[{k}]", "expected an object with 'label' and 'text'")
        labels.append(str(choice["label"]).strip())
        pairs.append((f"question.choices[{k}].text", choice["text"]))
    if len(set(labels)) != len(labels):
        raise row.error("question.choices", f"duplicate option labels {labels}")
    options = _options(row, pairs, "question.choices")
    return MCItem(
        id=_text(row, _get(row, rec, "id"), "id"),
        question=_text(row, _get(row, question, "stem"), "question.stem"),
        options=options,
        gold=_gold_label(row, _get(row, rec, "answerKey"), labels, "answerKey"),
        source=source,
    )


def _arc(level: str) -> _Loader:
    def load(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
        """ARC JSONL (retrieved ``para`` fields are dropped: closed-book evaluation)."""
        src = f"arc/arc_{level}/official/{split}.jsonl"
        return _parsed(_jsonl_records(root / src, src), functools.partial(_choices_item, source=f"arc-{level}"))

    return load


register_benchmark("arc-easy", splits=("train", "dev", "test"), default_split="test", pool_splits=("train", "dev"),
                   description="AI2 ARC Easy")(_arc("easy"))
register_benchmark("arc-challenge", splits=("train", "dev", "test"), default_split="test",
                   pool_splits=("train", "dev"), description="AI2 ARC Challenge")(_arc("challenge"))
