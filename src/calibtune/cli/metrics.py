"""``calibtune metrics`` and ``calibtune calibrate fit/apply``: commands over scored files, no model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .. import __version__
from .console import VERBATIM, err, metrics_table, out
from .options import (
    SCORED_FILE,
    BinningOpt,
    BootstrapOption,
    EdgeOpt,
    FormatOpt,
    LmEvalMetricOpt,
    NormOpt,
    OverwriteFileOption,
    PresetOpt,
)

__all__ = ["calibrate_apply_cmd", "calibrate_fit_cmd", "metrics_cmd"]


def metrics_cmd(
    file: Annotated[Path, typer.Argument(help="Predictions: JSONL ({\"probs\": [...], \"label\": k} or "
                                               "{\"confidence\": c, \"correct\": 0|1} per line) or CSV.")],
    n_bins: Annotated[Optional[int], typer.Option(help="Number of bins (default: the preset's; calibtune 15).")] = None,
    binning: Annotated[Optional[BinningOpt], typer.Option(help="Equal-width or equal-mass bins.")] = None,
    norm: Annotated[NormOpt, typer.Option(help="Headline calibration error: l1 = ECE, l2 = RMSCE, max = MCE.")] = NormOpt.l1,
    edge: Annotated[EdgeOpt, typer.Option(help="right: bins (lo, hi]; left: [lo, hi).")] = EdgeOpt.right,
    preset: Annotated[PresetOpt, typer.Option(help="Reproduce another library's binning exactly.")] = PresetOpt.calibtune,
    bootstrap: BootstrapOption = 0,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.")] = 0,
    plot: Annotated[Optional[Path], typer.Option(help="Write a reliability diagram here (PNG, plus SVG beside it).")] = None,
    format: Annotated[FormatOpt, typer.Option("--format", help="Output format.")] = FormatOpt.table,
    lm_eval_metric: Annotated[LmEvalMetricOpt, typer.Option(help="lm-eval samples file: the option distribution "
                                                            "of this metric's scores (acc: log-likelihoods; acc_norm: "
                                                            "per character; acc_bytes: per byte; acc_mutual_info: PMI).")] = LmEvalMetricOpt.acc,
) -> None:
    """Calibration metrics of a predictions file (ECE, MCE, RMSCE, ACE, smECE, Brier, NLL, AUROC...).

    Also reads lm-eval's ``--log_samples`` JSONL of a multiple-choice task and per-option log-likelihood
    JSONL (``{"loglikelihoods": [...], "label": k}`` per line).

    A file that mixes data sets or scorings (``calibtune eval`` writes one) is reported per group.
    """
    from .. import checks
    from ..metrics import reliability_bins, summarize
    from ..metrics.bootstrap import check_resamples
    from ..external import read_scored
    from ..metrics.calibration import convention

    p = None if preset is PresetOpt.calibtune else preset.value
    b = binning.value if binning else None
    convention(p, n_bins, b, edge.value)  # the flags first, before the file is read
    if bootstrap:
        check_resamples(bootstrap)
    if plot is not None:
        for target in (plot.with_suffix(".png"), plot.with_suffix(".svg")):
            checks.output_file(target, overwrite=True, what="--plot")
    groups = read_scored(file, lm_eval_metric=lm_eval_metric.value).by_group()
    results = {}
    for name, g in groups.items():
        x, y = g.arrays()
        try:
            result = summarize(x, y, n_bins=n_bins, binning=b, norm=norm.value, edge=edge.value, preset=p,
                               mask=g.mask, bootstrap=bootstrap, seed=seed)
        except ValueError as e:
            raise ValueError(f"{file}{f' ({name})' if name else ''}: {e}") from None
        results[name] = result
    if len(groups) > 1:
        err.print(f"{file}: {len(groups)} groups (dataset · scoring), each measured on its own rows, never pooled",
                  soft_wrap=True)
    if plot is not None:
        from ..metrics import smooth_reliability
        from ..reports import reliability_diagram, reliability_grid

        panels = [(name or file.name, reliability_bins(*g.arrays(), n_bins=results[name]["n_bins"], binning=b,
                                                       edge=edge.value, preset=p), results[name]["ece"],
                   smooth_reliability(*g.arrays(), seed=seed))
                  for name, g in groups.items()]
        if len(panels) == 1:
            written = reliability_diagram(panels[0][1], plot, ece=panels[0][2], title=panels[0][0],
                                          smooth=panels[0][3])
        else:
            written = reliability_grid(panels, plot)
        err.print("wrote " + ", ".join(str(w) for w in written), soft_wrap=True)
    first = next(iter(results.values()))
    if format is FormatOpt.json:
        doc = {"file": str(file), **first} if len(results) == 1 else {"file": str(file), "groups": results}
        print(json.dumps(doc, indent=2))
    else:
        columns = {file.name: first} if len(results) == 1 else results
        out.print(metrics_table(columns, title=f"{first['preset']} · {first['n_bins']} {first['binning']} bins · "
                                               f"edge {first['edge']}"))


def _score_kind(normalization: str) -> str:
    """Scores that one temperature may be moved between: raw log-likelihoods (lm-eval acc, calibtune
    cloze/letter, log-likelihood files) or one of lm-eval's normalisations.

    >>> _score_kind("none"), _score_kind("acc"), _score_kind("acc_norm")
    ('log-likelihood', 'log-likelihood', 'acc_norm')
    """
    return "log-likelihood" if normalization in ("acc", "none") else normalization


def calibrate_fit_cmd(
    file: Annotated[Path, typer.Argument(help=f"Held-out scored file: {SCORED_FILE}.")],
    out: Annotated[Path, typer.Option(help="Calibrator JSON to write.")],
    lm_eval_metric: Annotated[LmEvalMetricOpt, typer.Option(help="lm-eval samples: fit on this metric's scores.")] = LmEvalMetricOpt.acc,
    group: Annotated[Optional[str], typer.Option(help="Predictions with several 'dataset · scoring' groups: fit on this one.")] = None,
    overwrite: OverwriteFileOption = False,
) -> None:
    """Fit a temperature T (softmax(scores / T)) on FILE by NLL and save it as a small JSON calibrator."""
    from .. import checks
    from ..external import read_option_scores
    from ..posthoc import TemperatureScaling, save_calibrator

    checks.output_file(out, overwrite=overwrite, inputs=(file,))
    scores = read_option_scores(file, lm_eval_metric=lm_eval_metric.value, group=group)
    ts = TemperatureScaling().fit(list(scores.scores), scores.labels)
    save_calibrator(ts, out, fitted_on=str(file), input_format=scores.format, normalization=scores.normalization,
                    group=group, n=scores.n, calibtune_version=__version__)
    out_console = Console(**VERBATIM)
    out_console.print(f"T = {ts.temperature_:.4f} fitted on {scores.n} items of {file} "
                      f"(NLL {ts.nll_before_:.4f} -> {ts.nll_after_:.4f}); wrote {out}", soft_wrap=True)


def calibrate_apply_cmd(
    calibrator: Annotated[Path, typer.Argument(help="Calibrator JSON from `calibtune calibrate fit`.")],
    file: Annotated[Path, typer.Argument(help=f"Scored file to calibrate: {SCORED_FILE}.")],
    out: Annotated[Path, typer.Option(help="Calibrated predictions JSONL to write (read it with `calibtune metrics`).")],
    lm_eval_metric: Annotated[Optional[LmEvalMetricOpt], typer.Option(help="lm-eval samples: the metric's scores (default: the one the calibrator was fitted on).")] = None,
    group: Annotated[Optional[str], typer.Option(help="Predictions with several 'dataset · scoring' groups: calibrate this one.")] = None,
    overwrite: OverwriteFileOption = False,
) -> None:
    """Apply a saved temperature to FILE; writes calibtune predictions (probs, label, pred, confidence, correct)."""
    from types import SimpleNamespace

    from .. import checks
    from ..evaluation import predictions_rows
    from ..external import read_option_scores
    from ..io import write_jsonl
    from ..posthoc import load_calibrator

    checks.output_file(out, overwrite=overwrite, inputs=(file, calibrator))
    ts, doc = load_calibrator(calibrator)
    fitted = str(doc.get("normalization", "none"))
    metric = lm_eval_metric.value if lm_eval_metric else (fitted if fitted in LmEvalMetricOpt.__members__ else "acc")
    scores = read_option_scores(file, lm_eval_metric=metric, group=group)
    if _score_kind(scores.normalization) != _score_kind(fitted):
        raise ValueError(f"{calibrator}: fitted on {_score_kind(fitted)} scores, but {file} gives "
                         f"{_score_kind(scores.normalization)} scores; a temperature does not carry across them")
    if Path(doc.get("fitted_on", "")).resolve() == file.resolve():
        err.print(f"warning: {file} is the file the temperature was fitted on; report a held-out file",
                  soft_wrap=True)
    logprobs = ts.transform_log(list(scores.scores))
    items = [SimpleNamespace(id=i, gold=int(y)) for i, y in zip(scores.ids, scores.labels)]
    rows = predictions_rows(group or str(file), f"{scores.normalization}+ts", items, logprobs)
    for r in rows:
        r["temperature"] = ts.temperature_
    write_jsonl(out, rows)
    Console(**VERBATIM).print(f"T = {ts.temperature_:.4f} applied to {scores.n} items of {file}; wrote {out}",
                              soft_wrap=True)
