"""The spec grammar and the public entry points: :func:`load_dataset` reads a registered benchmark, a
file or an ``hf:`` data set, or a mixture ``a+b``, with an optional slice (``[lo:hi]``,
``[lo:hi](shuffled)``), a seeded ``limit`` and option shuffling; :func:`exemplar_pool` finds the
few-shot pool of a spec.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from .files import _check_fields, _is_file_spec, _load_file, _load_hf
from .items import DataError, Dataset, Item, MCItem, OpenItem, _Parsed, _Row
from .registry import _canonical, _check_subsets, _data_dir, _resolve

def takes_fields(spec: str) -> bool:
    """Whether ``spec`` names a file or an ``hf:`` data set, whose columns ``fields`` may map."""
    spec, _ = _split_slice(spec)
    return spec.strip().startswith("hf:") or _is_file_spec(spec)


def parse_fields(pairs: Iterable[str]) -> dict[str, str]:
    """``["question=q", "options=choices.text"]`` (the CLI's ``--field``) -> ``{"question": "q", ...}``, checked."""
    fields: dict[str, str] = {}
    for pair in pairs:
        key, sep, column = pair.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise DataError(f"--field {pair!r}: expected KEY=COLUMN, e.g. question=query")
        if key.strip() in fields:
            raise DataError(f"--field {pair!r}: {key.strip()!r} is mapped twice")
        fields[key.strip()] = column.strip()
    return _check_fields(fields)


def _collect(rows: Iterable[_Parsed], skip_invalid: bool) -> tuple[list[Item], int]:
    """Items in order; bad rows and duplicate ids raise, or are counted when ``skip_invalid``."""
    items: list[Item] = []
    seen: dict[str, _Row] = {}
    skipped = 0
    for row, value in rows:
        if isinstance(value, (MCItem, OpenItem)) and value.id in seen:
            first = seen[value.id]
            where = first.src if first.line is None else f"{first.src}, line {first.line}"
            value = row.error("id", f"duplicate id {value.id!r} (first at {where})")
        if isinstance(value, DataError):
            if not skip_invalid:
                raise value
            skipped += 1
            continue
        seen[value.id] = row
        items.append(value)
    return items, skipped


def _subsample(items: list[Item], limit: int | None, seed: int) -> list[Item]:
    """A seeded random subset of ``limit`` items, in their original order."""
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise DataError(f"limit must be a positive number of items, got {limit}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
    return [items[i] for i in chosen]


def _item_rng(seed: int, item_id: str) -> np.random.Generator:
    """An rng that depends only on (seed, item id), not on position, limit or process."""
    digest = hashlib.sha256(f"{seed}\0{item_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def shuffle_item_options(item: MCItem, seed: int) -> MCItem:
    """``item`` with its options permuted by an rng derived from (seed, item.id); gold follows its text."""
    perm = _item_rng(seed, item.id).permutation(len(item.options))
    return replace(item, options=tuple(item.options[p] for p in perm), gold=int(np.flatnonzero(perm == item.gold)[0]))


_SLICE = re.compile(r"^(?P<spec>.*)\[(?P<lo>-?\d+%?)?:(?P<hi>-?\d+%?)?\](?:\((?P<mode>[^()]*)\))?$")
SLICE_MODES = ("shuffled",)


@dataclass(frozen=True)
class Slice:
    """A ``[lo:hi]`` part of a split, read as Hugging Face ``datasets`` reads ``split="test[lo:hi]"``.

    Bounds are row positions in file order (negative counts from the end) or percentages of the
    split (``[:80%]``, rounded to the closest row as ``datasets``' default ``rounding="closest"``).
    With ``shuffled`` (spec suffix ``(shuffled)``), the positions are taken in a fixed pseudo-random
    order of the split's items instead (seed 0, independent of the run's seed) and the chosen items
    kept in file order: the partition round-1 experiments used, unbiased by file order.
    """

    lo: str | None
    hi: str | None
    shuffled: bool = False

    def bounds(self, n: int) -> tuple[int, int]:
        """Absolute ``(start, stop)`` over ``n`` rows, clipped to ``[0, n]`` like ``datasets``."""

        def absolute(bound: str | None, default: int) -> int:
            if bound is None:
                return default
            value = round(int(bound[:-1]) * n / 100) if bound.endswith("%") else int(bound)
            return min(max(n + value, 0) if value < 0 else value, n)

        return absolute(self.lo, 0), absolute(self.hi, n)

    def __str__(self) -> str:
        return f"[{self.lo or ''}:{self.hi or ''}]" + ("(shuffled)" if self.shuffled else "")


def _split_slice(spec: str) -> tuple[str, Slice | None]:
    """``boolq:val[0:300]`` -> (``boolq:val``, the slice); ``(shuffled)`` after the brackets selects the
    fixed pseudo-random partition (:class:`Slice`)."""
    m = _SLICE.match(spec.strip())
    if not m:
        return spec, None
    lo, hi, mode = m["lo"], m["hi"], m["mode"]
    if mode is not None and mode.strip() not in SLICE_MODES:
        raise DataError(f"{spec}: unknown slice mode ({mode}); valid: {', '.join(f'({s})' for s in SLICE_MODES)}")
    if lo and hi and lo.endswith("%") != hi.endswith("%"):
        raise DataError(f"{spec}: both slice bounds must be row numbers or both percentages, got [{lo}:{hi}]")
    if any(b and b.endswith("%") and abs(int(b[:-1])) > 100 for b in (lo, hi)):
        raise DataError(f"{spec}: percentage slice bounds must lie in [-100%, 100%], got [{lo or ''}:{hi or ''}]")
    if lo and hi and not lo.startswith("-") and not hi.startswith("-") and int(hi.rstrip("%")) <= int(lo.rstrip("%")):
        raise DataError(f"{spec}: empty slice [{lo}:{hi}]")
    return m["spec"], Slice(lo, hi, shuffled=mode is not None)


def _slice_rows(rows: Iterable[_Parsed], part: Slice) -> list[_Parsed]:
    """The records at positions ``part.bounds`` of the file (before validation, as ``datasets`` counts rows)."""
    rows = list(rows)
    start, stop = part.bounds(len(rows))
    return rows[start:stop]


def _slice_partition(items: list, part: Slice) -> list:
    """The items at positions ``lo:hi`` of a fixed pseudo-random order (seed 0, independent of the run's
    seed), kept in file order: slices of one split never overlap and are not biased by file order."""
    order = np.random.default_rng(0).permutation(len(items))
    start, stop = part.bounds(len(items))
    chosen = set(order[start:stop].tolist())
    return [it for i, it in enumerate(items) if i in chosen]


def load_dataset(
    spec: str,
    *,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
    shuffle_options: bool = False,
    skip_invalid: bool = False,
    fields: Mapping[str, str] | None = None,
) -> Dataset:
    """Load and validate the data set named by ``spec`` (see the module docstring).

    Generic files (``.jsonl`` one object per line, ``.json`` a list of objects, ``.csv``, ``.tsv``)
    use the fields ``question``, ``options`` (a list, a JSON-list cell, or columns ``A``, ``B``, ...),
    gold from ``gold``/``answer``/``label`` (0-based int, letter, or the option text), and optional
    ``id``, ``context``, ``subject``; a record with ``answers`` and no options becomes an OpenItem.
    ``fields`` maps these names to the file's columns, e.g. ``{"question": "q", "gold": "answer"}``,
    or ``{"options": "A,B,C,D"}`` for option columns.

    A trailing ``[lo:hi]`` takes rows ``lo`` to ``hi`` in file order, as ``datasets`` reads
    ``split="dev[lo:hi]"`` (``[:200]``, ``[-100:]``, ``[:80%]``; see :class:`Slice`);
    ``[lo:hi](shuffled)`` takes them in a fixed, seed-independent pseudo-random order instead, so
    ``[0:400](shuffled)`` and ``[400:](shuffled)`` are disjoint and not biased by file order.
    ``limit`` keeps a seeded random subset in original order; ``shuffle_options`` permutes each
    item's options with an rng derived from (seed, item id). ``skip_invalid`` skips bad rows and
    counts them in ``n_skipped`` instead of raising.
    """
    fields = _check_fields(fields)
    if "+" in str(spec) and not _is_file_spec(str(spec)):
        return _load_mixture(str(spec), data_dir=data_dir, limit=limit, seed=seed, shuffle_options=shuffle_options,
                             skip_invalid=skip_invalid)
    spec, part = _split_slice(str(spec))
    if spec.strip().startswith("hf:"):
        name, rows = _load_hf(spec, fields)
    elif _is_file_spec(spec):
        name, rows = spec.strip(), _load_file(spec, fields)
    else:
        if fields:
            raise DataError(f"fields apply only to file and hf: specs, not to the registered data set {spec!r}")
        info, subsets, split = _resolve(spec)
        root = _data_dir(data_dir)
        _check_subsets(info, root, split, subsets)
        name, rows = _canonical(info, subsets, split), info.loader(root, split, subsets)
    if part is not None and not part.shuffled:
        rows = _slice_rows(rows, part)
    items, skipped = _collect(rows, skip_invalid)
    if part is not None:
        items = _slice_partition(items, part) if part.shuffled else items
        name = f"{name}{part}"
    if not items:
        raise DataError(f"{name}: no items" + (f" ({skipped} invalid rows skipped)" if skipped else ""))
    items = _subsample(items, limit, seed)
    if shuffle_options:
        items = [shuffle_item_options(it, seed) if isinstance(it, MCItem) else it for it in items]
    return Dataset(name=name, items=tuple(items), n_skipped=skipped)


def _load_mixture(spec: str, *, data_dir, limit: int | None, seed: int, shuffle_options: bool,
                  skip_invalid: bool) -> Dataset:
    """``a+b+c``: the items of several specs together (e.g. a training mixture of MMLU, MedMCQA and
    OpenBookQA slices), ids kept unique; ``limit`` then samples from the union."""
    parts = [load_dataset(part.strip(), data_dir=data_dir, shuffle_options=shuffle_options, seed=seed,
                          skip_invalid=skip_invalid) for part in spec.split("+")]
    items: list = []
    seen: set[str] = set()
    for part in parts:
        for it in part.items:
            if it.id in seen:
                raise DataError(f"{spec}: item id {it.id!r} appears in more than one part of the mixture")
            seen.add(it.id)
            items.append(it)
    items = _subsample(items, limit, seed)
    return Dataset(name="+".join(p.name for p in parts), items=tuple(items), n_skipped=sum(p.n_skipped for p in parts))


def exemplar_pool(spec: str, *, data_dir: str | os.PathLike | None = None) -> Dataset | None:
    """Items to draw few-shot exemplars from for ``spec``: another labelled split of the same data
    set (and same subsets), e.g. MMLU dev for MMLU test, ARC/OBQA/CSQA train; ``None`` when the
    data set has no other labelled split (and for file / hf: specs)."""
    if "+" in spec or spec.strip().startswith("hf:") or _is_file_spec(spec):
        return None
    spec, _ = _split_slice(spec)  # a slice of a split draws exemplars like its whole split
    info, subsets, split = _resolve(spec)
    pool = next((s for s in info.pool_splits if s != split), None)
    if pool is None:
        return None
    return load_dataset(_canonical(info, subsets, pool), data_dir=data_dir)
