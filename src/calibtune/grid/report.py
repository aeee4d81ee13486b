"""One report for a ``calibtune compare`` results tree: Markdown with PNG figures, and one self-contained HTML file.

Per (train_data, eval_data): one row per method with its seeds pooled (the predictions of every seed
concatenated, the metrics recomputed, seeded percentile-bootstrap intervals), the relative change
against the baselines, and the best value per column marked; per method a binned and a smooth
reliability diagram (:func:`~calibtune.metrics.smooth_reliability`). Per
training set: held-out ECE and accuracy over training of each trained method that wrote a curve.
Whatever is missing (a curve, a baseline, a predictions file) is left out, never an error.
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import METRICS, Bins, bootstrap_ci, reliability_bins, smooth_reliability
from ..io import atomic_write
from ..predictions import Predictions, read_predictions
from ..reports import reliability_grid, save_figure
from .compare import _slug

TABLE_METRICS = ("accuracy", "ece", "classwise_ece", "mce", "brier", "nll")  # names in calibtune.metrics.METRICS
COLUMNS = {k: METRICS[k].display for k in TABLE_METRICS}
HIGHER_IS_BETTER = {k for k in TABLE_METRICS if METRICS[k].higher_is_better}
DELTA_COLUMNS = ("classwise_ece", "mce", "brier", "nll")  # ECE's Δ% sits in the main table
FIGURES_DIR = "report_files"

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #1a1a1a; }
h1 { font-size: 24px; } h2 { font-size: 19px; margin-top: 32px; } h3 { font-size: 16px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; }
th, td { border: 1px solid #b0b7c3; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #dbe6f5; }
td:first-child, th:first-child { text-align: left; }
td.best { background: #c6efce; font-weight: bold; }
figure { margin: 12px 0; } figcaption { font-size: 13px; color: #444; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[tuple[str, bool]]]  # (text, best) per cell


@dataclass(frozen=True)
class Figure:
    caption: str
    png: Path


Block = Heading | Para | Table | Figure


@dataclass(frozen=True)
class Pooled:
    """One method's predictions on one (train_data, eval_data), all seeds concatenated."""

    seeds: tuple[int, ...]
    probs: np.ndarray
    labels: np.ndarray
    mask: np.ndarray


def _metric_fns(n_bins: int) -> dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]]:
    """Every table metric as ``f(probs, labels, mask)``, so one bootstrap call resamples all three."""
    return {k: METRICS[k].bind(Bins(n_bins=n_bins)) for k in TABLE_METRICS}


def _pool(runs: Sequence[tuple[int, Predictions]]) -> Pooled:
    """Concatenate the seeds' predictions, zero-padding to the largest number of options."""
    k = max(p.probs.shape[1] for _, p in runs)
    pad = [((0, 0), (0, k - p.probs.shape[1])) for _, p in runs]
    return Pooled(seeds=tuple(sorted(s for s, _ in runs)),
                  probs=np.concatenate([np.pad(p.probs, w) for (_, p), w in zip(runs, pad)]),
                  labels=np.concatenate([p.labels for _, p in runs]),
                  mask=np.concatenate([np.pad(p.mask, w) for (_, p), w in zip(runs, pad)]))


def _collect(root: Path) -> tuple[dict[tuple[str, str], dict[str, Pooled]], dict[str, dict[str, list[list[dict]]]]]:
    """Pooled predictions per (train_data, eval_data) and method; training curves per train_data and method."""
    preds: dict[tuple[str, str], dict[str, list[tuple[int, Predictions]]]] = defaultdict(lambda: defaultdict(list))
    curves: dict[str, dict[str, list[list[dict]]]] = defaultdict(lambda: defaultdict(list))
    for cell_json in sorted(root.glob("*/seed*/*/cell.json")):
        rec = json.loads(cell_json.read_text(encoding="utf-8"))
        for r in rec.get("results", []):
            path = cell_json.parent / f"{_slug(r['eval_data'])}.predictions.jsonl"
            if path.is_file():
                preds[(rec["train_data"], r["eval_data"])][rec["method"]].append((rec["seed"], read_predictions(path)))
        curve = _read_curve(cell_json.parent / "adapter")
        if curve:
            curves[rec["train_data"]][rec["method"]].append(curve)
    pooled = {key: {m: _pool(runs) for m, runs in by_method.items()} for key, by_method in preds.items()}
    return pooled, curves


