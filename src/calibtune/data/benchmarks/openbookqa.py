"""OpenBookQA Main (TSV; alias ``obqa``): the options are one ``"(A) ... (D) ..."`` cell."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from ..items import LETTERS, MCItem, _get, _gold_label, _options, _parsed, _Parsed, _Row, _text
from ..readers import _table_records
from ..registry import register_benchmark


def _split_labelled(row: _Row, text: str, labels: str, field: str) -> list[tuple[str, str]]:
    """Split ``"(A) x (B) y ..."`` by searching the labels in order, so that a later repeated or
    embedded ``(X)`` stays part of the option text instead of creating a bogus option."""
    starts, pos = [], 0
    for k, label in enumerate(labels):
        marker = f"({label})"
        at = text.find(marker, pos) if k == 0 else text.find(f" {marker}", pos)
        if at < 0 or (k == 0 and text[:at].strip()):
            raise row.error(field, f"cannot find option marker {marker} in {text!r}")
        at += 0 if k == 0 else 1
        starts.append((label, at, at + len(marker)))
        pos = at + len(marker)
    ends = [s[1] for s in starts[1:]] + [len(text)]
    return [(f"{field} ({label})", text[body:end]) for (label, _, body), end in zip(starts, ends)]


@register_benchmark("openbookqa", splits=("train", "dev", "test"), default_split="test", pool_splits=("train", "dev"),
                    description="OpenBookQA Main", aliases=("obqa",))
def _load_openbookqa(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """OpenBookQA Main TSV: ID, Question Stem, Choices "(A) ... (D) ...", Complete Question, Answer Key."""
    src = f"openbookqa/Main/{split}.tsv"

    def parse(row: _Row, rec: dict[str, str]) -> MCItem:
        choices = _text(row, _get(row, rec, "Choices"), "Choices")
        labels = "".join(itertools.takewhile(lambda c: f"({c})" in choices, LETTERS))
        pairs = _split_labelled(row, choices, labels if len(labels) >= 2 else "AB", "Choices")
        return MCItem(
            id=_text(row, _get(row, rec, "ID"), "ID"),
            question=_text(row, _get(row, rec, "Question Stem"), "Question Stem"),
            options=_options(row, pairs, "Choices"),
            gold=_gold_label(row, _get(row, rec, "Answer Key"), LETTERS[: len(pairs)], "Answer Key"),
            source="openbookqa",
        )

    return _parsed(_table_records(root / src, src, delimiter="\t"), parse)
