"""``calibtune eval``, ``probe``, ``train`` and ``compare``: the commands that load a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import describe
from .console import VERBATIM, err, fail, metrics_table, out
from .options import (
    BATCH_HELP,
    DEVICE_HELP,
    DTYPE_HELP,
    AttnOverrideOption,
    AttnOption,
    BootstrapOption,
    ConfidenceOpt,
    CorrectnessOpt,
    DataDirOption,
    DeviceOption,
    DtypeOpt,
    ExemplarsOpt,
    KnownRuleOpt,
    OverwriteFileOption,
    ProgressOption,
    ScoringOpt,
    batch_size_value,
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


def eval_cmd(
    model: Annotated[str, typer.Option(help="smollm2 (embedded default), gemma3-270m, a local HF folder, a .gguf file or a hub id.")] = "smollm2",
    data: Annotated[list[str], typer.Option(help="Data spec, repeatable: arc-easy:test, mmlu/anatomy:val, boolq:val, ./mine.jsonl ...")] = ...,
    out: Annotated[Path, typer.Option(help="Output folder (refused if not empty, unless --overwrite).")] = ...,
    scoring: Annotated[list[ScoringOpt], typer.Option(help="letter (option-label token) and/or cloze (option log-likelihood); repeatable.")] = [ScoringOpt.cloze],
    template: Annotated[str, typer.Option(help="blob, cft, chat, or a template file with {question} {options} {context} {subject}.")] = "blob",
    shots: Annotated[int, typer.Option(help="Seeded k-shot exemplars from the data set's dev/train split.")] = 0,
    exemplars: Annotated[ExemplarsOpt, typer.Option(help="k-shot: one seeded exemplar set shared by all items (its keys/values computed once) or a new set per item (lm-eval's convention).")] = ExemplarsOpt.shared,
    limit: Annotated[Optional[int], typer.Option(help="Seeded random subset of this many items per data set.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for subsampling, option shuffling, exemplars and bootstrap.")] = 0,
    shuffle_options: Annotated[bool, typer.Option(help="Permute each item's options (seeded).")] = False,
    normalize: Annotated[str, typer.Option(help="Cloze: 'sum' of token log-probs, per-token 'mean', per character 'char' (lm-eval's acc_norm), per byte 'byte', or 'pmi' (minus the option's unconditional log-likelihood).")] = "sum",
    batch_size: Annotated[str, typer.Option(help=BATCH_HELP)] = "8",
    dtype: Annotated[DtypeOpt, typer.Option(help=DTYPE_HELP + " bfloat16 is about 2x faster on CPUs with AVX512-BF16.")] = DtypeOpt.float32,
    device: DeviceOption = "auto",
    attn_implementation: AttnOption = None,
    adapter: Annotated[Optional[Path], typer.Option(help="A PEFT LoRA adapter folder saved by training.")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the hub (off by default).")] = False,
    data_dir: DataDirOption = None,
    field: Annotated[Optional[list[str]], typer.Option(help="Column of file/hf: data, repeatable: question=COL, options=COL (a list, or A,B,C columns), gold=COL; also id, context, subject.")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Skip malformed rows (and report how many) instead of failing.")] = False,
    n_bins: Annotated[int, typer.Option(help="Bins of the calibration metrics.")] = 15,
    bootstrap: BootstrapOption = 0,
    temperature_data: Annotated[Optional[str], typer.Option(help="Held-out data spec to fit temperature scaling on; adds '+ts' results.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace results in a non-empty --out folder.")] = False,
    progress: ProgressOption = True,
    qa_template: Annotated[str, typer.Option(help="Open questions: qa (SliCK's Q:/A:), chat, or a template file with {question} {subject}.")] = "qa",
    max_new_tokens: Annotated[int, typer.Option(help="Open questions: answer length cap in tokens (also stops at a newline or EOS).")] = 16,
    confidence: Annotated[list[ConfidenceOpt], typer.Option(help="Open questions: ptrue and/or verbalized, besides the sequence probability (product and per-token mean) every answer has; repeatable.")] = [ConfidenceOpt.ptrue, ConfidenceOpt.verbalized],
    correctness: Annotated[CorrectnessOpt, typer.Option(help="Open questions: correctness the calibration uses: em (exact match), f1, judge.")] = CorrectnessOpt.em,
    f1_threshold: Annotated[float, typer.Option(help="Open questions: an answer is F1-correct when its best token F1 >= this.")] = 0.5,
    judge: Annotated[Optional[str], typer.Option(help="Open questions: a local causal LM that judges each answer (yes/no).")] = None,
) -> None:
    """Evaluate a model's calibration on multiple-choice or short-answer data; writes predictions, metrics, diagram, report."""
    from ..evaluate import EvalConfig, evaluate

    fields = data_fields(field, [*data, *([temperature_data] if temperature_data else [])])
    cfg = EvalConfig(model=model, data=list(data), out=str(out), fields=fields, scoring=[s.value for s in scoring], template=template,
                     shots=shots, exemplars=exemplars.value, limit=limit, seed=seed, shuffle_options=shuffle_options, normalize=normalize,
                     batch_size=batch_size_value(batch_size), dtype=dtype.value, device=device,
                     attn_implementation=attn_implementation.value if attn_implementation else None,
                     adapter=str(adapter) if adapter else None, trust_remote_code=trust_remote_code,
                     data_dir=str(data_dir) if data_dir else None, skip_invalid=skip_invalid, n_bins=n_bins,
                     bootstrap=bootstrap, temperature_data=temperature_data, overwrite=overwrite, progress=progress,
                     qa_template=qa_template, max_new_tokens=max_new_tokens, confidence=[c.value for c in confidence],
                     correctness=correctness.value, f1_threshold=f1_threshold, judge=judge)
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
    out_console.print(metrics_table({k: v for k, v in report["results"].items()},
                                    title=f"{model} · template {qa_template if report.get('task') == 'open' else template}"
                                          f" · {shots}-shot"))
    secs = ", ".join(f"{k}: {v['seconds']} s ({v['items_per_second']} items/s)" for k, v in report["results"].items()
                     if v.get("items_per_second"))
    out_console.print(f"model load {report['model_load_seconds']} s; scoring {secs}")


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
    known_rule: Annotated[KnownRuleOpt, typer.Option(help="known = more prompts right than a random guesser explains (chance, default), any prompt right (not Unknown), a majority, or all.")] = KnownRuleOpt.chance,
    false_known: Annotated[float, typer.Option(help="The chance rule: at most this share of random guessers is called known.")] = 0.05,
    exemplars: Annotated[ExemplarsOpt, typer.Option(help="Multiple choice: one seeded exemplar set per prompt index shared by all items (computed once), or a new set per item.")] = ExemplarsOpt.shared,
    limit: Annotated[Optional[int], typer.Option(help="Seeded random subset of this many items.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for subsampling, exemplars, option orders and sampling.")] = 0,
    batch_size: Annotated[str, typer.Option(help="Prompts per forward pass / generate call, or auto: the largest from 64 down that fits, halving on out-of-memory.")] = "8",
    dtype: Annotated[DtypeOpt, typer.Option(help=DTYPE_HELP)] = DtypeOpt.float32,
    device: DeviceOption = "auto",
    attn_implementation: AttnOption = None,
    data_dir: DataDirOption = None,
    cache: Annotated[bool, typer.Option(help="Reuse an identical earlier probe instead of running the model.")] = True,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Probe cache (default: $CALIBTUNE_CACHE/probes or ~/.cache/calibtune/probes).")] = None,
    overwrite: OverwriteFileOption = False,
    progress: ProgressOption = True,
) -> None:
    """Probe what the base model knows per item (SliCK categories, P_correct, answer NLL) for CogCalib."""
    from ..probing import ProbeConfig, run_probe, summarize_probe

    cfg = ProbeConfig(model=model, data=data, out=str(out), scoring=scoring.value, normalize=normalize,
                      template=template, preset=preset,
                      n_prompts=n_prompts, shots=shots, n_samples=n_samples, known_rule=known_rule.value, limit=limit,
                      false_known=false_known, exemplars=exemplars.value,
                      seed=seed, batch_size=batch_size_value(batch_size), dtype=dtype.value, device=device,
                      attn_implementation=attn_implementation.value if attn_implementation else None,
                      data_dir=str(data_dir) if data_dir else None, cache=cache,
                      cache_dir=str(cache_dir) if cache_dir else None, progress=progress, overwrite=overwrite)
    result = run_probe(cfg)  # bad settings or input: one error line (CalibtuneGroup)
    if not _main_process():
        return
    settings = ", ".join(f"{k} {v}" for k, v in result.settings.items() if k not in ("seed", "dtype"))
    table = Table(title=f"{model} · {result.data} · {settings}")
    for name in ("category", "n", "mean P_correct", "mean NLL", "known"):
        table.add_column(name, justify="left" if name == "category" else "right")
    for category, s in summarize_probe(result.records).items():
        table.add_row(category, str(s["n"]), f"{s['p_correct']:.3f}", f"{s['nll']:.3f}", f"{s['known']:.2f}")
    Console(**VERBATIM).print(table)
    if result.kind == "mc":
        from ..probing import false_known_rate

        n = result.settings["n_prompts"]
        rates = ", ".join(f"K={k}: {false_known_rate(n, k, known_rule.value, false_known):.4f}"
                          for k in sorted({len(r.prompts[0]["order"]) for r in result.records if r.prompts}))
        Console(**VERBATIM).print(f"expected false-known rate of a random guesser ({known_rule.value} rule, "
                                  f"{n} prompts): {rates}")
    how = "from the cache" if result.cached else "probed"
    Console(**VERBATIM).print(f"{len(result.records)} items {how} in {result.seconds:.1f} s; wrote {out}")


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
