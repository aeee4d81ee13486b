"""Evaluate a model's calibration end to end: data → prompts → option scores → metrics → report.

``evaluate(EvalConfig(...))`` is what ``calibtune eval`` runs; it writes into ``out``:

* ``predictions.jsonl`` — one line per item (``dataset, id, probs, label, pred, confidence, correct``),
  readable by ``calibtune metrics``;
* ``metrics.json`` — per data set the metric battery of :func:`calibtune.metrics.summarize`, plus the
  full config, timings and package versions;
* ``reliability.png`` / ``.svg`` — one reliability diagram per data set;
* ``report.md`` — the table and the figure.

Every file is written to a temporary name and renamed, so an interrupted run leaves no half file.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .data import load_dataset, exemplar_pool
from .metrics import reliability_bins, summarize
from .posthoc import TemperatureScaling
from .predictions import atomic_write, write_jsonl
from .prompts import build_requests, get_template

REPORT_COLUMNS = ("data", "scoring", "n", "accuracy", "ece", "ace", "mce", "smece", "classwise_ece", "brier", "nll",
                  "auroc", "seconds")


@dataclass
class EvalConfig:
    """Settings of one evaluation run (also recorded in ``metrics.json``)."""

    model: str
    data: list[str]
    out: str
    scoring: list[Literal["letter", "cloze"]] = field(default_factory=lambda: ["cloze"])
    template: str = "blob"
    shots: int = 0
    limit: int | None = None
    seed: int = 0
    shuffle_options: bool = False
    normalize: Literal["sum", "mean"] = "sum"
    batch_size: int = 8
    dtype: str = "float32"
    device: str = "cpu"
    adapter: str | None = None
    trust_remote_code: bool = False
    data_dir: str | None = None
    skip_invalid: bool = False
    n_bins: int = 15
    bootstrap: int = 0
    temperature_data: str | None = None  # held-out spec to fit temperature scaling on (never the test set)
    overwrite: bool = False
    progress: bool = True


def prepare_out_dir(out: str | Path, overwrite: bool) -> Path:
    """Create ``out``; refuse an existing non-empty folder unless ``overwrite``."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} is not empty; pass --overwrite to replace its results")
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for pkg in ("calibtune", "torch", "transformers", "tokenizers", "peft", "numpy", "gguf"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def predictions_rows(dataset: str, scoring: str, items, logprobs: list[np.ndarray]) -> list[dict[str, Any]]:
    """Per-item prediction records from option log-probabilities."""
    rows = []
    for item, lp in zip(items, logprobs):
        probs = np.exp(lp - lp.max())
        probs /= probs.sum()
        pred = int(np.argmax(probs))
        rows.append({"dataset": dataset, "scoring": scoring, "id": item.id, "probs": [float(p) for p in probs],
                     "label": int(item.gold), "pred": pred, "confidence": float(probs[pred]),
                     "correct": int(pred == item.gold), "logprobs": [float(v) for v in lp]})
    return rows


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run the evaluation described by ``cfg`` and write its outputs; returns the ``metrics.json`` content."""
    from .metrics import pad_probabilities
    from .models import load_model
    from .reports import markdown_table, reliability_grid
    from .scoring import score

    out = prepare_out_dir(cfg.out, cfg.overwrite)
    datasets = [load_dataset(spec, data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed,
                             shuffle_options=cfg.shuffle_options, skip_invalid=cfg.skip_invalid) for spec in cfg.data]
    t0 = time.perf_counter()
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, adapter=cfg.adapter,
                                  trust_remote_code=cfg.trust_remote_code)
    load_seconds = time.perf_counter() - t0
    template = get_template(cfg.template, tokenizer)

    def run_scoring(ds, scoring: str) -> tuple[list[np.ndarray], float]:
        pool = exemplar_pool(ds.name, data_dir=cfg.data_dir) if cfg.shots else None
        requests = build_requests(ds.items, template, scoring, shots=cfg.shots,
                                  pool=pool.items if pool else None, seed=cfg.seed)
        t1 = time.perf_counter()
        logprobs = score(model, tokenizer, requests, scoring=scoring, batch_size=cfg.batch_size,
                         normalize=cfg.normalize, progress=cfg.progress)
        return logprobs, time.perf_counter() - t1

    temperatures: dict[str, TemperatureScaling] = {}
    if cfg.temperature_data:
        held_out = load_dataset(cfg.temperature_data, data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed,
                                shuffle_options=cfg.shuffle_options, skip_invalid=cfg.skip_invalid)
        if any(held_out.name == ds.name for ds in datasets):
            raise ValueError(f"--temperature-data {held_out.name} is also an evaluation set; fit on a held-out split")
        for scoring in cfg.scoring:
            logprobs, _ = run_scoring(held_out, scoring)
            temperatures[scoring] = TemperatureScaling().fit(logprobs, [it.gold for it in held_out.items])
    all_rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    panels = []

    def record(ds, scoring: str, logprobs: list[np.ndarray], seconds: float) -> None:
        rows = predictions_rows(ds.name, scoring, ds.items, logprobs)
        all_rows.extend(rows)
        probs, mask = pad_probabilities([r["probs"] for r in rows])
        labels = np.array([r["label"] for r in rows])
        key = f"{ds.name} · {scoring}"
        m = summarize(probs, labels, mask=mask, n_bins=cfg.n_bins, bootstrap=cfg.bootstrap, seed=cfg.seed)
        m.update({"data": ds.name, "scoring": scoring, "seconds": round(seconds, 2),
                  "items_per_second": round(len(rows) / seconds, 3) if seconds else None, "n_skipped": ds.n_skipped})
        results[key] = m
        panels.append((key, reliability_bins(probs, labels, n_bins=cfg.n_bins), m["ece"]))

    for ds in datasets:
        for scoring in cfg.scoring:
            logprobs, seconds = run_scoring(ds, scoring)
            record(ds, scoring, logprobs, seconds)
            if scoring in temperatures:
                ts = temperatures[scoring]
                record(ds, f"{scoring}+ts", [np.log(np.clip(p, 1e-300, 1)) for p in ts.transform(logprobs)], 0.0)
                results[f"{ds.name} · {scoring}+ts"]["temperature"] = ts.temperature_
    write_jsonl(out / "predictions.jsonl", all_rows)
    report = {"config": dataclasses.asdict(cfg), "versions": package_versions(),
              "temperatures": {k: v.temperature_ for k, v in temperatures.items()},
              "model_load_seconds": round(load_seconds, 2), "results": results}
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
