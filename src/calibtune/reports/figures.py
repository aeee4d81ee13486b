"""Reliability diagrams, binned and smooth, one or many side by side, saved as PNG and SVG."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import numpy as np

from ..metrics import ReliabilityBins, SmoothReliability
from ..io import atomic_write


def _pyplot():
    """matplotlib's pyplot on the headless Agg backend, imported on first use (importing calibtune stays light)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panel_axes(ax_top, ax_bottom):
    """The figure and the two axes (diagram above, counts below) of one panel: new ones unless given."""
    if ax_top is not None:
        return ax_top.figure, ax_top, ax_bottom
    fig, (ax_top, ax_bottom) = _pyplot().subplots(2, 1, figsize=(4.8, 5.6), sharex=True,
                                                  gridspec_kw={"height_ratios": [3, 1]})
    return fig, ax_top, ax_bottom


def plot_reliability(bins: ReliabilityBins, *, ece: float, title: str = "", ax_top=None, ax_bottom=None):
    """Draw accuracy bars per bin, the gap to the diagonal, and a count histogram below."""
    fig, ax_top, ax_bottom = _panel_axes(ax_top, ax_bottom)
    width = bins.upper - bins.lower
    # The phantom 1.0 bin of some presets has zero width: draw it as a thin bar at 1.0.
    width = [w if w > 0 else 0.01 for w in width]
    centers = [lo + w / 2 for lo, w in zip(bins.lower, width)]
    nonempty = bins.count > 0
    ax_top.bar([c for c, k in zip(centers, nonempty) if k], bins.accuracy[nonempty],
               width=[w for w, k in zip(width, nonempty) if k], color="#4c72b0", edgecolor="white",
               label="accuracy")
    ax_top.bar([c for c, k in zip(centers, nonempty) if k], (bins.confidence - bins.accuracy)[nonempty],
               bottom=bins.accuracy[nonempty], width=[w for w, k in zip(width, nonempty) if k],
               color="#dd8452", alpha=0.45, edgecolor="#c44e52", hatch="//", label="gap to confidence")
    ax_top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax_top.set_xlim(0, 1)
    ax_top.set_ylim(0, 1)
    ax_top.set_ylabel("accuracy")
    ax_top.set_title(title)
    handles, labels = ax_top.get_legend_handles_labels()
    handles.append(_pyplot().Line2D([], [], linestyle=""))
    labels.append(f"ECE = {ece:.4f} (n = {bins.n})")
    ax_top.legend(handles, labels, loc="upper left", fontsize=8)
    ax_bottom.bar(centers, bins.count, width=width, color="#8c8c8c", edgecolor="white")
    ax_bottom.set_xlabel("confidence")
    ax_bottom.set_ylabel("count")
    return fig


def plot_smooth_reliability(curve: SmoothReliability, *, title: str = "", ax_top=None, ax_bottom=None):
    """Draw the smooth reliability curve with its bootstrap band, and the confidence density below."""
    fig, ax_top, ax_bottom = _panel_axes(ax_top, ax_bottom)
    if curve.lower is not None:
        ax_top.fill_between(curve.t, curve.lower, curve.upper, color="#4c72b0", alpha=0.25, linewidth=0,
                            label=f"{100 * curve.level:.0f} % bootstrap band")
    sparse = curve.density < 0.1 * np.nanmax(curve.density)  # few items near these confidences: extrapolated
    ax_top.plot(curve.t, np.where(sparse, np.nan, curve.accuracy), color="#4c72b0", lw=2,
                label="accuracy (kernel regression)")
    ax_top.plot(curve.t, np.where(sparse, curve.accuracy, np.nan), color="#4c72b0", lw=1, ls=":",
                label="same, where density < 10 % of its peak")
    ax_top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax_top.set_xlim(0, 1)
    ax_top.set_ylim(0, 1)
    ax_top.set_ylabel("accuracy")
    ax_top.set_title(f"{title} (smooth)" if title else "smooth")
    handles, labels = ax_top.get_legend_handles_labels()
    handles.append(_pyplot().Line2D([], [], linestyle=""))
    labels.append(f"smECE = {curve.smece:.4f}, σ = {curve.sigma:.3f} (n = {curve.n})")
    ax_top.legend(handles, labels, loc="upper left", fontsize=8)
    ax_bottom.fill_between(curve.t, curve.density, color="#8c8c8c", linewidth=0)
    ax_bottom.set_xlabel("confidence")
    ax_bottom.set_ylabel("density")
    return fig


def save_figure(fig, path: str | os.PathLike[str]) -> list[Path]:
    """Save ``fig`` atomically to ``path`` and, beside it, the other of PNG/SVG."""
    plt = _pyplot()
    p = Path(path)
    stem = p.with_suffix("")
    out = []
    for suffix in (".png", ".svg"):
        target = stem.with_suffix(suffix)
        with atomic_write(target, "wb") as fh:
            fig.savefig(fh, format=suffix[1:], dpi=130, bbox_inches="tight")
        out.append(target)
    plt.close(fig)
    return out


def reliability_diagram(bins: ReliabilityBins, path: str | os.PathLike[str], *, ece: float, title: str = "",
                        smooth: SmoothReliability | None = None) -> list[Path]:
    """Write a reliability diagram to ``path`` (PNG) and the same stem as SVG; with ``smooth``, the smooth
    diagram beside the binned one."""
    if smooth is None:
        return save_figure(plot_reliability(bins, ece=ece, title=title), path)
    return reliability_grid([(title, bins, ece, smooth)], path)


Panel = Union[tuple[str, ReliabilityBins, float], tuple[str, ReliabilityBins, float, SmoothReliability]]


def reliability_grid(panels: Sequence[Panel], path: str | os.PathLike[str]) -> list[Path]:
    """One reliability diagram per (title, bins, ece) side by side; a panel with a fourth element, a
    :class:`~calibtune.metrics.SmoothReliability`, also gets its smooth diagram, right of the binned one."""
    plt = _pyplot()
    n = sum(2 if len(p) > 3 and p[3] is not None else 1 for p in panels)
    fig, axes = plt.subplots(2, n, figsize=(4.6 * n, 5.6), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]})
    col = 0
    for title, bins, ece, *rest in panels:
        plot_reliability(bins, ece=ece, title=title, ax_top=axes[0, col], ax_bottom=axes[1, col])
        col += 1
        if rest and rest[0] is not None:
            plot_smooth_reliability(rest[0], title=title, ax_top=axes[0, col], ax_bottom=axes[1, col])
            col += 1
    fig.tight_layout()
    return save_figure(fig, path)
