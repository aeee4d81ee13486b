"""Evaluate a model's calibration end to end: data → prompts → option scores → metrics → report.

``evaluate(EvalConfig(...))`` is what ``calibtune eval`` runs; it writes into ``out``:

* ``predictions.jsonl`` — one line per item (``dataset, id, probs, label, pred, confidence, correct``),
  readable by ``calibtune metrics``;
* ``metrics.json`` — per data set the metric battery of :func:`calibtune.metrics.summarize`, plus the
  full config, timings and package versions;
* ``reliability.png`` / ``.svg`` — per data set the binned reliability diagram and, beside it, the
  smooth one (kernel regression at the smooth-ECE bandwidth, bootstrap band);
* ``report.md`` — the table and the figure.

All settings, data and the output folder are checked before the model is loaded. The files are built
in a staged folder beside ``out`` and swapped in together at the end, so an interrupted run (with
``--overwrite`` too) leaves the earlier results as they were, never new files beside old ones.
Short-answer data sets (``OpenItem``: TriviaQA, NQ-Open, EntityQuestions, files with ``answers``) go
to :func:`calibtune.open_eval.evaluate_open`, which writes the same four outputs for generated answers.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .data import load_dataset, exemplar_pool, takes_fields
from .evaluation import predictions_rows, rows_arrays, score_items
from .metrics import reliability_bins, report_metrics, smooth_reliability, summarize
from .open_eval import evaluate_open, is_open
from .posthoc import TemperatureScaling
from . import checks
from .devices import parse_batch_size, resolve_dtype
from .distributed import barrier, is_main_process, setup, world
from .io import atomic_write, staged_folder, write_jsonl
from .prompts import get_template
from .scoring import NORMALIZATIONS
from .settings import EvalConfig

REPORT_COLUMNS = ("data", "scoring", "n", *report_metrics(), "seconds")


def prepare_out_dir(out: str | Path, overwrite: bool) -> Path:
    """Check that ``out`` can take the results; creates nothing (:func:`evaluate` stages its outputs).

    ``out`` must be new, empty, or, with ``overwrite``, an earlier run's results folder (it holds
    ``metrics.json`` and no subfolders: ``--overwrite`` replaces the whole folder, so it never takes a
    folder of other files); its parent must be writable (the staged folder is built beside it).
    """
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"--out {path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(f"--out {path}: is not empty; pass --overwrite to replace its results")
        foreign = [p.name for p in path.iterdir() if p.is_dir()]
        if not (path / "metrics.json").is_file() or foreign:
            raise FileExistsError(f"--out {path}: --overwrite replaces a results folder of an earlier `calibtune eval` "
                                  f"(metrics.json, no subfolders), and this one is not"
                                  + (f" (it has the folder(s) {sorted(foreign)})" if foreign else ""))
    checks.writable_folder(path.absolute().parent, what="--out")
    return path


def check_eval_config(cfg: EvalConfig) -> None:
    """Every setting of ``cfg`` that can be checked without data or a model (see :mod:`calibtune.checks`)."""
    from .metrics.calibration import convention
    from .models import _torch_dtype, resolve_model

    if not cfg.data:
        raise ValueError("--data: give at least one data set")
    if not cfg.scoring or len(set(cfg.scoring)) != len(cfg.scoring) or not set(cfg.scoring) <= {"letter", "cloze"}:
        raise ValueError(f"--scoring must be letter and/or cloze, each once, got {list(cfg.scoring)}")
    if cfg.normalize not in NORMALIZATIONS:
        raise ValueError(f"--normalize must be one of {', '.join(NORMALIZATIONS)}, got {cfg.normalize!r}")
    checks.at_least("--shots", cfg.shots, 0)
    checks.at_least("--limit", cfg.limit, 1)
    parse_batch_size(cfg.batch_size)
    checks.at_least("--bootstrap", cfg.bootstrap, 0)
    try:
        convention(None, cfg.n_bins, None, "right")
    except ValueError as e:
        raise ValueError(f"--n-bins: {e}") from None
    _torch_dtype(cfg.dtype)
    checks.template(cfg.template)
    checks.adapter_folder(cfg.adapter)
    resolve_model(cfg.model)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for pkg in ("calibtune", "torch", "transformers", "tokenizers", "peft", "numpy", "gguf"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run the evaluation described by ``cfg`` and write its outputs; returns the ``metrics.json`` content.

    Settings, output folder, data, held-out set and exemplar pools are all checked before the model is
    loaded; the outputs are built in a staged folder and appear together at the end (or not at all).
    """
    check_eval_config(cfg)
    final = prepare_out_dir(cfg.out, cfg.overwrite)
    datasets = [load_dataset(spec, data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed,
                             shuffle_options=cfg.shuffle_options, skip_invalid=cfg.skip_invalid,
                             fields=cfg.fields if takes_fields(spec) else None) for spec in cfg.data]
    if not is_open(datasets):
        _check_held_out_and_pools(cfg, datasets)
    device = setup(cfg.device)  # under accelerate launch: joins the process group, one GPU per process
    cfg = dataclasses.replace(cfg, device=device, dtype=resolve_dtype(cfg.dtype, device))  # recorded as run
    if is_main_process():
        with staged_folder(final) as out:
            report = _evaluate(cfg, datasets, out)
    else:  # the other processes score their shards; their copies of the outputs are dropped
        with tempfile.TemporaryDirectory(prefix="calibtune-rank") as scratch:
            report = _evaluate(cfg, datasets, Path(scratch))
    barrier()
    return report


