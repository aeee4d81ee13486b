"""The end-to-end probing run (``calibtune probe``): settings, checks, the result cache, the output file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..data import MCItem, exemplar_pool, load_dataset
from ..devices import AUTO_MAX_BATCH, parse_batch_size, resolve_dtype, with_batch_backoff
from ..distributed import barrier, is_main_process, setup
from ..io import cache_root, write_jsonl
from ..models import load_model, resolve_model
from ..settings import ProbeConfig
from .labels import KNOWN_RULES, ProbeRecord, load_probe
from .mc import probe_mc
from .open import probe_open

_FORMAT_VERSION = 2  # bump when the probing procedure changes, to invalidate cached results

# Per preset and kind: the defaults of the settings that the caller leaves unset (None).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {"mc": {"n_prompts": 5, "shots": 2},  # 5: the chance rule can call a 2-option item known
                "open": {"n_prompts": 3, "shots": 4, "n_samples": 2}},
    "slick": {"mc": {"n_prompts": 10, "shots": 4},
              "open": {"n_prompts": 10, "shots": 4, "n_samples": 16}},  # N_ex = 10, N_sample = 16
}


def probe_cache_dir() -> Path:
    """Probe cache: ``$CALIBTUNE_CACHE/probes`` or ``~/.cache/calibtune/probes`` (under :func:`calibtune.io.cache_root`)."""
    return cache_root() / "probes"


def _model_identity(name: str) -> dict[str, Any]:
    """Name, resolved location, and size/mtime of the weight files (so a retrained folder is a new model)."""
    resolved = resolve_model(name)
    ident: dict[str, Any] = {"name": name, "kind": resolved.kind, "location": resolved.location}
    path = Path(resolved.location)
    if resolved.kind != "hub":
        files = [path] if path.is_file() else sorted(
            p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".gguf"))
        ident["files"] = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return ident


def _items_digest(items: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps([dataclasses.asdict(it) for it in items]).encode()).hexdigest()


def check_probe_config(cfg: ProbeConfig) -> None:
    """Every setting of ``cfg`` that can be checked before data or model are loaded, and the output file."""
    from .. import checks
    from ..models import _torch_dtype

    for name in ("n_prompts", "top_k", "max_new_tokens", "limit"):
        checks.at_least(f"--{name.replace('_', '-')}", getattr(cfg, name), 1)
    parse_batch_size(cfg.batch_size)
    for name in ("shots", "n_samples"):
        checks.at_least(f"--{name.replace('_', '-')}", getattr(cfg, name), 0)
    if not (isinstance(cfg.temperature, (int, float)) and cfg.temperature > 0):
        raise ValueError(f"temperature must be > 0, got {cfg.temperature!r}")
    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown preset {cfg.preset!r}: use one of {tuple(PRESETS)}")
    if cfg.known_rule not in KNOWN_RULES:
        raise ValueError(f"known_rule must be one of {KNOWN_RULES}, got {cfg.known_rule!r}")
    if cfg.scoring not in ("cloze", "letter"):
        raise ValueError(f"scoring must be 'cloze' or 'letter', got {cfg.scoring!r}")
    if cfg.normalize not in ("sum", "mean"):
        raise ValueError(f"normalize must be 'sum' or 'mean', got {cfg.normalize!r}")
    _torch_dtype(cfg.dtype)
    checks.template(cfg.template)
    resolve_model(cfg.model)
    if cfg.out:
        checks.output_file(cfg.out, cfg.overwrite, inputs=(cfg.data,))
    if cfg.cache:
        checks.writable_folder(Path(cfg.cache_dir) if cfg.cache_dir else probe_cache_dir(), what="probe cache")


@dataclass
class ProbeResult:
    """Records in item order, the data set's kind and canonical name, the settings used, and timings."""

    records: list[ProbeRecord]
    kind: Literal["mc", "open"]
    data: str
    settings: dict[str, Any]
    cached: bool
    seconds: float


