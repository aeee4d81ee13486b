"""Figures and tables from metrics: reliability diagrams (PNG/SVG) and Markdown tables."""

from .figures import (
    Panel,
    plot_reliability,
    plot_smooth_reliability,
    reliability_diagram,
    reliability_grid,
    save_figure,
)
from .tables import _fmt, markdown_table

__all__ = [
    "Panel", "markdown_table", "plot_reliability", "plot_smooth_reliability", "reliability_diagram",
    "reliability_grid", "save_figure",
]
