"""``calibtune eval``, ``probe``, ``train`` and ``compare``: the commands that load a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import describe
from ..settings import EvalConfig, ProbeConfig
from .console import VERBATIM, err, fail, metrics_table, out
from .flags import flags_from
from .options import (
    BATCH_HELP,
    DEVICE_HELP,
    DTYPE_HELP,
    AttnOverrideOption,
    DtypeOpt,
    ProgressOption,
    device_overrides,
)

__all__ = ["compare_cmd", "data_fields", "eval_cmd", "probe_cmd", "train_cmd"]


def _main_process() -> bool:
    """Whether this process prints the results (under ``accelerate launch`` only the main one does)."""
    from ..distributed import is_main_process

    return is_main_process()


def data_fields(pairs: list[str] | None, specs: list[str]) -> dict[str, str]:
    """``--field KEY=COLUMN`` flags as a mapping; an error unless some spec is a file or ``hf:`` data set."""
    from ..data import DataError, parse_fields, takes_fields

    if not pairs:
        return {}
    try:
        fields = parse_fields(pairs)
    except DataError as e:
        fail(str(e))
    if not any(takes_fields(s) for s in specs):
        fail(f"--field maps columns of file and hf: data, but no --data is one ({', '.join(specs)})")
    return fields


@flags_from(EvalConfig, exclude=("fields",))
def eval_cmd(
    settings: dict,
    field: Annotated[Optional[list[str]], typer.Option(help="Column of file/hf: data, repeatable: question=COL, options=COL (a list, or A,B,C columns), gold=COL; also id, context, subject.")] = None,
) -> None:
    """Evaluate a model's calibration on multiple-choice or short-answer data; writes predictions, metrics, diagram, report."""
    from ..evaluate import evaluate

    cfg = EvalConfig(**settings, fields=data_fields(field, [*settings["data"], *filter(None, [settings["temperature_data"]])]))
    report = evaluate(cfg)  # bad settings or input: one error line (CalibtuneGroup)
    if not _main_process():
        return
    for m in report["results"].values():
        if m.get("n_skipped"):
            err.print(Text(f"skipped {m['n_skipped']} invalid rows in {m['data']}", style="yellow"))
        if m.get("n_unparsed"):
            err.print(Text(f"{m['n_unparsed']} verbalized replies unparsable in {m['data']} ({m['n_missing']} without "
                           f"a number, {m['n_out_of_range']} out of range): left out of that row", style="yellow"))
    out_console = Console(**VERBATIM)
    template = cfg.qa_template if report.get("task") == "open" else cfg.template
    out_console.print(metrics_table(report["results"], title=f"{cfg.model} · template {template} · {cfg.shots}-shot"))
    secs = ", ".join(f"{k}: {v['seconds']} s ({v['items_per_second']} items/s)" for k, v in report["results"].items()
                     if v.get("items_per_second"))
    out_console.print(f"model load {report['model_load_seconds']} s; scoring {secs}")


@flags_from(ProbeConfig, required=("out",), defaults={"overwrite": False})
def probe_cmd(settings: dict) -> None:
    """Probe what the base model knows per item (SliCK categories, P_correct, answer NLL) for CogCalib."""
    from ..probing import run_probe, summarize_probe

    cfg = ProbeConfig(**settings)
    result = run_probe(cfg)  # bad settings or input: one error line (CalibtuneGroup)
    if not _main_process():
        return
    shown = ", ".join(f"{k} {v}" for k, v in result.settings.items() if k not in ("seed", "dtype"))
    table = Table(title=f"{cfg.model} · {result.data} · {shown}")
    for name in ("category", "n", "mean P_correct", "mean NLL", "known"):
        table.add_column(name, justify="left" if name == "category" else "right")
    for category, s in summarize_probe(result.records).items():
        table.add_row(category, str(s["n"]), f"{s['p_correct']:.3f}", f"{s['nll']:.3f}", f"{s['known']:.2f}")
    Console(**VERBATIM).print(table)
    if result.kind == "mc":
        from ..probing import false_known_rate

        n = result.settings["n_prompts"]
        rates = ", ".join(f"K={k}: {false_known_rate(n, k, cfg.known_rule, cfg.false_known):.4f}"
                          for k in sorted({len(r.prompts[0]["order"]) for r in result.records if r.prompts}))
        Console(**VERBATIM).print(f"expected false-known rate of a random guesser ({cfg.known_rule} rule, "
                                  f"{n} prompts): {rates}")
    how = "from the cache" if result.cached else "probed"
    Console(**VERBATIM).print(f"{len(result.records)} items {how} in {result.seconds:.1f} s; wrote {cfg.out}")


