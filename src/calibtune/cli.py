"""The ``calibtune`` command line: thin commands over the library functions."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="calibtune: measure and fix the calibration of fine-tuned LLMs.")
err = Console(stderr=True)
out = Console()


class BinningOpt(str, Enum):
    width = "width"
    mass = "mass"


class NormOpt(str, Enum):
    l1 = "l1"
    l2 = "l2"
    max = "max"


class EdgeOpt(str, Enum):
    left = "left"
    right = "right"


class PresetOpt(str, Enum):
    calibtune = "calibtune"
    torchmetrics = "torchmetrics"
    netcal = "netcal"
    sklearn = "sklearn"
    p_lambda = "p-lambda"
    relplot = "relplot"
    helm = "helm"


class FormatOpt(str, Enum):
    json = "json"
    table = "table"


def fail(message: str) -> None:
    """Print one clear error and exit with code 2 (bad input)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def metrics_table(rows: dict[str, dict], title: str = "") -> Table:
    """A rich table with one column per data set and one row per metric (fits a narrow terminal)."""
    keys = ["n", "accuracy", "ece", "ace", "mce", "rmsce", "smece", "classwise_ece", "brier", "nll", "auroc", "aurc"]
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


@app.command("metrics")
def metrics_cmd(
    file: Annotated[Path, typer.Argument(help="Predictions: JSONL ({\"probs\": [...], \"label\": k} or "
                                               "{\"confidence\": c, \"correct\": 0|1} per line) or CSV.")],
    n_bins: Annotated[Optional[int], typer.Option(help="Number of bins (default: the preset's; calibtune 15).")] = None,
    binning: Annotated[Optional[BinningOpt], typer.Option(help="Equal-width or equal-mass bins.")] = None,
    norm: Annotated[NormOpt, typer.Option(help="Headline calibration error: l1 = ECE, l2 = RMSCE, max = MCE.")] = NormOpt.l1,
    edge: Annotated[EdgeOpt, typer.Option(help="right: bins (lo, hi]; left: [lo, hi).")] = EdgeOpt.right,
    preset: Annotated[PresetOpt, typer.Option(help="Reproduce another library's binning exactly.")] = PresetOpt.calibtune,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for confidence intervals (0 = none).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    plot: Annotated[Optional[Path], typer.Option(help="Write a reliability diagram here (PNG, plus SVG beside it).")] = None,
    format: Annotated[FormatOpt, typer.Option("--format", help="Output format.")] = FormatOpt.table,
) -> None:
    """Calibration metrics of a predictions file (ECE, MCE, RMSCE, ACE, smECE, Brier, NLL, AUROC...)."""
    from .metrics import reliability_bins, summarize
    from .predictions import PredictionsError, read_predictions

    try:
        preds = read_predictions(file)
    except PredictionsError as e:
        fail(str(e))
    x, y = preds.arrays()
    p = None if preset is PresetOpt.calibtune else preset.value
    try:
        result = summarize(x, y, n_bins=n_bins, binning=binning.value if binning else None, norm=norm.value,
                           edge=edge.value, preset=p, mask=preds.mask, bootstrap=bootstrap, seed=seed)
    except ValueError as e:
        fail(f"{file}: {e}")
    result = {"file": str(file), **result}
    if plot is not None:
        from .reports import reliability_diagram

        bins = reliability_bins(x, y, n_bins=result["n_bins"], binning=binning.value if binning else None,
                                edge=edge.value, preset=p)
        written = reliability_diagram(bins, plot, ece=result["ece"], title=file.name)
        err.print("wrote " + ", ".join(str(w) for w in written))
    if format is FormatOpt.json:
        print(json.dumps(result, indent=2))
    else:
        out.print(metrics_table({file.name: result},
                                title=f"{result['preset']} · {result['n_bins']} {result['binning']} bins · edge {result['edge']}"))


def _version(value: bool) -> None:
    if value:
        print(f"calibtune {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """calibtune: measure and fix the calibration of fine-tuned LLMs."""
