"""The open-ended QA study (issue 13): SliCK's known/unknown split, SFT vs CoLS/CoECP on free-form answers.

Per task of experiments/open_qa.yaml:

1. probe the training pool, the held-out and the test items with SliCK (``calibtune probe`` settings of the
   config's ``probe``), and write the category counts (per relation for EntityQuestions) to
   ``<out>/<task>/probe_counts.json``;
2. per mix (fraction of Unknown training items) and seed, sample ``train_size`` training items with that mix;
3. per method: train (``calibtune train`` on the sampled ids; token-level objective, held-out curve over
   generations, best held-out step kept), then evaluate the model at the end of training and at the best
   held-out step on the test items (``calibtune eval``: EM, F1, sequence probability, P(True), verbalized);
   ``base`` is the untouched model;
4. ``summary.csv`` (one row per cell and evaluated model), with the test accuracy on the test items the base
   model knows and does not know — SliCK's finding is that fitting Unknown items lowers accuracy (more
   hallucination) on both, and most once training has converged.

Usage: .venv/bin/python experiments/open_qa_study.py [--config experiments/open_qa.yaml] [--task NAME]
       [--probe-only]
Finished cells are kept (``cell.json``): re-running continues where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from calibtune.evaluate import EvalConfig, evaluate
from calibtune.predictions import atomic_write
from calibtune.probing import ProbeConfig, run_probe
from calibtune.training import TrainConfig, run_training

ROOT = Path(__file__).resolve().parent.parent
SUMMARY_COLUMNS = ["task", "mix", "unknown_fraction", "method", "seed", "model", "n", "accuracy", "accuracy_f1",
                   "ece", "ece_seq_prob_mean", "ece_ptrue", "ece_verbalized", "n_verbalized_unparsed", "brier",
                   "auroc", "accuracy_known", "accuracy_unknown", "confidence_known", "confidence_unknown",
                   "n_train_unknown", "steps", "best_step", "train_seconds"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Task(Strict):
    name: str
    pool: str
    pool_limit: int | None = None
    heldout: str
    test: str
    train_size: int = Field(gt=0)


class Mix(Strict):
    name: str
    unknown_fraction: float = Field(ge=0, le=1)


class Method(Strict):
    name: str
    objective: str | None = None  # None: the base model, not trained
    objective_params: dict[str, Any] = Field(default_factory=dict)
    known_source: str = "none"
    style_steps: int = 0
    refit_every: int = 20
    mixes: list[str] | None = None  # None: every mix (base: evaluated once)
    eval_shots: int | None = None  # None: the config's evaluate.shots


class StudyConfig(Strict):
    name: str
    model: str = "smollm2"
    dtype: str = "float32"
    qa_template: str = "qa"
    max_new_tokens: int = 16
    out: str
    work: str
    probe: dict[str, Any] = Field(default_factory=dict)
    evaluate: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    tasks: list[Task]
    mixes: list[Mix]
    methods: list[Method]
    seeds: list[int]


def probe(cfg: StudyConfig, spec: str, limit: int | None, out: Path) -> dict[str, Any]:
    """SliCK records of ``spec`` by item id (cached by the probing module), also written to ``out``."""
    pc = ProbeConfig(model=cfg.model, data=spec, limit=limit, out=str(out), dtype=cfg.dtype, progress=False,
                     **cfg.probe)
    return {r.id: r for r in run_probe(pc).records}


def counts(records: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Category counts in all and per relation (the id's prefix before the split, e.g. entity-questions/P17)."""
    groups: dict[str, Counter] = {"all": Counter()}
    for item_id, r in records.items():
        groups["all"][r.category] += 1
        groups.setdefault(item_id.split(":", 1)[0], Counter())[r.category] += 1
    return {k: {**dict(v), "known": sum(n for c, n in v.items() if c != "Unknown")} for k, v in groups.items()}


def sample(records: dict[str, Any], size: int, unknown_fraction: float, seed: int) -> list[str]:
    """``size`` ids with ``round(size * unknown_fraction)`` Unknown ones (seeded); refused if the pool is short."""
    unknown = sorted(i for i, r in records.items() if not r.known)
    known = sorted(i for i, r in records.items() if r.known)
    n_u = round(size * unknown_fraction)
    if n_u > len(unknown) or size - n_u > len(known):
        raise SystemExit(f"pool too small: need {n_u} unknown and {size - n_u} known, have {len(unknown)} and "
                         f"{len(known)}; lower train_size or pick relations with more known items")
    rng = np.random.default_rng(seed)
    chosen = list(rng.choice(unknown, n_u, replace=False)) + list(rng.choice(known, size - n_u, replace=False))
    return sorted(str(i) for i in chosen)


def evaluate_model(cfg: StudyConfig, task: Task, method: Method, adapter: str | None, out: Path, seed: int,
                   test_known: dict[str, bool]) -> dict[str, Any]:
    """``calibtune eval`` of one model on the test items; the row of figures for the summary."""
    settings = {**cfg.evaluate, **({"shots": method.eval_shots} if method.eval_shots is not None else {})}
    report = evaluate(EvalConfig(model=cfg.model, data=[task.test], out=str(out), adapter=adapter, seed=seed,
                                 dtype=cfg.dtype, qa_template=cfg.qa_template, max_new_tokens=cfg.max_new_tokens,
                                 overwrite=True, progress=False, **settings))
    results = {m["confidence"]: m for m in report["results"].values()}
    seq = results["seq_prob"]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    row = {"n": seq["n"], "accuracy": seq["accuracy"], "accuracy_f1": seq.get("accuracy_f1"), "ece": seq["ece"],
           "brier": seq["brier"], "auroc": seq["auroc"]}
    for kind in ("seq_prob_mean", "ptrue", "verbalized"):
        if kind in results:
            row[f"ece_{kind}"] = results[kind].get("ece")
    if "verbalized" in results:
        row["n_verbalized_unparsed"] = results["verbalized"]["n_unparsed"]
    for name, flag in (("known", True), ("unknown", False)):
        sel = [r for r in rows if test_known.get(r["id"]) is flag]
        if sel:
            row[f"accuracy_{name}"] = float(np.mean([r["correct"] for r in sel]))
            row[f"confidence_{name}"] = float(np.mean([r["confidence"] for r in sel]))
    return row