def train_cmd(
    config: Annotated[Path, typer.Option(help="YAML config (see experiments/*.yaml): model, data, scoring, objective, lora, training.")],
    output_dir: Annotated[Optional[Path], typer.Option(help="Where checkpoints, the adapter and curves go (overrides training.output_dir).")] = None,
    objective: Annotated[Optional[str], typer.Option(help="Override the objective: ce, ls, mbls, ecp, focal, sft, cogcalib.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Override training.max_steps.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the seed (data subset, LoRA init, order).")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Resume: 'last' for the newest checkpoint in the output dir, or a checkpoint path.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Override `device`: " + DEVICE_HELP)] = None,
    dtype: Annotated[Optional[DtypeOpt], typer.Option(help="Override `dtype` (the weights'; autocast is training.bf16): " + DTYPE_HELP)] = None,
    attn_implementation: AttnOverrideOption = None,
    batch_size: Annotated[Optional[str], typer.Option(help="Override `batch_size` (per device): a number, or auto (the Trainer's auto_find_batch_size).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start over in a non-empty output dir (its old checkpoints are removed).")] = False,
    progress: ProgressOption = True,
) -> None:
    """Fine-tune with a calibration-aware objective (Trainer + PEFT LoRA); the adapter loads with eval --adapter.

    Several processes: `accelerate launch --num_processes N -m calibtune train --config ...` (DDP; the
    held-out curve and RCFT's E-step are sharded across the processes)."""
    from ..training import check_train_config, load_train_config, prepare_output_dir, run_training

    overrides: dict = {}
    if output_dir is not None:
        overrides["training.output_dir"] = str(output_dir)
    if max_steps is not None:
        overrides["training.max_steps"] = max_steps
    if objective is not None:
        overrides["objective"] = objective
    if seed is not None:
        overrides["seed"] = seed
    overrides.update(device_overrides(device, dtype, attn_implementation, batch_size))
    cfg = load_train_config(config, overrides)
    if "output_dir" not in cfg.training:
        fail(f"{config}: set training.output_dir or pass --output-dir")
    resume_from = True if resume == "last" else resume
    try:  # every setting before any work, named with the config file
        check_train_config(cfg, resume_from)
    except (ValueError, OSError) as e:
        raise ValueError(f"{config}: {describe(e)}") from None
    prepare_output_dir(cfg.training["output_dir"], resume=resume_from, overwrite=overwrite)
    summary = run_training(cfg, resume=resume_from, progress=progress)
    if not _main_process():
        return
    out.print(f"trained {summary['steps']} steps; train loss {summary['train'].get('train_loss', float('nan')):.4f}; "
              f"saved to {cfg.training['output_dir']}")
    if summary["curve"]:
        last = summary["curve"][-1]
        out.print("held-out at the end: " + ", ".join(f"{k}={v:.4f}" for k, v in last.items()
                                                        if isinstance(v, float)))


def compare_cmd(
    config: Annotated[Path, typer.Option(help="Experiment YAML: model, tasks (train/held-out/test/ood sets, seeds), methods.")],
    task: Annotated[Optional[list[str]], typer.Option(help="Run only these tasks (repeatable); results land cell by cell.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the report's intervals.")] = 1000,
    device: Annotated[Optional[str], typer.Option(help="Override `device` (probing, training, evaluation): " + DEVICE_HELP)] = None,
    dtype: Annotated[Optional[DtypeOpt], typer.Option(help="Override `dtype`: " + DTYPE_HELP)] = None,
    attn_implementation: AttnOverrideOption = None,
    batch_size: Annotated[Optional[str], typer.Option(help="Override `batch_size` of probing and evaluation: " + BATCH_HELP)] = None,
    adopt_legacy: Annotated[bool, typer.Option(help="One-off: keep cells written before cell keys as results of this config (writes their key).")] = False,
    rescore: Annotated[bool, typer.Option(help="Train nothing: score every finished trained cell again from its saved adapter (after a scoring fix); keys stay.")] = False,
    progress: ProgressOption = True,
) -> None:
    """Run a grid of methods x tasks x seeds; finished cells are kept, a killed run continues where it stopped."""
    from ..grid import compare, report
    from ..grid.cells import adopt_legacy_cells
    from ..grid.config import CompareConfig, load_compare_config

    overrides = device_overrides(device, dtype, attn_implementation, batch_size)
    cfg = load_compare_config(config)
    if overrides:
        cfg = CompareConfig.model_validate({**cfg.model_dump(), **overrides})
    try:  # the whole grid is checked before the first cell: name the config file
        if adopt_legacy:
            adopted = adopt_legacy_cells(cfg, only_tasks=task)
            if _main_process():
                err.print(f"adopted {len(adopted)} cell(s) written before cell keys as results of {config}",
                          soft_wrap=True)
        run = compare.rescore if rescore else compare.run_compare
        summary = run(cfg, only_tasks=task, progress=progress)
    except (ValueError, OSError) as e:
        raise ValueError(f"{config}: {describe(e)}") from None
    if not _main_process():
        return
    md, html = report.write_report(summary.parent, n_boot=bootstrap, baselines=cfg.baselines, n_bins=cfg.n_bins,
                                 progress=progress)
    out.print(f"summary: {summary}\nreport: {md}, {html}")
