"""Old import path of the comparison report: it now lives in :mod:`calibtune.grid.report`."""

from .grid.report import (
    COLUMNS,
    CSS,
    DELTA_COLUMNS,
    FIGURES_DIR,
    HIGHER_IS_BETTER,
    Block,
    Figure,
    Heading,
    Para,
    Pooled,
    Table,
    _collect,
    _curve_figure,
    _delta,
    _group_blocks,
    _html,
    _markdown,
    _md_bold,
    _md_cell,
    _mean_curve,
    _metric_fns,
    _order,
    _pool,
    _read_curve,
    _slug,
    write_report,
)

__all__ = ["write_report"]
