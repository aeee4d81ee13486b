"""A resumable grid of methods × training sets × evaluation sets × seeds, cell by cell.

A *cell* is one (task, seed, method): train (unless the method needs no training), then evaluate on
the task's test sets and out-of-domain sets. Each finished cell writes ``cell.json`` last (atomically),
so a run killed at any point continues where it stopped and never recomputes a finished cell.
``summary.csv`` (``method,train_data,eval_data,seed,n,accuracy,ece,brier,nll`` then extra columns)
is rebuilt from the finished cells after each one.

Methods: ``base`` (the untouched model), ``ts`` (temperature scaling of another method's model,
fitted on the task's held-out split), and trained methods (any ``calibtune train`` objective).
Training items can be probed first (``calibtune probe``) so CogCalib gets its known labels; with
``train.eval_every`` the held-out items are probed too, so the training curve splits known/unknown.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .predictions import atomic_write

SUMMARY_COLUMNS = ["method", "train_data", "eval_data", "seed", "n", "accuracy", "ece", "brier", "nll"]
EXTRA_COLUMNS = ["smece", "mce", "classwise_ece", "auroc", "temperature", "train_seconds", "known_fraction"]


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    train: str
    train_limit: int | None = None
    heldout: str
    heldout_limit: int | None = None
    test: list[str]
    test_limit: int | None = None
    ood: list[str] = Field(default_factory=list)
    ood_limit: int | None = None
    seeds: list[int] = Field(default_factory=lambda: [0])


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    objective: str | None = None  # None: no training (base) or post-hoc (ts)
    objective_params: dict[str, Any] = Field(default_factory=dict)
    known_source: str = "none"
    style_steps: int = 0
    refit_every: int = 20
    estep: str = "epoch"  # RCFT: E-step every epoch (paper) or once (released code)
    sft_target: Literal["answer", "question+answer"] = "answer"  # question+answer = CFT paper's L_SFT2
    temperature_of: str | None = None  # ts: the method whose model is temperature-scaled


class ProbeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_prompts: int = 3
    shots: int = 1
    known_rule: str = "any"
    normalize: Literal["sum", "mean"] | None = None  # cloze probe: None = the grid's own normalize


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    model: str = "smollm2"
    dtype: str = "float32"
    scoring: str = "cloze"
    normalize: str = "mean"
    template: str = "blob"
    out: str
    n_bins: int = 15
    probe: ProbeSettings | None = Field(default_factory=ProbeSettings)
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields shared by every trained method")
    tasks: list[Task]
    methods: list[Method]
    baselines: list[str] = Field(default_factory=lambda: ["sft", "ts"],
                                 description="methods the report's Δ% columns compare against")


def load_compare_config(path: str | Path) -> CompareConfig:
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    try:
        return CompareConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ValueError(f"{path}: {problems}") from None


def _probe(cfg: CompareConfig, spec: str, limit: int | None, seed: int, out: Path) -> float:
    """Probe the base model on ``spec`` (cached by the probing module); returns the known fraction."""
    from .probing import ProbeConfig, run_probe

    settings = cfg.probe or ProbeSettings()
    pc = ProbeConfig(model=cfg.model, data=spec, out=str(out), limit=limit, seed=seed, scoring=cfg.scoring,
                     normalize=settings.normalize or cfg.normalize, template=cfg.template, n_prompts=settings.n_prompts, shots=settings.shots,
                     known_rule=settings.known_rule, progress=False)
    return float(np.mean([r.known for r in run_probe(pc).records]))


def _score(cfg: CompareConfig, model, tok, spec: str, limit: int | None, seed: int):
    """The data set and its per-item option log-probabilities under ``model``."""
    from .data import load_dataset
    from .prompts import build_requests, get_template
    from .scoring import score

    ds = load_dataset(spec, limit=limit, seed=seed)
    requests = build_requests(ds.items, get_template(cfg.template, tok), cfg.scoring)
    return ds, score(model, tok, requests, scoring=cfg.scoring, normalize=cfg.normalize, progress=False)


def evaluate_sets(cfg: CompareConfig, model, tok, specs: list[tuple[str, int | None]], seed: int, out: Path,
                  temperature: float | None = None) -> list[dict[str, Any]]:
    """Score ``specs``; write one predictions file per set into ``out``; return one metric row per set."""
    from .evaluate import predictions_rows
    from .metrics import pad_probabilities, summarize
    from .predictions import write_jsonl

    rows = []
    for spec, limit in specs:
        ds, logprobs = _score(cfg, model, tok, spec, limit, seed)
        if temperature is not None:
            logprobs = [lp / temperature - np.logaddexp.reduce(lp / temperature) for lp in logprobs]
        preds = predictions_rows(ds.name, cfg.scoring, ds.items, logprobs)
        write_jsonl(out / f"{_slug(ds.name)}.predictions.jsonl", preds)
        probs, mask = pad_probabilities([p["probs"] for p in preds])
        m = summarize(probs, np.array([p["label"] for p in preds]), mask=mask, n_bins=cfg.n_bins)
        rows.append({"eval_data": ds.name, **{k: m[k] for k in ("n", "accuracy", "ece", "brier", "nll", "smece",
                                                                  "mce", "classwise_ece", "auroc")}})
    return rows


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_cell(cfg: CompareConfig, task: Task, method: Method, seed: int, root: Path) -> dict[str, Any]:
    """Train (if needed) and evaluate one cell; returns its record (also written to ``cell.json``)."""
    from .models import load_model
    from .posthoc import TemperatureScaling
    from .training import TrainConfig, run_training

    cell_dir = root / task.name / f"seed{seed}" / method.name
    cell_dir.mkdir(parents=True, exist_ok=True)
    specs = [(s, task.test_limit) for s in task.test] + [(s, task.ood_limit) for s in task.ood]
    record: dict[str, Any] = {"task": task.name, "method": method.name, "seed": seed, "train_data": task.train}
    t0 = time.perf_counter()
    adapter, temperature = None, None
    if method.temperature_of:
        source_method = next((m for m in cfg.methods if m.name == method.temperature_of), None)
        if source_method is None:
            raise ValueError(f"method {method.name!r}: temperature_of={method.temperature_of!r} is not a method of the grid")
        source = cell_dir.parent / method.temperature_of / "adapter"
        if source_method.objective and not source.is_dir():
            raise FileNotFoundError(f"{source}: the model of {method.temperature_of!r} is missing for {method.name!r}")
        adapter = str(source) if source_method.objective else None
    elif method.objective:
        probe = cell_dir / "probe.jsonl" if method.known_source != "none" else None
        curve = task.heldout and cfg.train.get("eval_every")
        heldout_probe = cell_dir / "heldout_probe.jsonl" if cfg.probe is not None and curve else None
        if probe is not None:
            record["known_fraction"] = _probe(cfg, task.train, task.train_limit, seed, probe)
        if heldout_probe is not None:  # the training curve's known/unknown split of the held-out items
            _probe(cfg, task.heldout, task.heldout_limit, seed, heldout_probe)
        tc = TrainConfig.model_validate({
            **cfg.train, "model": cfg.model, "dtype": cfg.dtype, "train_data": task.train,
            "train_limit": task.train_limit, "seed": seed, "template": cfg.template, "scoring": cfg.scoring,
            "normalize": cfg.normalize, "objective": method.objective, "objective_params": method.objective_params,
            "known_source": method.known_source, "style_steps": method.style_steps, "refit_every": method.refit_every,
            "estep": method.estep, "sft_target": method.sft_target, "eval_data": task.heldout, "eval_limit": task.heldout_limit,
            "probe": str(probe) if probe is not None else None,
            "eval_probe": str(heldout_probe) if heldout_probe is not None else None,
            "training": {**cfg.train.get("training", {}), "output_dir": str(cell_dir / "adapter")}})
        summary = run_training(tc, progress=False)
        adapter = str(cell_dir / "adapter")
        record["thresholds"] = summary["thresholds"]
        record["train_loss"] = summary["train"].get("train_loss")
    record["train_seconds"] = round(time.perf_counter() - t0, 1)
    model, tok = load_model(cfg.model, dtype=cfg.dtype, adapter=adapter)
    if method.temperature_of:  # fitted on the held-out split, never on a test set
        held_out, logprobs = _score(cfg, model, tok, task.heldout, task.heldout_limit, seed)
        temperature = TemperatureScaling().fit(logprobs, [it.gold for it in held_out.items]).temperature_
    record["temperature"] = temperature
    record["results"] = evaluate_sets(cfg, model, tok, specs, seed, cell_dir, temperature)
    with atomic_write(cell_dir / "cell.json") as fh:
        json.dump(record, fh, indent=1)
    return record


def write_summary(root: Path) -> Path:
    """Rebuild ``summary.csv`` from every finished cell under ``root``."""
    rows = []
    for cell in sorted(root.glob("*/seed*/*/cell.json")):
        rec = json.loads(cell.read_text())
        for r in rec["results"]:
            rows.append({"method": rec["method"], "train_data": rec["train_data"], "eval_data": r["eval_data"],
                         "seed": rec["seed"], **{k: r.get(k) for k in ("n", "accuracy", "ece", "brier", "nll", "smece",
                                                                        "mce", "classwise_ece", "auroc")},
                         "temperature": rec.get("temperature"), "train_seconds": rec.get("train_seconds"),
                         "known_fraction": rec.get("known_fraction")})
    path = root / "summary.csv"
    with atomic_write(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS + EXTRA_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_compare(cfg: CompareConfig, *, only_tasks: list[str] | None = None, progress: bool = True) -> Path:
    """Run every unfinished cell (``temperature_of`` methods after their source), then write the summary."""
    from tqdm.auto import tqdm

    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    cells = [(t, m, s) for t in cfg.tasks if not only_tasks or t.name in only_tasks for s in t.seeds
             for m in sorted(cfg.methods, key=lambda m: m.temperature_of is not None)]
    todo = [c for c in cells if not (root / c[0].name / f"seed{c[2]}" / c[1].name / "cell.json").exists()]
    bar = tqdm(desc=f"{cfg.name}: cells", unit="cell", disable=not progress, initial=len(cells) - len(todo),
               total=len(cells))
    for task, method, seed in todo:
        bar.set_postfix_str(f"{task.name}/seed{seed}/{method.name}")
        run_cell(cfg, task, method, seed, root)
        write_summary(root)
        bar.update(1)
    bar.close()
    return write_summary(root)
