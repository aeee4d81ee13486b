"""The ``calibtune`` command line: thin commands over the library functions."""

from __future__ import annotations

import json
import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors

from . import __version__
from .errors import USER_ERRORS, describe

# User text (paths, data names, values) is printed verbatim: no rich markup, emoji codes or highlighting.
VERBATIM = {"markup": False, "emoji": False, "highlight": False}
err = Console(stderr=True, **VERBATIM)
out = Console(**VERBATIM)


def _error_line(message: str) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


class CalibtuneGroup(TyperGroup):
    """The one error path: a failure the user caused is one ``error:`` line and exit 2, never a traceback.

    A bad flag or value (click's usage errors) and every exception in :data:`~calibtune.errors.USER_ERRORS`
    become ``error: <message>``; any other exception is a bug and exits 1 with a hint. ``--debug``
    (anywhere on the command line) or ``CALIBTUNE_DEBUG=1`` shows the traceback instead.
    """

    debug = False

    def main(self, args=None, *rest, **kwargs):  # noqa: ANN001 (click's signature)
        args = list(sys.argv[1:] if args is None else args)
        # a class attribute, so the sub-groups (calibrate) see it too
        CalibtuneGroup.debug = "--debug" in args or os.environ.get("CALIBTUNE_DEBUG", "") not in ("", "0")
        return super().main([a for a in args if a != "--debug"], *rest, **kwargs)

    def invoke(self, ctx):  # noqa: ANN001
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click_errors.NoArgsIsHelpError, BrokenPipeError):
            raise  # BrokenPipeError (`| head`): typer exits quietly
        except click_errors.UsageError as e:
            if self.debug:
                raise
            command = e.ctx.command_path if e.ctx is not None else "calibtune"
            _error_line(f"{e.format_message()} (see: {command} --help)")
            raise typer.Exit(code=2) from None
        except click_errors.ClickException:
            raise
        except USER_ERRORS as e:
            if self.debug:
                raise
            _error_line(describe(e))
            raise typer.Exit(code=2) from None
        except Exception as e:
            if self.debug:
                raise
            _error_line(f"internal error, please report it: {type(e).__name__}: {describe(e)} "
                        "(run again with --debug for the traceback)")
            raise typer.Exit(code=1) from None


app = typer.Typer(cls=CalibtuneGroup, add_completion=False, no_args_is_help=True,
                  help="calibtune: measure and fix the calibration of fine-tuned LLMs.")


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
    """Print one clear error (verbatim) and exit with code 2 (bad input)."""
    _error_line(message)
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


class LmEvalMetricOpt(str, Enum):
    acc = "acc"
    acc_norm = "acc_norm"
    acc_bytes = "acc_bytes"
    acc_mutual_info = "acc_mutual_info"


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
    lm_eval_metric: Annotated[LmEvalMetricOpt, typer.Option(help="lm-eval samples file: the option distribution "
                                                            "of this metric's scores (acc: log-likelihoods; acc_norm: "
                                                            "per character; acc_bytes: per byte; acc_mutual_info: PMI).")] = LmEvalMetricOpt.acc,
) -> None:
    """Calibration metrics of a predictions file (ECE, MCE, RMSCE, ACE, smECE, Brier, NLL, AUROC...).

    Also reads lm-eval's ``--log_samples`` JSONL of a multiple-choice task and per-option log-likelihood
    JSONL (``{"loglikelihoods": [...], "label": k}`` per line).

    A file that mixes data sets or scorings (``calibtune eval`` writes one) is reported per group.
    """
    from . import checks
    from .metrics import reliability_bins, summarize
    from .metrics.bootstrap import check_resamples
    from .external import read_scored
    from .metrics.calibration import convention

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
        from .metrics import smooth_reliability
        from .reports import reliability_diagram, reliability_grid

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


class ScoringOpt(str, Enum):
    letter = "letter"
    cloze = "cloze"


class ExemplarsOpt(str, Enum):
    shared = "shared"
    per_item = "per-item"


