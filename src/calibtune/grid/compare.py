"""Running the grid cell by cell: probe, train, score and evaluate each cell, then rebuild the summary.

A *cell* is one (task, seed, method). Each finished cell writes ``cell.json`` last (atomically), so a
run killed at any point continues where it stopped and never recomputes a finished cell.
``summary.csv`` (``method,train_data,eval_data,seed,n,accuracy,ece,brier,nll`` then extra columns)
is rebuilt from the finished cells after each one.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..distributed import barrier, is_main_process, setup
from ..evaluation import predictions_rows, rows_metrics, score_items
from ..io import atomic_write, write_jsonl
from ..posthoc import TemperatureScaling
from .cells import _cell_json, _retire, cell_keys
from .config import CompareConfig, Method, ProbeSettings, Task, draw_mix, train_config

RESULT_METRICS = ("n", "accuracy", "ece", "brier", "nll", "smece", "mce", "classwise_ece", "auroc")  # per cell and set
SUMMARY_COLUMNS = ["method", "train_data", "eval_data", "seed", *RESULT_METRICS[:5]]
EXTRA_COLUMNS = [*RESULT_METRICS[5:], "temperature", "train_seconds", "known_fraction"]


def _probe(cfg: CompareConfig, spec: str, limit: int | None, seed: int, out: Path) -> float:
    """Probe the base model on ``spec`` (cached by the probing module); returns the known fraction."""
    from ..probing import ProbeConfig, run_probe

    settings = cfg.probe or ProbeSettings()
    pc = ProbeConfig(model=cfg.model, data=spec, out=str(out), limit=limit, seed=seed, scoring=cfg.scoring,
                     normalize=settings.normalize or cfg.normalize, template=cfg.template, n_prompts=settings.n_prompts, shots=settings.shots,
                     known_rule=settings.known_rule, false_known=settings.false_known, exemplars=settings.exemplars,
                     progress=False, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size,
                     attn_implementation=cfg.attn_implementation)
    return float(np.mean([r.known for r in run_probe(pc).records]))


def _score(cfg: CompareConfig, model, tok, spec: str, limit: int | None, seed: int):
    """The data set and its per-item option log-probabilities under ``model``."""
    from ..data import load_dataset
    from ..prompts import get_template

    ds = load_dataset(spec, limit=limit, seed=seed)
    return ds, score_items(model, tok, ds.items, get_template(cfg.template, tok), cfg.scoring,
                           normalize=cfg.normalize, batch_size=cfg.batch_size)


def _placement(cfg: CompareConfig) -> dict[str, Any]:
    """Where and how this process loads a model to evaluate (its own GPU under a launcher)."""
    return {"device": setup(cfg.device), "attn_implementation": cfg.attn_implementation}


def evaluate_sets(cfg: CompareConfig, model, tok, specs: list[tuple[str, int | None]], seed: int, out: Path,
                  calibrator: TemperatureScaling | None = None) -> list[dict[str, Any]]:
    """Score ``specs``; write one predictions file per set into ``out``; return one metric row per set."""
    rows = []
    for spec, limit in specs:
        ds, logprobs = _score(cfg, model, tok, spec, limit, seed)
        if calibrator is not None:
            logprobs = calibrator.transform_log(logprobs)
        preds = predictions_rows(ds.name, cfg.scoring, ds.items, logprobs)
        if is_main_process():
            write_jsonl(out / f"{_slug(ds.name)}.predictions.jsonl", preds)
        m = rows_metrics(preds, n_bins=cfg.n_bins)
        rows.append({"eval_data": ds.name, **{k: m[k] for k in RESULT_METRICS}})
    return rows


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_cell(cfg: CompareConfig, task: Task, method: Method, seed: int, root: Path,
             key: str | None = None) -> dict[str, Any]:
    """Train (if needed) and evaluate one cell; returns its record (also written to ``cell.json``, with ``key``)."""
    from ..training import run_training

    cell_dir = root / task.name / f"seed{seed}" / method.name
    cell_dir.mkdir(parents=True, exist_ok=True)
    data_seed = seed if task.data_seed is None else task.data_seed
    record: dict[str, Any] = {"task": task.name, "method": method.name, "seed": seed, "train_data": task.train,
                              "key": key}
    t0 = time.perf_counter()
    adapter, trained = None, None
    if method.temperature_of:
        source_method = next((m for m in cfg.methods if m.name == method.temperature_of), None)
        if source_method is None:
            raise ValueError(f"method {method.name!r}: temperature_of={method.temperature_of!r} is not a method of the grid")
        source = cell_dir.parent / method.temperature_of / "adapter"
        if source_method.objective and not source.is_dir():
            raise FileNotFoundError(f"{source}: the model of {method.temperature_of!r} is missing for {method.name!r}")
        adapter = str(source) if source_method.objective else None
    elif method.objective:
        probe = cell_dir / "probe.jsonl" if method.known_source != "none" or task.mix else None
        curve = task.heldout and cfg.train.get("eval_every")
        heldout_probe = cell_dir / "heldout_probe.jsonl" if cfg.probe is not None and curve else None
        train_ids = None
        if probe is not None:
            record["known_fraction"] = _probe(cfg, task.train, task.train_limit, data_seed, probe)
        if task.mix:
            from ..training import _known_labels

            train_ids = draw_mix(_known_labels(probe), task.train_size, task.mix, seed)
            record.update(mix=task.mix, train_size=task.train_size)
        if heldout_probe is not None:  # the training curve's known/unknown split of the held-out items
            _probe(cfg, task.heldout, task.heldout_limit, data_seed, heldout_probe)
        tc = train_config(cfg, method, cell_dir / "adapter", train_data=task.train, train_limit=task.train_limit,
                          train_ids=train_ids, data_seed=data_seed, seed=seed, eval_data=task.heldout,
                          eval_limit=task.heldout_limit, probe=str(probe) if probe is not None else None,
                          eval_probe=str(heldout_probe) if heldout_probe is not None else None)
        summary = run_training(tc, progress=False, keep_model=True)
        trained = (summary.pop("model"), summary.pop("tokenizer"))  # evaluated in memory: one load per cell
        adapter = str(cell_dir / "adapter")
        record["thresholds"] = summary["thresholds"]
        record["train_loss"] = summary["train"].get("train_loss")
        record["steps"] = summary["steps"]
        record["best"] = summary.get("best")
    record["train_seconds"] = round(time.perf_counter() - t0, 1)
    _evaluate_cell(cfg, task, method, cell_dir, record, trained, adapter)
    if is_main_process():
        with atomic_write(cell_dir / "cell.json") as fh:
            json.dump(record, fh, indent=1)
    barrier()
    return record


def _evaluate_cell(cfg: CompareConfig, task: Task, method: Method, cell_dir: Path, record: dict[str, Any],
                   trained: tuple | None, adapter: str | None) -> None:
    """Score the cell's test and out-of-domain sets with its model (``trained`` in memory, else loaded with
    ``adapter``) and, where training kept one, its early-stopped model; the rows go into ``record``."""
    from ..models import load_model

    data_seed = record["seed"] if task.data_seed is None else task.data_seed
    specs = [(s, task.test_limit) for s in task.test] + [(s, task.ood_limit) for s in task.ood]
    calibrator = None
    model, tok = trained if trained else load_model(cfg.model, dtype=cfg.dtype, adapter=adapter, **_placement(cfg))
    if method.temperature_of:  # fitted on the held-out split, never on a test set
        held_out, logprobs = _score(cfg, model, tok, task.heldout, task.heldout_limit, data_seed)
        calibrator = TemperatureScaling().fit(logprobs, [it.gold for it in held_out.items])
    record["temperature"] = calibrator.temperature_ if calibrator else None
    record["results"] = evaluate_sets(cfg, model, tok, specs, data_seed, cell_dir, calibrator)
    best = cell_dir / "adapter" / "best"
    if method.objective and best.is_dir():  # early stopping on held-out accuracy (SliCK): its weights too
        weights = best / "adapter_model.safetensors"
        if weights.is_file():  # LoRA: swap the adapter weights in place
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            set_peft_model_state_dict(model, load_file(str(weights)))
        else:  # full fine-tuning: the saved model
            del model
            model, tok = load_model(str(best), dtype=cfg.dtype, **_placement(cfg))
        (cell_dir / "early_stop").mkdir(exist_ok=True)
        record["results_early_stop"] = evaluate_sets(cfg, model, tok, specs, data_seed, cell_dir / "early_stop")


def rescore(cfg: CompareConfig, *, only_tasks: list[str] | None = None, progress: bool = True) -> Path:
    """Score every finished trained cell again from its saved adapter (final and early-stopped), without
    training: after a fix to scoring, the cells then hold what the current code computes from the same
    weights. Their keys stay; ``cell.json`` records ``rescored`` (the seconds it took). Then the summary."""
    from tqdm.auto import tqdm

    root = Path(cfg.out)
    keys = cell_keys(cfg, only_tasks)
    tasks, methods = {t.name: t for t in cfg.tasks}, {m.name: m for m in cfg.methods}
    todo = []
    for (task, method, seed), key in keys.items():
        path = _cell_json(root, task, method, seed)
        if methods[method].objective is None or not path.is_file():
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("key") != key:
            raise ValueError(f"{path}: its key {record.get('key')!r} is not the config's {key!r} (a stale or "
                             "legacy cell): run the grid to recompute it, rescoring would mix two configs")
        if not (path.parent / "adapter").is_dir():
            raise FileNotFoundError(f"{path.parent / 'adapter'}: the cell's saved model is missing, nothing to rescore")
        todo.append((tasks[task], methods[method], path, record))
    for task, method, path, record in tqdm(todo, desc=f"{cfg.name}: rescore", unit="cell", disable=not progress):
        t0 = time.perf_counter()
        _evaluate_cell(cfg, task, method, path.parent, record, None, str(path.parent / "adapter"))
        record["rescored"] = round(time.perf_counter() - t0, 1)
        if is_main_process():
            with atomic_write(path) as fh:
                json.dump(record, fh, indent=1)
        barrier()
    return write_summary(root)


def write_summary(root: Path) -> Path:
    """Rebuild ``summary.csv`` from every finished cell under ``root`` (and ``summary_early_stop.csv``
    from the early-stopped models of the cells that have one); only the main process writes."""
    if not is_main_process():
        return root / "summary.csv"
    path = _write_summary(root, "results", "summary.csv")
    if any("results_early_stop" in json.loads(c.read_text()) for c in root.glob("*/seed*/*/cell.json")):
        _write_summary(root, "results_early_stop", "summary_early_stop.csv")
    return path


def _write_summary(root: Path, key: str, name: str) -> Path:
    rows = []
    for cell in sorted(root.glob("*/seed*/*/cell.json")):
        rec = json.loads(cell.read_text())
        for r in rec.get(key, []):
            rows.append({"method": rec["method"], "train_data": rec["train_data"], "eval_data": r["eval_data"],
                         "seed": rec["seed"], **{k: r.get(k) for k in RESULT_METRICS},
                         "temperature": rec.get("temperature"), "train_seconds": rec.get("train_seconds"),
                         "known_fraction": rec.get("known_fraction")})
    path = root / name
    with atomic_write(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS + EXTRA_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_compare(cfg: CompareConfig, *, only_tasks: list[str] | None = None, progress: bool = True) -> Path:
    """Run every unfinished or stale cell (``temperature_of`` methods after their source), then write the summary.

    Everything is checked first (:func:`cell_keys`). A finished cell whose key differs from its config's
    is stale: its folder moves to ``out/.stale/`` and it runs again. A cell written before keys existed
    (no ``key`` in ``cell.json``) is refused until adopted (:func:`adopt_legacy_cells`) or removed.
    """
    from tqdm.auto import tqdm

    root = Path(cfg.out)
    keys = cell_keys(cfg, only_tasks)
    tasks, methods = {t.name: t for t in cfg.tasks}, {m.name: m for m in cfg.methods}
    legacy, todo = [], []
    for (task, method, seed), key in keys.items():
        path = _cell_json(root, task, method, seed)
        old = json.loads(path.read_text(encoding="utf-8")).get("key") if path.is_file() else None
        if path.is_file() and old is None:
            legacy.append(path)
        elif old != key:  # not finished, or stale (``old`` is the key it was computed with)
            todo.append((tasks[task], methods[method], seed, key, old))
    if legacy:
        raise ValueError(f"{len(legacy)} cell(s) were written before cell keys, e.g. {legacy[0]}: pass "
                         "--adopt-legacy to keep them as results of this config, or remove them to run them again")
    root.mkdir(parents=True, exist_ok=True)
    cells = list(keys)
    bar = tqdm(desc=f"{cfg.name}: cells", unit="cell", disable=not progress, initial=len(cells) - len(todo),
               total=len(cells))
    for task, method, seed, key, stale in todo:
        bar.set_postfix_str(f"{task.name}/seed{seed}/{method.name}")
        if stale is not None and is_main_process():
            _retire(root, task.name, method.name, seed, stale)
        barrier()
        run_cell(cfg, task, method, seed, root, key=key)
        write_summary(root)
        bar.update(1)
    bar.close()
    return write_summary(root)