def _read_curve(adapter: Path) -> list[dict[str, Any]]:
    """``curve.json``, else the curve kept in ``training_summary.json``; empty when neither has one."""
    for name, key in (("curve.json", None), ("training_summary.json", "curve")):
        path = adapter / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            curve = data if key is None else data.get(key) or []
            points = [p for p in curve if {"step", "heldout_ece", "heldout_accuracy"} <= p.keys()]
            if points:
                return points
    return []


def _order(methods: Sequence[str], baselines: Sequence[str]) -> list[str]:
    """Baselines first (in the given order), then the other methods alphabetically."""
    return sorted(methods, key=lambda m: (0, baselines.index(m), m) if m in baselines else (1, 0, m))


def _delta(value: float, base: float) -> str:
    return f"{100 * (value - base) / base:+.1f}%" if base > 0 else "–"


def _group_blocks(train: str, evald: str, pooled: dict[str, Pooled], *, baselines: Sequence[str], n_boot: int,
                  seed: int, n_bins: int, figures: Path, index: int) -> list[Block]:
    """The table, the Δ% table and the reliability grid of one (train_data, eval_data)."""
    fns = _metric_fns(n_bins)
    methods = _order(list(pooled), baselines)
    values = {m: {k: fn(pooled[m].probs, pooled[m].labels, pooled[m].mask) for k, fn in fns.items()} for m in methods}
    cis = {m: {k: bootstrap_ci(fn, pooled[m].probs, pooled[m].labels, pooled[m].mask, n_resamples=n_boot, seed=seed)
               for k, fn in fns.items()} for m in methods}
    best = {k: (max if k in HIGHER_IS_BETTER else min)(values[m][k] for m in methods) for k in COLUMNS}
    bases = [b for b in baselines if b in pooled]
    header = ["method", "seeds", "n", *COLUMNS.values(), *(f"ΔECE vs {b}" for b in bases)]
    rows = []
    for m in methods:
        cells = [(m, False), (",".join(map(str, pooled[m].seeds)), False), (str(len(pooled[m].labels)), False)]
        for k in COLUMNS:
            lo, hi = cis[m][k]
            cells.append((f"{values[m][k]:.4f} [{lo:.4f}, {hi:.4f}]", bool(np.isclose(values[m][k], best[k],
                                                                                     rtol=0, atol=1e-12))))
        cells += [(_delta(values[m]["ece"], values[b]["ece"]), False) for b in bases]
        rows.append(cells)
    blocks: list[Block] = [Heading(2, f"{train} → {evald}"), Table(header, rows)]
    if bases:
        blocks += [Para("Relative change (%) of the other calibration columns against the baselines "
                        "(negative = lower = better):"),
                   Table(["method", *(f"{COLUMNS[k]} vs {b}" for k in DELTA_COLUMNS for b in bases)],
                         [[(m, False), *((_delta(values[m][k], values[b][k]), False) for k in DELTA_COLUMNS
                                         for b in bases)] for m in methods])]
    panels = [(m, reliability_bins(pooled[m].probs, pooled[m].labels, n_bins=n_bins), values[m]["ece"],
               smooth_reliability(pooled[m].probs, pooled[m].labels, seed=seed)) for m in methods]
    png = reliability_grid(panels, figures / f"reliability_{index:02d}_{_slug(evald)[:60]}.png")[0]
    blocks.append(Figure(f"Reliability diagrams, {evald} (trained on {train}), seeds pooled", png))
    return blocks


def _mean_curve(runs: Sequence[list[dict[str, Any]]]) -> np.ndarray:
    """Rows ``(step, ece, accuracy)``: the mean over the seeds measured at each step."""
    by_step: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        for p in run:
            by_step[p["step"]].append((p["heldout_ece"], p["heldout_accuracy"]))
    return np.array([(s, *np.mean(by_step[s], axis=0)) for s in sorted(by_step)])


