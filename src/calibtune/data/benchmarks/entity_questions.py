"""EntityQuestions (open QA): one JSON list per Wikidata relation (``entity-questions/P19:test``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..items import DataError, OpenItem, _answers, _get, _parsed, _Parsed, _Row, _text
from ..readers import _json_value
from ..registry import register_benchmark


def _eq_relations(root: Path, split: str) -> list[str]:
    suffix = f".{split}.json"
    names = [p.name[: -len(suffix)] for p in (root / "entity_questions" / "dataset" / split).glob(f"P*{suffix}")]
    return sorted(names, key=lambda r: int(r[1:]) if r[1:].isdigit() else 0)


@register_benchmark("entity-questions", splits=("dev", "test"), default_split="test", kind="open",
                    pool_splits=("dev", "test"), subsets=_eq_relations,
                    description="EntityQuestions (open QA; entity-questions/P19:test)")
def _load_entity_questions(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """EntityQuestions: one JSON list per Wikidata relation; ``subject`` = relation id (e.g. "P19")."""
    for rel in subsets or _eq_relations(root, split):
        src = f"entity_questions/dataset/{split}/{rel}.{split}.json"
        doc = _json_value(root / src, src)
        if not isinstance(doc, list):
            raise DataError("expected a JSON list of {question, answers}", path=src)

        def parse(row: _Row, rec: Any, rel: str = rel) -> OpenItem:
            return OpenItem(
                id=f"entity-questions/{rel}:{split}:{row.index}",
                question=_text(row, _get(row, rec, "question"), "question"),
                answers=_answers(row, _get(row, rec, "answers"), "answers"),
                source="entity-questions",
                subject=rel,
            )

        yield from _parsed(((_Row(src, None, i, f"[{i}]."), rec) for i, rec in enumerate(doc)), parse)
