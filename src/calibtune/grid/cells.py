"""Before any work: every setting, name and data set of the grid is checked, and each cell gets its key.

A cell's key (:func:`cell_keys`) is a hash of everything that determines its numbers; it is stored in
the cell's ``cell.json``, so a changed config re-runs exactly the cells it makes stale (:func:`_retire`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..distributed import barrier, is_main_process
from ..config import validation_problems
from ..io import atomic_write
from .config import CompareConfig, Task, parse_mix, train_config

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
    from .. import checks
    from ..metrics.calibration import convention
    from ..models import _torch_dtype, resolve_model
    from ..probing import KNOWN_RULES
    from ..training import check_train_config

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
            tc = train_config(cfg, m, root / ".check", train_data=cfg.tasks[0].train if cfg.tasks else "-")
            check_train_config(tc)
        except ValidationError as e:
            raise ValueError(f"methods {m.name!r} (with train): {validation_problems(e)}") from None
        except ValueError as e:
            raise ValueError(f"methods {m.name!r} (with train): {e}") from None


def _data_digests(task: Task, seed: int, seen: dict[tuple, str]) -> dict[str, str]:
    """Load every data set of a cell as the cell will (spec, limit, seed): a typo or a bad row fails here,
    before any work, and the digest of the items goes into the cell key (``seen``: digests loaded already)."""
    from ..data import DataError, load_dataset
    from ..probing import _items_digest

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
