"""What the command line prints: verbatim consoles, the one ``error:`` line, metrics tables, notices."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["VERBATIM", "err", "fail", "metrics_table", "notices_to_stderr", "out"]

# User text (paths, data names, values) is printed verbatim: no rich markup, emoji codes or highlighting.
VERBATIM = {"markup": False, "emoji": False, "highlight": False}
err = Console(stderr=True, **VERBATIM)
out = Console(**VERBATIM)


def error_line(message: str) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


def fail(message: str) -> None:
    """Print one clear error (verbatim) and exit with code 2 (bad input)."""
    error_line(message)
    raise typer.Exit(code=2)


def metrics_table(rows: dict[str, dict], title: str = "") -> Table:
    """A rich table with one column per data set and one row per metric (fits a narrow terminal).

    >>> table = metrics_table({"arc": {"n": 3, "accuracy": 2 / 3, "ece": 0.25, "ece_ci": [0.1, 0.4]}})
    >>> [c.header for c in table.columns], table.row_count
    (['metric', 'arc'], 3)
    >>> list(table.columns[1].cells)
    ['3', '0.6667', '0.2500 [0.1000, 0.4000]']
    """
    from ..metrics import report_metrics

    keys = ["n", *report_metrics()]
    table = Table(title=title or None)
    table.add_column("metric")
    for name in rows:
        table.add_column(name, justify="right")
    for k in keys:
        if all(k not in m for m in rows.values()):
            continue
        cells = []
        for m in rows.values():
            v = m.get(k)
            text = "–" if v is None else (str(v) if isinstance(v, int) else f"{v:.4f}")
            ci = m.get(f"{k}_ci")
            if ci and None not in ci:
                text += f" [{ci[0]:.4f}, {ci[1]:.4f}]"
            cells.append(text)
        table.add_row(k, *cells)
    return table


class _NoticeHandler(logging.Handler):
    """The ``calibtune`` logger's notices (device, dtype, batch size, fallbacks) as lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(Text(record.getMessage(), style="yellow" if record.levelno >= logging.WARNING else "dim"),
                  soft_wrap=True)


def notices_to_stderr() -> None:
    logger = logging.getLogger("calibtune")
    if not any(isinstance(h, _NoticeHandler) for h in logger.handlers):
        logger.addHandler(_NoticeHandler())
    logger.setLevel(logging.INFO)