def _settings(cfg: ProbeConfig, kind: str) -> dict[str, Any]:
    """The settings that change the result of ``kind`` probing, with preset defaults filled in."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown preset {cfg.preset!r}: use one of {tuple(PRESETS)}")
    defaults = PRESETS[cfg.preset][kind]
    settings = {k: getattr(cfg, k) if getattr(cfg, k) is not None else defaults[k] for k in defaults}
    settings.update(known_rule=cfg.known_rule, seed=cfg.seed, dtype=cfg.dtype)
    if kind == "mc":
        if cfg.normalize not in ("sum", "mean"):
            raise ValueError(f"normalize must be 'sum' or 'mean', got {cfg.normalize!r}")
        settings.update(scoring=cfg.scoring, template=cfg.template, exemplars=cfg.exemplars)
        if cfg.known_rule == "chance":
            settings.update(false_known=cfg.false_known)
        if cfg.scoring == "cloze":
            settings.update(normalize=cfg.normalize)
    else:
        settings.update(temperature=cfg.temperature, top_k=cfg.top_k, max_new_tokens=cfg.max_new_tokens)
    return settings


def run_probe(cfg: ProbeConfig) -> ProbeResult:
    """Load the data, probe (or reuse the cached result) and write ``cfg.out``.

    The exemplar pool is the data set's other labelled split (:func:`exemplar_pool`) or, when it has
    none, the whole data set (an item is never its own exemplar). Batch size, device and progress are
    not part of the cache key. Settings and ``out`` are checked first (:func:`check_probe_config`).
    """
    check_probe_config(cfg)
    device = setup(cfg.device)  # joins the process group under accelerate launch
    cfg = dataclasses.replace(cfg, device=device, dtype=resolve_dtype(cfg.dtype, device))  # the cache keys the real dtype
    ds = load_dataset(cfg.data, data_dir=cfg.data_dir, limit=cfg.limit, seed=cfg.seed)
    kinds = {type(it) for it in ds.items}
    if len(kinds) > 1:
        raise ValueError(f"{ds.name}: mixes multiple-choice and open questions; probe them separately")
    kind: Literal["mc", "open"] = "mc" if kinds == {MCItem} else "open"
    settings = _settings(cfg, kind)
    pool = None
    if settings["shots"]:
        pool = exemplar_pool(ds.name, data_dir=cfg.data_dir) or load_dataset(cfg.data, data_dir=cfg.data_dir)
    key = {"version": _FORMAT_VERSION, "model": _model_identity(cfg.model), "data": ds.name,
           "items": _items_digest(ds.items), "pool": _items_digest(pool.items) if pool else None, **settings}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    cache_file = (Path(cfg.cache_dir) if cfg.cache_dir else probe_cache_dir()) / f"{digest}.jsonl"
    t0 = time.perf_counter()
    cached = cfg.cache and cache_file.is_file()
    if cached:
        by_id = load_probe(cache_file)
        records = [by_id[it.id] for it in ds.items]
    else:
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device,
                                      attn_implementation=cfg.attn_implementation)
        common = dict(pool=pool.items if pool else None, seed=cfg.seed, batch_size=cfg.batch_size,
                      progress=cfg.progress, **{k: v for k, v in settings.items() if k not in ("seed", "dtype")})
        probe = probe_mc if kind == "mc" else probe_open
        if kind == "open" and cfg.batch_size == "auto":  # generation is not sharded: back off around all of it
            records, _ = with_batch_backoff(lambda size: probe(model, tokenizer, ds.items, **{**common, "batch_size": size}),
                                            AUTO_MAX_BATCH, where=cfg.device)
        else:
            records = probe(model, tokenizer, ds.items, **common)
    rows = [dataclasses.asdict(r) for r in records]
    if cfg.cache and not cached and is_main_process():
        write_jsonl(cache_file, rows)
    if cfg.out and is_main_process():
        write_jsonl(cfg.out, rows)
    barrier()  # the files are there for every process
    return ProbeResult(records=records, kind=kind, data=ds.name, settings=settings, cached=cached,
                       seconds=time.perf_counter() - t0)