def _curve_figure(train: str, curves: dict[str, list[list[dict[str, Any]]]], path: Path) -> Path:
    """Held-out ECE and accuracy vs step, and accuracy vs ECE from start (○) to end (arrow), one line per method."""
    import matplotlib.pyplot as plt

    fig, (ax_ece, ax_acc, ax_path) = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, (method, runs) in enumerate(sorted(curves.items())):
        c = f"C{i}"
        pts = _mean_curve(runs)
        label = f"{method} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
        ax_ece.plot(pts[:, 0], pts[:, 1], marker=".", color=c, label=label)
        ax_acc.plot(pts[:, 0], pts[:, 2], marker=".", color=c, label=label)
        ax_path.plot(pts[:, 1], pts[:, 2], marker=".", color=c, label=label)
        ax_path.plot(pts[0, 1], pts[0, 2], "o", mfc="white", mec=c, ms=9)
        if len(pts) > 1:
            ax_path.annotate("", xy=(pts[-1, 1], pts[-1, 2]), xytext=(pts[-2, 1], pts[-2, 2]),
                             arrowprops={"arrowstyle": "-|>", "color": c, "lw": 1.5, "mutation_scale": 16})
    ax_ece.set(xlabel="step", ylabel="held-out ECE", title="held-out ECE")
    ax_acc.set(xlabel="step", ylabel="held-out accuracy", title="held-out accuracy")
    ax_path.set(xlabel="held-out ECE", ylabel="held-out accuracy", title="accuracy vs ECE over training (○ start)")
    ax_ece.legend(fontsize=8)
    fig.suptitle(f"Training on {train}")
    fig.tight_layout()
    return save_figure(fig, path)[0]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(blocks: Sequence[Block], base: Path) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}\n")
        elif isinstance(b, Para):
            out.append(b.text + "\n")
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(map(_md_cell, b.header)) + " |", "|" + "---|" * len(b.header)]
            for row in b.rows:
                lines.append("| " + " | ".join(_md_bold(_md_cell(t)) if best else _md_cell(t) for t, best in row) + " |")
            out.append("\n".join(lines) + "\n")
        else:
            out.append(f"![{b.caption}]({b.png.relative_to(base).as_posix()})\n")
    return "\n".join(out)


def _md_bold(text: str) -> str:
    """Bold the value, not its interval: ``**0.1234** [0.1, 0.2]``."""
    value, sep, rest = text.partition(" ")
    return f"**{value}**{sep}{rest}"


def _html(blocks: Sequence[Block], title: str) -> str:
    esc = html.escape
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{esc(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f'<td class="best">{esc(t)}</td>' if best else f"<td>{esc(t)}</td>"
                                            for t, best in row) + "</tr>\n" for row in b.rows)
            body.append(f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>")
        else:
            data = base64.b64encode(b.png.read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{esc(b.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{esc(b.caption)}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def write_report(root: Path, *, n_boot: int = 1000, seed: int = 0, baselines: Sequence[str] = ("sft", "ts"),
                 n_bins: int = 15, progress: bool = False) -> tuple[Path, Path]:
    """Write ``root/report.md`` (figures in ``root/report_files/``) and the self-contained ``root/report.html``."""
    from tqdm.auto import tqdm

    root = Path(root)
    baselines = list(baselines)
    figures = root / FIGURES_DIR
    pooled, curves = _collect(root)
    title = f"Comparison report: {root.name}"
    blocks: list[Block] = [
        Heading(1, title),
        Para(f"Each row pools a method's seeds: the predictions of all its seeds are concatenated and every metric "
             f"is recomputed ({n_bins} equal-width bins); brackets hold 95% percentile-bootstrap intervals "
             f"({n_boot} resamples, seed {seed}). Best value per column marked (highest accuracy, lowest otherwise). "
             f"Δ% is the relative change against a baseline ({', '.join(baselines)}) on the same evaluation set."),
    ]
    if not pooled:
        blocks.append(Para("No finished cells with predictions found."))
    # Evaluation sets in the order of the cells' results: each task's test sets, then its out-of-domain sets.
    for i, (train, evald) in enumerate(tqdm(list(pooled), desc="report", unit="table", disable=not progress)):
        blocks += _group_blocks(train, evald, pooled[(train, evald)], baselines=baselines, n_boot=n_boot, seed=seed,
                                n_bins=n_bins, figures=figures, index=i)
    blocks.append(Heading(2, "Training curves"))
    if not curves:
        blocks.append(Para("No training curves found (adapter/curve.json)."))
    for train in curves:
        blocks += [Heading(3, f"Trained on {train}"),
                   Figure(f"Held-out ECE and accuracy over training on {train}, mean over seeds",
                          _curve_figure(train, curves[train], figures / f"curves_{_slug(train)}.png"))]
    md_path, html_path = root / "report.md", root / "report.html"
    markdown = _markdown(blocks, root)
    with atomic_write(md_path) as fh:
        fh.write(markdown)
    with atomic_write(html_path) as fh:
        fh.write(_html(blocks, title))
    for stale in figures.glob("*"):  # figures of an earlier report whose numbering or sets have changed
        if stale.is_file() and stale.stem not in markdown:
            stale.unlink()
    return md_path, html_path