def run_cell(cfg: StudyConfig, task: Task, mix: Mix | None, method: Method, seed: int, paths: dict[str, Path],
             records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cell = Path(cfg.out) / task.name / f"seed{seed}" / (f"{mix.name}-{method.name}" if mix else method.name)
    done = cell / "cell.json"
    if done.exists():
        return json.loads(done.read_text())
    cell.mkdir(parents=True, exist_ok=True)
    test_known = {i: bool(r.known) for i, r in records["test"].items()}
    record: dict[str, Any] = {"task": task.name, "mix": mix.name if mix else None,
                              "unknown_fraction": mix.unknown_fraction if mix else None, "method": method.name,
                              "seed": seed, "models": {}}
    if method.objective is None:
        record["models"]["base"] = evaluate_model(cfg, task, method, None, cell / "eval", seed, test_known)
    else:
        ids = sample(records["pool"], task.train_size, mix.unknown_fraction, seed)
        adapter = Path(cfg.work) / task.name / f"seed{seed}" / f"{mix.name}-{method.name}"
        tc = TrainConfig.model_validate({
            **cfg.train, "model": cfg.model, "dtype": cfg.dtype, "train_data": task.pool,
            "train_limit": task.pool_limit, "data_seed": 0, "train_ids": ids, "seed": seed,
            "qa_template": cfg.qa_template, "max_new_tokens": cfg.max_new_tokens, "eval_data": task.heldout,
            "objective": method.objective, "objective_params": method.objective_params,
            "known_source": method.known_source, "style_steps": method.style_steps, "refit_every": method.refit_every,
            "probe": str(paths["pool"]), "eval_probe": str(paths["heldout"]),
            "training": {**cfg.train.get("training", {}), "output_dir": str(adapter)}})
        summary = run_training(tc, progress=False)
        with atomic_write(cell / "curve.json") as fh:
            json.dump(summary["curve"], fh, indent=1)
        record.update(ids=ids, n_train_unknown=sum(not records["pool"][i].known for i in ids),
                      steps=summary["steps"], best_step=(summary.get("best") or {}).get("step"),
                      train_seconds=summary["train"].get("train_runtime"), thresholds=summary["thresholds"])
        record["models"]["end"] = evaluate_model(cfg, task, method, str(adapter), cell / "eval-end", seed,
                                                 test_known)
        if (adapter / "best").is_dir():
            record["models"]["best"] = evaluate_model(cfg, task, method, str(adapter / "best"), cell / "eval-best",
                                                      seed, test_known)
    with atomic_write(done) as fh:
        json.dump(record, fh, indent=1)
    return record


def write_summary(out: Path) -> Path:
    """``summary.csv`` of every finished cell under ``out`` (also those of an earlier run or another task)."""
    rows = []
    for done in sorted(out.glob("*/seed*/*/cell.json")):
        rec = json.loads(done.read_text())
        for model, figures in rec["models"].items():
            rows.append({**{k: rec.get(k) for k in SUMMARY_COLUMNS}, "model": model, **figures})
    path = out / "summary.csv"
    with atomic_write(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=ROOT / "experiments" / "open_qa.yaml")
    ap.add_argument("--task", action="append", help="only these tasks (repeatable)")
    ap.add_argument("--probe-only", action="store_true", help="probe the pools, print the counts and stop")
    args = ap.parse_args()
    cfg = StudyConfig.model_validate(yaml.safe_load(args.config.read_text(encoding="utf-8")))
    out = Path(cfg.out)
    finished = []
    for task in cfg.tasks:
        if args.task and task.name not in args.task:
            continue
        folder = out / task.name
        folder.mkdir(parents=True, exist_ok=True)
        paths = {name: folder / f"{name}_probe.jsonl" for name in ("pool", "heldout", "test")}
        records = {"pool": probe(cfg, task.pool, task.pool_limit, paths["pool"])}
        if not args.probe_only:
            records["heldout"] = probe(cfg, task.heldout, None, paths["heldout"])
            records["test"] = probe(cfg, task.test, None, paths["test"])
        table = {name: counts(recs) for name, recs in records.items()}
        with atomic_write(folder / "probe_counts.json") as fh:
            json.dump(table, fh, indent=1)
        print(f"{task.name}: SliCK categories of the training pool\n{json.dumps(table['pool'], indent=1)}")
        if args.probe_only:
            continue
        for seed in cfg.seeds:
            for method in cfg.methods:
                mixes = [None] if method.objective is None else [m for m in cfg.mixes
                                                                 if method.mixes is None or m.name in method.mixes]
                for mix in mixes:
                    if method.objective is None and seed != cfg.seeds[0]:
                        continue  # the base model does not depend on the seed
                    finished.append(run_cell(cfg, task, mix, method, seed, paths, records))
                    write_summary(out)
                    print(f"{task.name}/seed{seed}/{mix.name + '-' if mix else ''}{method.name}: done")
    if finished:
        print(f"wrote {write_summary(out)}")


if __name__ == "__main__":
    main()
