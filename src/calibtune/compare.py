"""A resumable grid of methods × training sets × evaluation sets × seeds, cell by cell.

A *cell* is one (task, seed, method): train (unless the method needs no training), then evaluate on
the task's test sets and out-of-domain sets. Each finished cell writes ``cell.json`` last (atomically),
so a run killed at any point continues where it stopped and never recomputes a finished cell. The
whole grid is checked first (names, references, settings, every data set); each cell's key, a hash of
everything that determines it (:func:`cell_keys`), is stored in ``cell.json``, and a changed config
re-runs exactly the cells it makes stale.
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
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .distributed import barrier, is_main_process, score_sharded, setup
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
    data_seed: int | None = Field(None, description="seed of every subset (train, held-out, test, ood) and of the "
                                  "probe, so all seeds share items and one probe; None = each cell's own seed")
    mix: str | None = Field(None, description="known:unknown ratio of the training set, e.g. '3:2', drawn from the "
                            "probe of the train pool (train, train_limit) per seed; needs train_size")
    train_size: int | None = Field(None, gt=0, description="size of the mixed training set (with mix)")


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
    false_known: float = 0.05  # the chance rule's rate
    exemplars: Literal["shared", "per-item"] = "per-item"  # round-1 grids probed with per-item exemplars
    normalize: Literal["sum", "mean"] | None = None  # cloze probe: None = the grid's own normalize


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    model: str = "smollm2"
    dtype: str = "float32"  # auto: bfloat16 where the hardware has it, else float32 (calibtune.devices)
    device: str = "auto"  # probing, training and evaluation all run here
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = None
    batch_size: Annotated[int, Field(gt=0)] | Literal["auto"] = 8  # probing and evaluation (training: train.training)
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


def parse_mix(mix: str) -> tuple[int, int]:
    """``"3:2"`` → ``(3, 2)``: parts of known and unknown items (non-negative, not both zero).

    >>> parse_mix("3:2"), parse_mix("0:5")
    ((3, 2), (0, 5))
    """
    parts = mix.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts) or sum(int(p) for p in parts) == 0:
        raise ValueError(f"mix: expected 'known:unknown' with non-negative integers, e.g. '3:2', but got {mix!r}")
    return int(parts[0]), int(parts[1])


def draw_mix(known: dict[str, bool], size: int, mix: str, seed: int) -> list[str]:
    """Ids of ``size`` distinct items, known and unknown in the ratio ``mix``, drawn with ``seed``.

    The known count is ``round(size * k / (k + u))``; the ids of each group are drawn without
    replacement from the probe's labels (in sorted id order, so the draw depends only on the seed),
    then shuffled together. Too few items of a group is an error.
    """
    k, u = parse_mix(mix)
    n_known = round(size * k / (k + u))
    rng = np.random.default_rng(seed)
    picked = []
    for label, n in ((True, n_known), (False, size - n_known)):
        pool = sorted(i for i, v in known.items() if v is label)
        if n > len(pool):
            raise ValueError(f"mix {mix!r}: {n} {'known' if label else 'unknown'} items needed for a set of {size}, "
                             f"but the probe has {len(pool)}")
        picked += [pool[j] for j in rng.choice(len(pool), size=n, replace=False)]
    return [picked[j] for j in rng.permutation(len(picked))]


def _probe(cfg: CompareConfig, spec: str, limit: int | None, seed: int, out: Path) -> float:
    """Probe the base model on ``spec`` (cached by the probing module); returns the known fraction."""
    from .probing import ProbeConfig, run_probe

    settings = cfg.probe or ProbeSettings()
    pc = ProbeConfig(model=cfg.model, data=spec, out=str(out), limit=limit, seed=seed, scoring=cfg.scoring,
                     normalize=settings.normalize or cfg.normalize, template=cfg.template, n_prompts=settings.n_prompts, shots=settings.shots,
                     known_rule=settings.known_rule, false_known=settings.false_known, exemplars=settings.exemplars,
                     progress=False, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size,
                     attn_implementation=cfg.attn_implementation)
    return float(np.mean([r.known for r in run_probe(pc).records]))


def _score(cfg: CompareConfig, model, tok, spec: str, limit: int | None, seed: int):
    """The data set and its per-item option log-probabilities under ``model``."""
    from .data import load_dataset
    from .prompts import build_requests, get_template

    ds = load_dataset(spec, limit=limit, seed=seed)
    requests = build_requests(ds.items, get_template(cfg.template, tok), cfg.scoring)
    return ds, score_sharded(model, tok, requests, scoring=cfg.scoring, normalize=cfg.normalize,
                             batch_size=cfg.batch_size, progress=False)


def _placement(cfg: CompareConfig) -> dict[str, Any]:
    """Where and how this process loads a model to evaluate (its own GPU under a launcher)."""
    return {"device": setup(cfg.device), "attn_implementation": cfg.attn_implementation}


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
        if is_main_process():
            write_jsonl(out / f"{_slug(ds.name)}.predictions.jsonl", preds)
        probs, mask = pad_probabilities([p["probs"] for p in preds])
        m = summarize(probs, np.array([p["label"] for p in preds]), mask=mask, n_bins=cfg.n_bins)
        rows.append({"eval_data": ds.name, **{k: m[k] for k in ("n", "accuracy", "ece", "brier", "nll", "smece",
                                                                  "mce", "classwise_ece", "auroc")}})
    return rows


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def run_cell(cfg: CompareConfig, task: Task, method: Method, seed: int, root: Path,
             key: str | None = None) -> dict[str, Any]:
    """Train (if needed) and evaluate one cell; returns its record (also written to ``cell.json``, with ``key``)."""
    from .models import load_model
    from .posthoc import TemperatureScaling
    from .training import TrainConfig, run_training

    cell_dir = root / task.name / f"seed{seed}" / method.name
    cell_dir.mkdir(parents=True, exist_ok=True)
    data_seed = seed if task.data_seed is None else task.data_seed
    specs = [(s, task.test_limit) for s in task.test] + [(s, task.ood_limit) for s in task.ood]
    record: dict[str, Any] = {"task": task.name, "method": method.name, "seed": seed, "train_data": task.train,
                              "key": key}
    t0 = time.perf_counter()
    adapter, temperature, trained = None, None, None
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
            from .training import _known_labels

            train_ids = draw_mix(_known_labels(probe), task.train_size, task.mix, seed)
            record.update(mix=task.mix, train_size=task.train_size)
        if heldout_probe is not None:  # the training curve's known/unknown split of the held-out items
            _probe(cfg, task.heldout, task.heldout_limit, data_seed, heldout_probe)
        tc = TrainConfig.model_validate({
            **cfg.train, "model": cfg.model, "dtype": cfg.dtype, "device": cfg.device,
            "attn_implementation": cfg.attn_implementation, "train_data": task.train,
            "train_limit": task.train_limit, "train_ids": train_ids, "data_seed": data_seed,
            "seed": seed, "template": cfg.template, "scoring": cfg.scoring,
            "normalize": cfg.normalize, "objective": method.objective, "objective_params": method.objective_params,
            "known_source": method.known_source, "style_steps": method.style_steps, "refit_every": method.refit_every,
            "estep": method.estep, "sft_target": method.sft_target, "eval_data": task.heldout, "eval_limit": task.heldout_limit,
            "probe": str(probe) if probe is not None else None,
            "eval_probe": str(heldout_probe) if heldout_probe is not None else None,
            "training": {**cfg.train.get("training", {}), "output_dir": str(cell_dir / "adapter")}})
        summary = run_training(tc, progress=False, keep_model=True)
        trained = (summary.pop("model"), summary.pop("tokenizer"))  # evaluated in memory: one load per cell
        adapter = str(cell_dir / "adapter")
        record["thresholds"] = summary["thresholds"]
        record["train_loss"] = summary["train"].get("train_loss")
        record["steps"] = summary["steps"]
        record["best"] = summary.get("best")
    record["train_seconds"] = round(time.perf_counter() - t0, 1)
    model, tok = trained if trained else load_model(cfg.model, dtype=cfg.dtype, adapter=adapter, **_placement(cfg))
    if method.temperature_of:  # fitted on the held-out split, never on a test set
        held_out, logprobs = _score(cfg, model, tok, task.heldout, task.heldout_limit, data_seed)
        temperature = TemperatureScaling().fit(logprobs, [it.gold for it in held_out.items]).temperature_
    record["temperature"] = temperature
    record["results"] = evaluate_sets(cfg, model, tok, specs, data_seed, cell_dir, temperature)
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
    if is_main_process():
        with atomic_write(cell_dir / "cell.json") as fh:
            json.dump(record, fh, indent=1)
    barrier()
    return record


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
                         "seed": rec["seed"], **{k: r.get(k) for k in ("n", "accuracy", "ece", "brier", "nll", "smece",
                                                                        "mce", "classwise_ece", "auroc")},
                         "temperature": rec.get("temperature"), "train_seconds": rec.get("train_seconds"),
                         "known_fraction": rec.get("known_fraction")})
    path = root / name
    with atomic_write(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS + EXTRA_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------------------------
# Before any work: every setting, name and data set is checked, and each cell gets its key.

CELL_KEY_VERSION = 1
_HOW_NOT_WHAT = {"name", "out", "device", "attn_implementation", "batch_size", "baselines", "tasks", "methods",
                 "train", "probe"}  # where and how fast a grid runs, not what a cell computes


def _safe_name(kind: str, name: str) -> None:
    """``name`` becomes one folder under ``out``: no separators, no ``..``, nothing hidden or empty."""
    if not name or name.strip() != name or name.startswith(".") or any(c in name for c in '/\\\0:'):
        raise ValueError(f"{kind} name {name!r} must be one plain folder name (no '/', '\\', ':', leading '.' "
                         "or surrounding spaces): it names the cell's folder under out")


def check_grid(cfg: CompareConfig, only_tasks: list[str] | None = None) -> None:
    """The settings of the grid that need no data: names, references between methods, numbers, the
    model, template and the Trainer settings of every trained method."""
    from . import checks
    from .metrics.calibration import convention
    from .models import _torch_dtype, resolve_model
    from .probing import KNOWN_RULES
    from .training import TrainConfig, check_train_config

    for kind, names in (("task", [t.name for t in cfg.tasks]), ("method", [m.name for m in cfg.methods])):
        for name in names:
            _safe_name(kind, name)
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{kind} name(s) {dupes} appear more than once: their cells would overwrite each other")
    tasks = {t.name for t in cfg.tasks}
    unknown = [t for t in only_tasks or () if t not in tasks]
    if unknown:
        raise ValueError(f"--task {unknown[0]!r} is not a task of {cfg.name!r}; tasks: {sorted(tasks)}")
    methods = {m.name: m for m in cfg.methods}
    for m in cfg.methods:
        if m.temperature_of is None:
            continue
        source = methods.get(m.temperature_of)
        if source is None:
            raise ValueError(f"methods {m.name!r}: temperature_of={m.temperature_of!r} is not a method of the grid; "
                             f"methods: {sorted(methods)}")
        if source.temperature_of is not None or source.name == m.name:
            raise ValueError(f"methods {m.name!r}: temperature_of={m.temperature_of!r} must name a base or trained "
                             "method, not a temperature-scaled one")
        if m.objective is not None:
            raise ValueError(f"methods {m.name!r}: set objective or temperature_of, not both")
    if cfg.baselines != CompareConfig.model_fields["baselines"].default_factory():  # set in the config
        missing = [b for b in cfg.baselines if b not in methods]
        if missing:
            raise ValueError(f"baselines {missing} are not methods of the grid; methods: {sorted(methods)}")
    for t in cfg.tasks:
        for name in ("train_limit", "heldout_limit", "test_limit", "ood_limit"):
            checks.at_least(f"tasks {t.name!r}: {name}", getattr(t, name), 1)
        if len(set(t.seeds)) != len(t.seeds):
            raise ValueError(f"tasks {t.name!r}: seeds {t.seeds} repeat a seed")
        if t.mix is not None:
            parse_mix(t.mix)
            if t.train_size is None or cfg.probe is None:
                raise ValueError(f"tasks {t.name!r}: mix {t.mix!r} needs train_size and probe settings")
    if cfg.scoring not in ("letter", "cloze"):
        raise ValueError(f"scoring must be 'letter' or 'cloze', got {cfg.scoring!r}")
    if cfg.normalize not in ("sum", "mean"):
        raise ValueError(f"normalize must be 'sum' or 'mean', got {cfg.normalize!r}")
    convention(None, cfg.n_bins, None, "right")
    if cfg.probe is not None:
        if cfg.probe.known_rule not in KNOWN_RULES:
            raise ValueError(f"probe.known_rule must be one of {KNOWN_RULES}, got {cfg.probe.known_rule!r}")
        checks.at_least("probe.n_prompts", cfg.probe.n_prompts, 1)
        checks.at_least("probe.shots", cfg.probe.shots, 0)
    _torch_dtype(cfg.dtype)
    checks.template(cfg.template)
    resolve_model(cfg.model)
    root = checks.writable_folder(cfg.out, what="out")
    for m in cfg.methods:
        if m.objective is None:
            continue
        try:
            tc = TrainConfig.model_validate({
                **cfg.train, "model": cfg.model, "dtype": cfg.dtype, "device": cfg.device,
                "train_data": cfg.tasks[0].train if cfg.tasks else "-",
                "template": cfg.template, "scoring": cfg.scoring, "normalize": cfg.normalize,
                "objective": m.objective, "objective_params": m.objective_params, "known_source": m.known_source,
                "style_steps": m.style_steps, "refit_every": m.refit_every, "estep": m.estep, "sft_target": m.sft_target,
                "training": {**cfg.train.get("training", {}), "output_dir": str(root / ".check")}})
            check_train_config(tc)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
            raise ValueError(f"methods {m.name!r} (with train): {problems}") from None
        except ValueError as e:
            raise ValueError(f"methods {m.name!r} (with train): {e}") from None


def _data_digests(task: Task, seed: int, seen: dict[tuple, str]) -> dict[str, str]:
    """Load every data set of a cell as the cell will (spec, limit, seed): a typo or a bad row fails here,
    before any work, and the digest of the items goes into the cell key (``seen``: digests loaded already)."""
    from .data import DataError, load_dataset
    from .probing import _items_digest

    data_seed = seed if task.data_seed is None else task.data_seed
    sets = [("train", task.train, task.train_limit), ("heldout", task.heldout, task.heldout_limit)]
    sets += [("test", s, task.test_limit) for s in task.test] + [("ood", s, task.ood_limit) for s in task.ood]
    digests = {}
    for role, spec, limit in sets:
        if (spec, limit, data_seed) not in seen:
            try:
                ds = load_dataset(spec, limit=limit, seed=data_seed)
            except DataError as e:
                raise DataError(f"tasks {task.name!r}, {role} {spec!r}: {e}") from None
            seen[spec, limit, data_seed] = _items_digest(ds.items)
        digests[f"{role}:{spec}:{limit}"] = seen[spec, limit, data_seed]
    return digests


def cell_keys(cfg: CompareConfig, only_tasks: list[str] | None = None) -> dict[tuple[str, str, int], str]:
    """Check the grid (:func:`check_grid`, every data set) and give each cell ``(task, method, seed)`` its key.

    The key is a hash of everything that determines the cell's numbers: the model and its dtype, scoring,
    normalize, template, n_bins; the task's data (specs, limits, seeds, mix) and the digest of the items
    each data set yields; the seed; the method; for trained methods the ``train`` and ``probe`` settings;
    for ``temperature_of`` the key of the source cell. Names, ``out``, device, attention implementation
    and batch size are left out (they say where and how fast, not what), and so are settings left at
    their defaults (a new calibtune setting with a default keeps every key).
    """
    import hashlib

    check_grid(cfg, only_tasks)
    grid = cfg.model_dump(exclude=_HOW_NOT_WHAT, exclude_defaults=True)
    keys: dict[tuple[str, str, int], str] = {}
    seen: dict[tuple, str] = {}
    for task in cfg.tasks:
        if only_tasks and task.name not in only_tasks:
            continue
        for seed in task.seeds:
            data = _data_digests(task, seed, seen)
            for method in sorted(cfg.methods, key=lambda m: m.temperature_of is not None):
                what: dict[str, Any] = {
                    "version": CELL_KEY_VERSION, "model": cfg.model, "grid": grid, "seed": seed, "data": data,
                    "task": task.model_dump(exclude={"name", "seeds"}, exclude_defaults=True),
                    "method": method.model_dump(exclude={"name", "temperature_of"}, exclude_defaults=True)}
                if method.objective is not None:
                    what["train"] = cfg.train
                    what["probe"] = cfg.probe.model_dump(exclude_defaults=True) if cfg.probe else None
                if method.temperature_of is not None:
                    what["temperature_of"] = keys[(task.name, method.temperature_of, seed)]
                blob = json.dumps(what, sort_keys=True, default=str).encode()
                keys[(task.name, method.name, seed)] = hashlib.sha256(blob).hexdigest()[:16]
    return keys


def _cell_json(root: Path, task: str, method: str, seed: int) -> Path:
    return root / task / f"seed{seed}" / method / "cell.json"


def adopt_legacy_cells(cfg: CompareConfig, only_tasks: list[str] | None = None) -> list[Path]:
    """One-off for cells written before cell keys: take each as computed with the current config and
    write its key into its ``cell.json``. Only for cells known to come from this config (e.g. the
    committed results of ``experiments/``); returns the adopted ``cell.json`` files."""
    root = Path(cfg.out)
    adopted = []
    for (task, method, seed), key in cell_keys(cfg, only_tasks).items():
        path = _cell_json(root, task, method, seed)
        if not path.is_file():
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        if "key" in record:
            continue
        record["key"] = key
        if is_main_process():
            with atomic_write(path) as fh:
                json.dump(record, fh, indent=1)
        adopted.append(path)
    barrier()
    return adopted


def _retire(root: Path, task: str, method: str, seed: int, old_key: str) -> Path:
    """Move a stale cell's folder to ``out/.stale/`` (never deleted: its results stay inspectable)."""
    import os

    cell = _cell_json(root, task, method, seed).parent
    target = root / ".stale" / task / f"seed{seed}" / f"{method}.{old_key}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(cell, target)
    return target


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