def _check_held_out_and_pools(cfg: EvalConfig, datasets) -> None:
    """The temperature-scaling set loads and is not an evaluation set; every k-shot data set has exemplars."""
    if cfg.temperature_data:
        held_out = load_dataset(cfg.temperature_data, data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed,
                                shuffle_options=cfg.shuffle_options, skip_invalid=cfg.skip_invalid)
        if any(held_out.name == ds.name for ds in datasets):
            raise ValueError(f"--temperature-data {held_out.name} is also an evaluation set; fit on a held-out split")
    for ds in datasets if cfg.shots else ():
        pool = exemplar_pool(ds.name, data_dir=cfg.data_dir)
        if pool is None:
            raise ValueError(f"--shots {cfg.shots}: {ds.name} has no other labelled split to draw exemplars from")
        if len(pool.items) < cfg.shots:
            raise ValueError(f"--shots {cfg.shots}: the exemplar pool of {ds.name} has only {len(pool.items)} items")


def _evaluate(cfg: EvalConfig, datasets, out: Path) -> dict[str, Any]:
    """The evaluation proper, writing into the staged folder ``out``."""
    from .models import load_model
    from .reports import markdown_table, reliability_grid

    if is_open(datasets):  # short-answer questions: generated answers and their confidences
        return evaluate_open(cfg, out, datasets)
    t0 = time.perf_counter()
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, adapter=cfg.adapter,
                                  trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation)
    load_seconds = time.perf_counter() - t0
    template = get_template(cfg.template, tokenizer)

    def run_scoring(ds, scoring: str) -> tuple[list[np.ndarray], float]:
        pool = exemplar_pool(ds.name, data_dir=cfg.data_dir) if cfg.shots else None
        t1 = time.perf_counter()
        logprobs = score_items(model, tokenizer, ds.items, template, scoring, normalize=cfg.normalize,
                               batch_size=cfg.batch_size, shots=cfg.shots, pool=pool.items if pool else None,
                               seed=cfg.seed, exemplars=cfg.exemplars, progress=cfg.progress)
        return logprobs, time.perf_counter() - t1

    temperatures: dict[str, TemperatureScaling] = {}
    if cfg.temperature_data:
        held_out = load_dataset(cfg.temperature_data, data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed,
                                shuffle_options=cfg.shuffle_options, skip_invalid=cfg.skip_invalid,
                                fields=cfg.fields if takes_fields(cfg.temperature_data) else None)
        for scoring in cfg.scoring:
            logprobs, _ = run_scoring(held_out, scoring)
            temperatures[scoring] = TemperatureScaling().fit(logprobs, [it.gold for it in held_out.items])
    all_rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    panels = []

    def record(ds, scoring: str, logprobs: list[np.ndarray], seconds: float) -> None:
        rows = predictions_rows(ds.name, scoring, ds.items, logprobs)
        all_rows.extend(rows)
        key = f"{ds.name} · {scoring}"
        probs, mask, labels = rows_arrays(rows)
        m = summarize(probs, labels, mask=mask, n_bins=cfg.n_bins, bootstrap=cfg.bootstrap, seed=cfg.seed)
        m.update({"data": ds.name, "scoring": scoring, "seconds": round(seconds, 2),
                  "items_per_second": round(len(rows) / seconds, 3) if seconds else None, "n_skipped": ds.n_skipped})
        results[key] = m
        panels.append((key, reliability_bins(probs, labels, n_bins=cfg.n_bins), m["ece"],
                       smooth_reliability(probs, labels, seed=cfg.seed)))

    for ds in datasets:
        for scoring in cfg.scoring:
            logprobs, seconds = run_scoring(ds, scoring)
            record(ds, scoring, logprobs, seconds)
            if scoring in temperatures:
                ts = temperatures[scoring]
                record(ds, f"{scoring}+ts", ts.transform_log(logprobs), 0.0)
                results[f"{ds.name} · {scoring}+ts"]["temperature"] = ts.temperature_
    write_jsonl(out / "predictions.jsonl", all_rows)
    report = {"config": dataclasses.asdict(cfg), "versions": package_versions(),
              "temperatures": {k: v.temperature_ for k, v in temperatures.items()},
              "model_load_seconds": round(load_seconds, 2), "processes": world().size, "results": results}
    with atomic_write(out / "metrics.json") as fh:
        json.dump(report, fh, indent=2)
    reliability_grid(panels, out / "reliability.png")
    table = markdown_table(list(results.values()), REPORT_COLUMNS)
    md = (f"# Calibration report: `{cfg.model}`\n\n"
          f"Template `{cfg.template}`, {cfg.shots}-shot, seed {cfg.seed}, {cfg.n_bins} equal-width bins "
          f"(calibtune convention: (lo, hi], exact decimal edges), dtype {cfg.dtype}.\n\n{table}\n"
          "![reliability diagrams](reliability.png)\n\n"
          "Per-item predictions: `predictions.jsonl` (recompute any metric with `calibtune metrics`).\n")
    with atomic_write(out / "report.md") as fh:
        fh.write(md)
    return report
