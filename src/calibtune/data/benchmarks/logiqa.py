"""LogiQA (English) text files: 8-line blocks of answer, context, question and four options."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..items import MCItem, _gold_label, _parsed, _Parsed, _Row, _text
from ..readers import _read_text
from ..registry import register_benchmark

_LOGIQA_LINES = ("separator", "answer", "context", "question", "option A", "option B", "option C", "option D")
_LOGIQA_LABEL = re.compile(r"^\s*([A-Da-d])(?:\s*[.?．:：]\s*|\s+)")


def _logiqa_options(row: _Row, lines: Sequence[str]) -> list[tuple[str, str]]:
    """The four option lines, label prefixes removed.

    Some blocks list options in the order A, C, B, D (a two-column layout read column-wise); the
    answer letter refers to the printed label, so when all four lines carry distinct labels the
    options are ordered by label. Otherwise (translation artefacts such as "In the B.NEC ...")
    the position decides, and a stray mid-text "B." label of that position is removed.
    """
    labels = [m.group(1).upper() if (m := _LOGIQA_LABEL.match(s)) else None for s in lines]
    if sorted(x or "" for x in labels) == list("ABCD"):
        by_label = {lab: _LOGIQA_LABEL.sub("", s, count=1) for lab, s in zip(labels, lines)}
        return [(f"option {c}", by_label[c]) for c in "ABCD"]
    out = []
    for k, s in enumerate(lines):
        c = "ABCD"[k]
        if labels[k] == c:
            s = _LOGIQA_LABEL.sub("", s, count=1)
        elif len(hits := list(re.finditer(rf"(?<![A-Za-z]){c}\.", s))) == 1:
            s = s[: hits[0].start()] + s[hits[0].end() :]
        out.append((f"option {c}", s))
    return out


@register_benchmark("logiqa", splits=("eval", "test"), default_split="test", pool_splits=("eval", "test"),
                    description="LogiQA (English) with context")
def _load_logiqa(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    """LogiQA text: 8-line blocks (blank, answer a-d, context, question, four options)."""
    src = f"logiqa/{split.capitalize()}.txt"
    lines = [s.rstrip("\r") for s in _read_text(root / src, src).split("\n")]
    if lines and not lines[-1].strip() and len(lines) % 8 == 1:
        lines.pop()  # trailing newline at end of file

    def records() -> Iterator[tuple[_Row, Any]]:
        for index, start in enumerate(range(0, len(lines), 8)):
            yield _Row(src, start + 1, index), lines[start : start + 8]

    def parse(row: _Row, block: list[str]) -> MCItem:
        first = row.line or 1
        at = lambda k: replace(row, line=first + k)  # noqa: E731  (row positioned at block line k)
        if len(block) < 8:
            what = f"missing (incomplete block: {len(block)} of 8 lines)"
            raise at(len(block)).error(_LOGIQA_LINES[len(block)], what)
        if block[0].strip():
            raise at(0).error(None, f"expected a blank separator line, got {block[0][:40]!r}")
        pairs = _logiqa_options(at(4), block[4:8])
        options = tuple(_text(at(4 + k), v, name) for k, (name, v) in enumerate(pairs))
        return MCItem(
            id=f"logiqa:{split}:{row.index}",
            question=_text(at(3), block[3], "question"),
            options=options,
            gold=_gold_label(at(1), block[1].strip().upper(), "ABCD", "answer"),
            context=_text(at(2), block[2], "context"),
            source="logiqa",
        )

    return _parsed(records(), parse)
