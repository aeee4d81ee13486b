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


class ScoringOpt(str, Enum):
    letter = "letter"
    cloze = "cloze"


class DtypeOpt(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
    auto = "auto"


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option(help="smollm2 (embedded default), gemma3-270m, a local HF folder, a .gguf file or a hub id.")] = "smollm2",
    data: Annotated[list[str], typer.Option(help="Data spec, repeatable: arc-easy:test, mmlu/anatomy:val, boolq:val, ./mine.jsonl ...")] = ...,
    out: Annotated[Path, typer.Option(help="Output folder (refused if not empty, unless --overwrite).")] = ...,
    scoring: Annotated[list[ScoringOpt], typer.Option(help="letter (option-label token) and/or cloze (option log-likelihood); repeatable.")] = [ScoringOpt.cloze],
    template: Annotated[str, typer.Option(help="blob, cft, chat, or a template file with {question} {options} {context} {subject}.")] = "blob",
    shots: Annotated[int, typer.Option(help="Seeded k-shot exemplars from the data set's dev/train split.")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Seeded random subset of this many items per data set.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for subsampling, option shuffling, exemplars and bootstrap.")] = 0,
    shuffle_options: Annotated[bool, typer.Option(help="Permute each item's options (seeded).")] = False,
    normalize: Annotated[str, typer.Option(help="Cloze: 'sum' of token log-probs or per-token 'mean'.")] = "sum",
    batch_size: Annotated[int, typer.Option(help="Items per forward pass.")] = 8,
    dtype: Annotated[DtypeOpt, typer.Option(help="bfloat16 is about 2x faster on CPUs with AVX512-BF16.")] = DtypeOpt.float32,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:0, mps or auto.")] = "cpu",
    adapter: Annotated[Optional[Path], typer.Option(help="A PEFT LoRA adapter folder saved by training.")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the hub (off by default).")] = False,
    data_dir: Annotated[Optional[Path], typer.Option(help="Root of the data sets (default: $CALIBTUNE_DATA_DIR).")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Skip malformed rows (and report how many) instead of failing.")] = False,
    n_bins: Annotated[int, typer.Option(help="Bins of the calibration metrics.")] = 15,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for confidence intervals (0 = none).")] = 0,
    temperature_data: Annotated[Optional[str], typer.Option(help="Held-out data spec to fit temperature scaling on; adds '+ts' results.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace results in a non-empty --out folder.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Evaluate a model's calibration on multiple-choice data; writes predictions, metrics, diagram, report."""
    from .data import DataError
    from .evaluate import EvalConfig, evaluate

    if normalize not in ("sum", "mean"):
        fail(f"--normalize must be 'sum' or 'mean', got {normalize!r}")
    cfg = EvalConfig(model=model, data=list(data), out=str(out), scoring=[s.value for s in scoring], template=template,
                     shots=shots, limit=limit, seed=seed, shuffle_options=shuffle_options, normalize=normalize,
                     batch_size=batch_size, dtype=dtype.value, device=device,
                     adapter=str(adapter) if adapter else None, trust_remote_code=trust_remote_code,
                     data_dir=str(data_dir) if data_dir else None, skip_invalid=skip_invalid, n_bins=n_bins,
                     bootstrap=bootstrap, temperature_data=temperature_data, overwrite=overwrite, progress=progress)
    try:
        report = evaluate(cfg)
    except (DataError, FileExistsError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    for m in report["results"].values():
        if m.get("n_skipped"):
            err.print(f"[yellow]skipped {m['n_skipped']} invalid rows in {m['data']}[/]")
    out_console = Console()
    out_console.print(metrics_table({k: v for k, v in report["results"].items()},
                                    title=f"{model} · template {template} · {shots}-shot"))
    secs = ", ".join(f"{k}: {v['seconds']} s ({v['items_per_second']} items/s)" for k, v in report["results"].items()
                     if v.get("items_per_second"))
    out_console.print(f"model load {report['model_load_seconds']} s; scoring {secs}")
    out_console.print(f"wrote {out}/predictions.jsonl, metrics.json, reliability.png, report.md")


class KnownRuleOpt(str, Enum):
    any = "any"
    majority = "majority"
    all = "all"


@app.command("probe")
def probe_cmd(
    model: Annotated[str, typer.Option(help="The BASE model: smollm2, gemma3-270m, a local HF folder, a .gguf file or a hub id.")] = "smollm2",
    data: Annotated[str, typer.Option(help="Data spec: openbookqa:train, arc-easy:test, entity-questions/P19:test, ./mine.jsonl ...")] = ...,
    out: Annotated[Path, typer.Option(help="Output JSONL, one probe record per item (written atomically).")] = ...,
    scoring: Annotated[ScoringOpt, typer.Option(help="Multiple choice: cloze (option log-likelihood) or letter.")] = ScoringOpt.cloze,
    normalize: Annotated[str, typer.Option(help="Cloze: 'sum' of token log-probs or per-token 'mean' (as in training/eval).")] = "sum",
    template: Annotated[str, typer.Option(help="Multiple choice: blob, cft, chat, or a template file.")] = "blob",
    preset: Annotated[str, typer.Option(help="default (CPU-sized) or slick (the paper's 10 prompts, 4 shots, 16 samples).")] = "default",
    n_prompts: Annotated[Optional[int], typer.Option(help="Random few-shot prompts per item (default: the preset's).")] = None,
    shots: Annotated[Optional[int], typer.Option(help="Exemplars per prompt (default: the preset's).")] = None,
    n_samples: Annotated[Optional[int], typer.Option(help="Open questions: sampled answers per prompt (default: the preset's).")] = None,
    known_rule: Annotated[KnownRuleOpt, typer.Option(help="known = any prompt right (not Unknown), a majority, or all.")] = KnownRuleOpt.any,
    limit: Annotated[Optional[int], typer.Option(help="Seeded random subset of this many items.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for subsampling, exemplars, option orders and sampling.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Prompts per forward pass / generate call.")] = 8,
    dtype: Annotated[DtypeOpt, typer.Option(help="Model dtype.")] = DtypeOpt.float32,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:0, mps or auto.")] = "cpu",
    data_dir: Annotated[Optional[Path], typer.Option(help="Root of the data sets (default: $CALIBTUNE_DATA_DIR).")] = None,
    cache: Annotated[bool, typer.Option(help="Reuse an identical earlier probe instead of running the model.")] = True,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Probe cache (default: $CALIBTUNE_CACHE/probes or ~/.cache/calibtune/probes).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Probe what the base model knows per item (SliCK categories, P_correct, answer NLL) for CogCalib."""
    from .data import DataError
    from .probing import ProbeConfig, run_probe, summarize_probe

    if normalize not in ("sum", "mean"):
        fail(f"--normalize must be 'sum' or 'mean', got {normalize!r}")
    cfg = ProbeConfig(model=model, data=data, out=str(out), scoring=scoring.value, normalize=normalize,
                      template=template, preset=preset,
                      n_prompts=n_prompts, shots=shots, n_samples=n_samples, known_rule=known_rule.value, limit=limit,
                      seed=seed, batch_size=batch_size, dtype=dtype.value, device=device,
                      data_dir=str(data_dir) if data_dir else None, cache=cache,
                      cache_dir=str(cache_dir) if cache_dir else None, progress=progress)
    try:
        result = run_probe(cfg)
    except (DataError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    settings = ", ".join(f"{k} {v}" for k, v in result.settings.items() if k not in ("seed", "dtype"))
    table = Table(title=f"{model} · {result.data} · {settings}")
    for name in ("category", "n", "mean P_correct", "mean NLL", "known"):
        table.add_column(name, justify="left" if name == "category" else "right")
    for category, s in summarize_probe(result.records).items():
        table.add_row(category, str(s["n"]), f"{s['p_correct']:.3f}", f"{s['nll']:.3f}", f"{s['known']:.2f}")
    Console().print(table)
    how = "from the cache" if result.cached else "probed"
    Console().print(f"{len(result.records)} items {how} in {result.seconds:.1f} s; wrote {out}")


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Option(help="YAML config (see experiments/*.yaml): model, data, scoring, objective, lora, training.")],
    output_dir: Annotated[Optional[Path], typer.Option(help="Where checkpoints, the adapter and curves go (overrides training.output_dir).")] = None,
    objective: Annotated[Optional[str], typer.Option(help="Override the objective: ce, ls, mbls, ecp, focal, sft, cogcalib.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Override training.max_steps.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the seed (data subset, LoRA init, order).")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Resume: 'last' for the newest checkpoint in the output dir, or a checkpoint path.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Fine-tune with a calibration-aware objective (Trainer + PEFT LoRA); the adapter loads with eval --adapter."""
    from .data import DataError
    from .training import load_train_config, run_training

    overrides: dict = {}
    if output_dir is not None:
        overrides["training.output_dir"] = str(output_dir)
    if max_steps is not None:
        overrides["training.max_steps"] = max_steps
    if objective is not None:
        overrides["objective"] = objective
    if seed is not None:
        overrides["seed"] = seed
    try:
        cfg = load_train_config(config, overrides)
        if "output_dir" not in cfg.training:
            fail(f"{config}: set training.output_dir or pass --output-dir")
        summary = run_training(cfg, resume=True if resume == "last" else resume, progress=progress)
    except (DataError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    out.print(f"trained {summary['steps']} steps; train loss {summary['train'].get('train_loss', float('nan')):.4f}; "
              f"saved to {cfg.training['output_dir']}")
    if summary["curve"]:
        last = summary["curve"][-1]
        out.print("held-out at the end: " + ", ".join(f"{k}={v:.4f}" for k, v in last.items()
                                                        if isinstance(v, float)))


@app.command("compare")
def compare_cmd(
    config: Annotated[Path, typer.Option(help="Experiment YAML: model, tasks (train/held-out/test/ood sets, seeds), methods.")],
    task: Annotated[Optional[list[str]], typer.Option(help="Run only these tasks (repeatable); results land cell by cell.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the report's intervals.")] = 1000,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a grid of methods x tasks x seeds; finished cells are kept, a killed run continues where it stopped."""
    from .compare import load_compare_config, run_compare
    from .comparison_report import write_report
    from .data import DataError

    try:
        cfg = load_compare_config(config)
        summary = run_compare(cfg, only_tasks=task, progress=progress)
        md, html = write_report(summary.parent, n_boot=bootstrap, baselines=cfg.baselines, progress=progress)
    except (DataError, FileNotFoundError, ValueError) as e:
        fail(str(e))
    out.print(f"summary: {summary}\nreport: {md}, {html}")


def _version(value: bool) -> None:
    if value:
        print(f"calibtune {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """calibtune: measure and fix the calibration of fine-tuned LLMs."""


if __name__ == "__main__":
    app()