class DtypeOpt(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
    auto = "auto"


class AttnOpt(str, Enum):
    sdpa = "sdpa"
    eager = "eager"
    flash_attention_2 = "flash_attention_2"


# One device story for eval, probe, train and compare (calibtune.devices); the same keys in YAML.
DEVICE_HELP = "cpu, cuda, cuda:N, mps or auto (CUDA, else MPS, else the CPU; says which). A missing device is an error."
DTYPE_HELP = ("auto = bfloat16 where the hardware has it (a CUDA GPU with bf16, a CPU with avx512_bf16/amx_bf16), "
              "else float32; says which.")
ATTN_HELP = ("Attention implementation (default: transformers', sdpa). Cloze falls back to one row per option, with "
             "a notice, when it takes no 4D mask (flash_attention_2).")
BATCH_HELP = "Items per forward pass, or auto: the largest from 64 down that fits, halving on out-of-memory."


def _batch_size(value: str):
    """The ``--batch-size`` value: a positive int or ``"auto"`` (a bad one is an error line)."""
    from .devices import parse_batch_size

    return parse_batch_size(value)


def _main_process() -> bool:
    """Whether this process prints the results (under ``accelerate launch`` only the main one does)."""
    from .distributed import is_main_process

    return is_main_process()


class ConfidenceOpt(str, Enum):
    ptrue = "ptrue"
    verbalized = "verbalized"


class CorrectnessOpt(str, Enum):
    em = "em"
    f1 = "f1"
    judge = "judge"


def data_fields(pairs: list[str] | None, specs: list[str]) -> dict[str, str]:
    """``--field KEY=COLUMN`` flags as a mapping; an error unless some spec is a file or ``hf:`` data set."""
    from .data import DataError, parse_fields, takes_fields

    if not pairs:
        return {}
    try:
        fields = parse_fields(pairs)
    except DataError as e:
        fail(str(e))
    if not any(takes_fields(s) for s in specs):
        fail(f"--field maps columns of file and hf: data, but no --data is one ({', '.join(specs)})")
    return fields


@app.command("eval")
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
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    attn_implementation: Annotated[Optional[AttnOpt], typer.Option(help=ATTN_HELP)] = None,
    adapter: Annotated[Optional[Path], typer.Option(help="A PEFT LoRA adapter folder saved by training.")] = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the hub (off by default).")] = False,
    data_dir: Annotated[Optional[Path], typer.Option(help="Root of the data sets (default: $CALIBTUNE_DATA_DIR).")] = None,
    field: Annotated[Optional[list[str]], typer.Option(help="Column of file/hf: data, repeatable: question=COL, options=COL (a list, or A,B,C columns), gold=COL; also id, context, subject.")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Skip malformed rows (and report how many) instead of failing.")] = False,
    n_bins: Annotated[int, typer.Option(help="Bins of the calibration metrics.")] = 15,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for confidence intervals (0 = none).")] = 0,
    temperature_data: Annotated[Optional[str], typer.Option(help="Held-out data spec to fit temperature scaling on; adds '+ts' results.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace results in a non-empty --out folder.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    qa_template: Annotated[str, typer.Option(help="Open questions: qa (SliCK's Q:/A:), chat, or a template file with {question} {subject}.")] = "qa",
    max_new_tokens: Annotated[int, typer.Option(help="Open questions: answer length cap in tokens (also stops at a newline or EOS).")] = 16,
    confidence: Annotated[list[ConfidenceOpt], typer.Option(help="Open questions: ptrue and/or verbalized, besides the sequence probability (product and per-token mean) every answer has; repeatable.")] = [ConfidenceOpt.ptrue, ConfidenceOpt.verbalized],
    correctness: Annotated[CorrectnessOpt, typer.Option(help="Open questions: correctness the calibration uses: em (exact match), f1, judge.")] = CorrectnessOpt.em,
    f1_threshold: Annotated[float, typer.Option(help="Open questions: an answer is F1-correct when its best token F1 >= this.")] = 0.5,
    judge: Annotated[Optional[str], typer.Option(help="Open questions: a local causal LM that judges each answer (yes/no).")] = None,
) -> None:
    """Evaluate a model's calibration on multiple-choice or short-answer data; writes predictions, metrics, diagram, report."""
    from .evaluate import EvalConfig, evaluate

    fields = data_fields(field, [*data, *([temperature_data] if temperature_data else [])])
    cfg = EvalConfig(model=model, data=list(data), out=str(out), fields=fields, scoring=[s.value for s in scoring], template=template,
                     shots=shots, exemplars=exemplars.value, limit=limit, seed=seed, shuffle_options=shuffle_options, normalize=normalize,
                     batch_size=_batch_size(batch_size), dtype=dtype.value, device=device,
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
    out_console.print(f"wrote {out}/predictions.jsonl, metrics.json, reliability.png, report.md")


class KnownRuleOpt(str, Enum):
    chance = "chance"
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
    known_rule: Annotated[KnownRuleOpt, typer.Option(help="known = more prompts right than a random guesser explains (chance, default), any prompt right (not Unknown), a majority, or all.")] = KnownRuleOpt.chance,
    false_known: Annotated[float, typer.Option(help="The chance rule: at most this share of random guessers is called known.")] = 0.05,
    exemplars: Annotated[ExemplarsOpt, typer.Option(help="Multiple choice: one seeded exemplar set per prompt index shared by all items (computed once), or a new set per item.")] = ExemplarsOpt.shared,
    limit: Annotated[Optional[int], typer.Option(help="Seeded random subset of this many items.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for subsampling, exemplars, option orders and sampling.")] = 0,
    batch_size: Annotated[str, typer.Option(help="Prompts per forward pass / generate call, or auto: the largest from 64 down that fits, halving on out-of-memory.")] = "8",
    dtype: Annotated[DtypeOpt, typer.Option(help=DTYPE_HELP)] = DtypeOpt.float32,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "auto",
    attn_implementation: Annotated[Optional[AttnOpt], typer.Option(help=ATTN_HELP)] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Root of the data sets (default: $CALIBTUNE_DATA_DIR).")] = None,
    cache: Annotated[bool, typer.Option(help="Reuse an identical earlier probe instead of running the model.")] = True,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Probe cache (default: $CALIBTUNE_CACHE/probes or ~/.cache/calibtune/probes).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Probe what the base model knows per item (SliCK categories, P_correct, answer NLL) for CogCalib."""
    from .probing import ProbeConfig, run_probe, summarize_probe

    cfg = ProbeConfig(model=model, data=data, out=str(out), scoring=scoring.value, normalize=normalize,
                      template=template, preset=preset,
                      n_prompts=n_prompts, shots=shots, n_samples=n_samples, known_rule=known_rule.value, limit=limit,
                      false_known=false_known, exemplars=exemplars.value,
                      seed=seed, batch_size=_batch_size(batch_size), dtype=dtype.value, device=device,
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
        from .probing import false_known_rate

        n = result.settings["n_prompts"]
        rates = ", ".join(f"K={k}: {false_known_rate(n, k, known_rule.value, false_known):.4f}"
                          for k in sorted({len(r.prompts[0]["order"]) for r in result.records if r.prompts}))
        Console(**VERBATIM).print(f"expected false-known rate of a random guesser ({known_rule.value} rule, "
                                  f"{n} prompts): {rates}")
    how = "from the cache" if result.cached else "probed"
    Console(**VERBATIM).print(f"{len(result.records)} items {how} in {result.seconds:.1f} s; wrote {out}")


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Option(help="YAML config (see experiments/*.yaml): model, data, scoring, objective, lora, training.")],
    output_dir: Annotated[Optional[Path], typer.Option(help="Where checkpoints, the adapter and curves go (overrides training.output_dir).")] = None,
    objective: Annotated[Optional[str], typer.Option(help="Override the objective: ce, ls, mbls, ecp, focal, sft, cogcalib.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Override training.max_steps.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the seed (data subset, LoRA init, order).")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Resume: 'last' for the newest checkpoint in the output dir, or a checkpoint path.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Override `device`: " + DEVICE_HELP)] = None,
    dtype: Annotated[Optional[DtypeOpt], typer.Option(help="Override `dtype` (the weights'; autocast is training.bf16): " + DTYPE_HELP)] = None,
    attn_implementation: Annotated[Optional[AttnOpt], typer.Option(help="Override `attn_implementation`: " + ATTN_HELP)] = None,
    batch_size: Annotated[Optional[str], typer.Option(help="Override `batch_size` (per device): a number, or auto (the Trainer's auto_find_batch_size).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start over in a non-empty output dir (its old checkpoints are removed).")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Fine-tune with a calibration-aware objective (Trainer + PEFT LoRA); the adapter loads with eval --adapter.

    Several processes: `accelerate launch --num_processes N -m calibtune train --config ...` (DDP; the
    held-out curve and RCFT's E-step are sharded across the processes)."""
    from .training import check_train_config, load_train_config, prepare_output_dir, run_training

    overrides: dict = {}
    if output_dir is not None:
        overrides["training.output_dir"] = str(output_dir)
    if max_steps is not None:
        overrides["training.max_steps"] = max_steps
    if objective is not None:
        overrides["objective"] = objective
    if seed is not None:
        overrides["seed"] = seed
    for key, value in (("device", device), ("dtype", dtype.value if dtype else None),
                       ("attn_implementation", attn_implementation.value if attn_implementation else None),
                       ("batch_size", _batch_size(batch_size) if batch_size is not None else None)):
        if value is not None:
            overrides[key] = value
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


@app.command("compare")
def compare_cmd(
    config: Annotated[Path, typer.Option(help="Experiment YAML: model, tasks (train/held-out/test/ood sets, seeds), methods.")],
    task: Annotated[Optional[list[str]], typer.Option(help="Run only these tasks (repeatable); results land cell by cell.")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the report's intervals.")] = 1000,
    device: Annotated[Optional[str], typer.Option(help="Override `device` (probing, training, evaluation): " + DEVICE_HELP)] = None,
    dtype: Annotated[Optional[DtypeOpt], typer.Option(help="Override `dtype`: " + DTYPE_HELP)] = None,
    attn_implementation: Annotated[Optional[AttnOpt], typer.Option(help="Override `attn_implementation`: " + ATTN_HELP)] = None,
    batch_size: Annotated[Optional[str], typer.Option(help="Override `batch_size` of probing and evaluation: " + BATCH_HELP)] = None,
    adopt_legacy: Annotated[bool, typer.Option(help="One-off: keep cells written before cell keys as results of this config (writes their key).")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a grid of methods x tasks x seeds; finished cells are kept, a killed run continues where it stopped."""
    from .compare import CompareConfig, adopt_legacy_cells, load_compare_config, run_compare
    from .comparison_report import write_report

    overrides = {key: value for key, value in (
        ("device", device), ("dtype", dtype.value if dtype else None),
        ("attn_implementation", attn_implementation.value if attn_implementation else None),
        ("batch_size", _batch_size(batch_size) if batch_size is not None else None)) if value is not None}
    cfg = load_compare_config(config)
    if overrides:
        cfg = CompareConfig.model_validate({**cfg.model_dump(), **overrides})
    try:  # the whole grid is checked before the first cell: name the config file
        if adopt_legacy:
            adopted = adopt_legacy_cells(cfg, only_tasks=task)
            if _main_process():
                err.print(f"adopted {len(adopted)} cell(s) written before cell keys as results of {config}",
                          soft_wrap=True)
        summary = run_compare(cfg, only_tasks=task, progress=progress)
    except (ValueError, OSError) as e:
        raise ValueError(f"{config}: {describe(e)}") from None
    if not _main_process():
        return
    md, html = write_report(summary.parent, n_boot=bootstrap, baselines=cfg.baselines, progress=progress)
    out.print(f"summary: {summary}\nreport: {md}, {html}")


calibrate_app = typer.Typer(cls=CalibtuneGroup, no_args_is_help=True,
                            help="Temperature scaling of scored files: fit on a held-out file, apply to another.")
app.add_typer(calibrate_app, name="calibrate")

SCORED_FILE = ("calibtune predictions (with probs/logprobs), lm-eval --log_samples JSONL of a multiple-choice "
               "task, or per-option log-likelihoods JSONL ({\"loglikelihoods\": [...], \"label\": k})")


def _score_kind(normalization: str) -> str:
    """Scores that one temperature may be moved between: raw log-likelihoods (lm-eval acc, calibtune
    cloze/letter, log-likelihood files) or one of lm-eval's normalisations."""
    return "log-likelihood" if normalization in ("acc", "none") else normalization


@calibrate_app.command("fit")
def calibrate_fit_cmd(
    file: Annotated[Path, typer.Argument(help=f"Held-out scored file: {SCORED_FILE}.")],
    out: Annotated[Path, typer.Option(help="Calibrator JSON to write.")],
    lm_eval_metric: Annotated[LmEvalMetricOpt, typer.Option(help="lm-eval samples: fit on this metric's scores.")] = LmEvalMetricOpt.acc,
    group: Annotated[Optional[str], typer.Option(help="Predictions with several 'dataset · scoring' groups: fit on this one.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Fit a temperature T (softmax(scores / T)) on FILE by NLL and save it as a small JSON calibrator."""
    from . import checks
    from .external import read_option_scores
    from .posthoc import TemperatureScaling, save_calibrator

    checks.output_file(out, overwrite=overwrite, inputs=(file,))
    scores = read_option_scores(file, lm_eval_metric=lm_eval_metric.value, group=group)
    ts = TemperatureScaling().fit(list(scores.scores), scores.labels)
    save_calibrator(ts, out, fitted_on=str(file), input_format=scores.format, normalization=scores.normalization,
                    group=group, n=scores.n, calibtune_version=__version__)
    out_console = Console(**VERBATIM)
    out_console.print(f"T = {ts.temperature_:.4f} fitted on {scores.n} items of {file} "
                      f"(NLL {ts.nll_before_:.4f} -> {ts.nll_after_:.4f}); wrote {out}", soft_wrap=True)


@calibrate_app.command("apply")
def calibrate_apply_cmd(
    calibrator: Annotated[Path, typer.Argument(help="Calibrator JSON from `calibtune calibrate fit`.")],
    file: Annotated[Path, typer.Argument(help=f"Scored file to calibrate: {SCORED_FILE}.")],
    out: Annotated[Path, typer.Option(help="Calibrated predictions JSONL to write (read it with `calibtune metrics`).")],
    lm_eval_metric: Annotated[Optional[LmEvalMetricOpt], typer.Option(help="lm-eval samples: the metric's scores (default: the one the calibrator was fitted on).")] = None,
    group: Annotated[Optional[str], typer.Option(help="Predictions with several 'dataset · scoring' groups: calibrate this one.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Apply a saved temperature to FILE; writes calibtune predictions (probs, label, pred, confidence, correct)."""
    from types import SimpleNamespace

    import numpy as np

    from . import checks
    from .evaluate import predictions_rows
    from .external import read_option_scores
    from .posthoc import load_calibrator
    from .predictions import write_jsonl

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
    logprobs = [np.log(np.clip(p, 1e-300, 1.0)) for p in ts.transform(list(scores.scores))]
    items = [SimpleNamespace(id=i, gold=int(y)) for i, y in zip(scores.ids, scores.labels)]
    rows = predictions_rows(group or str(file), f"{scores.normalization}+ts", items, logprobs)
    for r in rows:
        r["temperature"] = ts.temperature_
    write_jsonl(out, rows)
    Console(**VERBATIM).print(f"T = {ts.temperature_:.4f} applied to {scores.n} items of {file}; wrote {out}",
                              soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        print(f"calibtune {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of a failure (also anywhere on the line, "
                                                        "or CALIBTUNE_DEBUG=1).")] = False,
) -> None:
    """calibtune: measure and fix the calibration of fine-tuned LLMs."""
    _notices_to_stderr()


class _NoticeHandler(logging.Handler):
    """The ``calibtune`` logger's notices (device, dtype, batch size, fallbacks) as lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(Text(record.getMessage(), style="yellow" if record.levelno >= logging.WARNING else "dim"),
                  soft_wrap=True)


def _notices_to_stderr() -> None:
    logger = logging.getLogger("calibtune")
    if not any(isinstance(h, _NoticeHandler) for h in logger.handlers):
        logger.addHandler(_NoticeHandler())
    logger.setLevel(logging.INFO)


if __name__ == "__main__":
    app()
