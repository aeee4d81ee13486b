"""Markdown tables of metric rows, with bootstrap intervals where a row has them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub Markdown table of ``columns`` from ``rows``; intervals shown when ``<key>_ci`` exists."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            ci = r.get(f"{c}_ci")
            cell = _fmt(r.get(c))
            if ci and None not in ci:
                cell += f" [{ci[0]:.4f}, {ci[1]:.4f}]"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
