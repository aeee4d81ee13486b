"""The registry of benchmarks: :class:`DatasetInfo`, :func:`register_benchmark`, aliases, the shared
data directory and the resolution of ``NAME[/SUBSET,...][:SPLIT]`` names.

A benchmark module (``calibtune/data/benchmarks/<name>.py``) registers its loader, a function
``(root, split, subsets) -> rows`` that reads files relative to the data directory ``root``:

>>> from calibtune.data import MCItem, load_dataset
>>> from calibtune.data.items import _Row
>>> @register_benchmark("toy", splits=("test",), default_split="test")
... def _load_toy(root, split, subsets):
...     return iter([(_Row("toy.jsonl", 1, 0), MCItem("t0", "Up?", ("yes", "no"), 0))])
>>> [it.id for it in load_dataset("toy", data_dir=".")]
['t0']
>>> unregister_benchmark("toy")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from .items import ENV_VAR, DataError, _Parsed

_Loader = Callable[[Path, str, Union[tuple[str, ...], None]], Iterator[_Parsed]]


@dataclass(frozen=True)
class DatasetInfo:
    """One registry entry: valid splits, default split, few-shot pool preference and loader."""

    name: str
    splits: tuple[str, ...]
    default_split: str
    loader: _Loader = field(repr=False)
    kind: str = "mc"  # "mc" -> MCItem, "open" -> OpenItem
    pool_splits: tuple[str, ...] = ()  # exemplar pool: the first of these that is not the eval split
    subsets: Callable[[Path, str], list[str]] | None = field(default=None, repr=False)
    unavailable: Mapping[str, str] = field(default_factory=dict)  # split -> why it cannot be loaded
    description: str = ""


DATASETS: dict[str, DatasetInfo] = {}  # filled, in import order, by the modules of calibtune.data.benchmarks
_ALIASES: dict[str, str] = {}  # short name -> registered name, e.g. "obqa" -> "openbookqa"
_SPLIT_ALIASES = {"val": ("dev",), "dev": ("val",), "validation": ("val", "dev"), "valid": ("val", "dev")}


def register_benchmark(
    name: str,
    *,
    splits: Sequence[str],
    default_split: str,
    kind: str = "mc",
    pool_splits: Sequence[str] = (),
    subsets: Callable[[Path, str], list[str]] | None = None,
    unavailable: Mapping[str, str] | None = None,
    description: str = "",
    aliases: Sequence[str] = (),
) -> Callable[[_Loader], _Loader]:
    """Decorator registering a loader ``(root, split, subsets) -> rows`` as benchmark ``name`` (with
    the :class:`DatasetInfo` fields as keywords); ``aliases`` are other names for it. The loader is
    returned unchanged. A name or alias already taken, or a default split not among ``splits``, raises
    ``ValueError``.
    """
    if name in DATASETS or name in _ALIASES:
        raise ValueError(f"benchmark {name!r} is already registered")
    taken = [a for a in aliases if a in DATASETS or a in _ALIASES]
    if taken:
        raise ValueError(f"benchmark alias(es) {taken} of {name!r} are already registered")
    if default_split not in splits:
        raise ValueError(f"default split {default_split!r} of {name!r} is not one of its splits {tuple(splits)}")

    def register(loader: _Loader) -> _Loader:
        DATASETS[name] = DatasetInfo(
            name, tuple(splits), default_split, loader, kind=kind, pool_splits=tuple(pool_splits), subsets=subsets,
            unavailable=dict(unavailable or {}), description=description,
        )
        _ALIASES.update(dict.fromkeys(aliases, name))
        return loader

    return register


def unregister_benchmark(name: str) -> None:
    """Remove benchmark ``name`` and its aliases from the registry (a ``KeyError`` if it is not there)."""
    del DATASETS[name]
    for alias in [a for a, target in _ALIASES.items() if target == name]:
        del _ALIASES[alias]


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The shared data directory: ``explicit``, else ``$CALIBTUNE_DATA_DIR``; an error says how to set it."""
    value = explicit if explicit is not None else os.environ.get(ENV_VAR)
    if not value:
        raise DataError(f"no data directory: pass data_dir=... or set {ENV_VAR}=/path/to/shared/data")
    path = Path(value).expanduser()
    if not path.is_dir():
        origin = "data_dir" if explicit is not None else ENV_VAR
        raise DataError(f"data directory {str(path)!r} (from {origin}) does not exist")
    return path


_data_dir = data_dir  # load_dataset's ``data_dir`` argument shadows the function


def _valid_names() -> str:
    return ", ".join(f"{n}:{'|'.join(i.splits)}" for n, i in DATASETS.items())


def _resolve(spec: str) -> tuple[DatasetInfo, tuple[str, ...] | None, str]:
    """Parse ``NAME[/SUBSET,...][:SPLIT]`` into (info, subsets or None, canonical split)."""
    head, _, split = spec.strip().partition(":")
    base, _, subset = head.partition("/")
    key = base.strip().lower().replace("_", "-")
    info = DATASETS.get(_ALIASES.get(key, key))
    if info is None:
        raise DataError(
            f"unknown data set {base!r} in spec {spec!r}; valid: {_valid_names()} (or a file path, or hf:OWNER/NAME)"
        )
    split = split.strip().lower() or info.default_split
    if split in info.unavailable:
        raise DataError(info.unavailable[split])
    if split not in info.splits:
        alias = next((a for a in _SPLIT_ALIASES.get(split, ()) if a in info.splits), None)
        if alias is None:
            raise DataError(f"{info.name} has no split {split!r}; valid: {', '.join(info.splits)}")
        split = alias
    subsets = None
    if subset:
        if info.subsets is None:
            raise DataError(f"{info.name} has no subsets (got {subset!r} in spec {spec!r})")
        subsets = tuple(s.strip() for s in subset.split(",") if s.strip())
    return info, subsets, split


def _check_subsets(info: DatasetInfo, root: Path, split: str, subsets: tuple[str, ...] | None) -> None:
    if subsets is None or info.subsets is None:
        return
    valid = info.subsets(root, split)
    bad = [s for s in subsets if s not in valid]
    if bad:
        what = f"unknown {info.name} subset(s) {', '.join(bad)} for split {split!r}; valid: {', '.join(valid)}"
        raise DataError(what)


def _canonical(info: DatasetInfo, subsets: tuple[str, ...] | None, split: str) -> str:
    return f"{info.name}{'/' + ','.join(subsets) if subsets else ''}:{split}"
