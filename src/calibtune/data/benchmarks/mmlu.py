"""MMLU: 57 subjects, one header-less CSV per subject and split (``mmlu/SUBJECT[,SUBJECT]:split``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..items import MCItem, _gold_label, _options, _parsed, _Parsed, _Row, _text
from ..readers import _table_records
from ..registry import register_benchmark


def _mmlu_subjects(root: Path, split: str) -> list[str]:
    suffix = f"_{split}.csv"
    return sorted(p.name[: -len(suffix)] for p in (root / "mmlu" / split).glob(f"*{suffix}"))


@register_benchmark("mmlu", splits=("dev", "val", "test"), default_split="test", pool_splits=("dev", "val"),
                    subsets=_mmlu_subjects, description="MMLU, 57 subjects (mmlu/SUBJECT[,SUBJECT]:split)")
def _load_mmlu(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """Header-less CSV per subject: question, A, B, C, D, answer letter."""
    columns = ("question", "A", "B", "C", "D", "answer")
    for subject in subsets or _mmlu_subjects(root, split):
        src = f"mmlu/{split}/{subject}_{split}.csv"

        def parse(row: _Row, rec: dict[str, str], subject: str = subject) -> MCItem:
            return MCItem(
                id=f"mmlu/{subject}:{split}:{row.index}",
                question=_text(row, rec["question"], "question"),
                options=_options(row, [(c, rec[c]) for c in "ABCD"], "options"),
                gold=_gold_label(row, rec["answer"].strip(), "ABCD", "answer"),
                subject=subject,
                source="mmlu",
            )

        yield from _parsed(_table_records(root / src, src, delimiter=",", columns=columns), parse)
