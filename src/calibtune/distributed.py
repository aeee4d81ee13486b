"""Data-parallel scoring under ``accelerate launch`` (or ``torchrun``): each process scores one shard.

``accelerate launch --num_processes N -m calibtune eval …`` starts N copies of the command. Each joins
the process group (:func:`setup`: gloo on CPUs, NCCL on GPUs, one GPU per process), scores only its
shard of the items with :func:`calibtune.scoring.score`, and the per-item results are gathered back
into item order on every process (:func:`gather_in_order`), so everything downstream — metrics, binned
statistics, reports — sees exactly the items and numbers of a 1-process run and is written once, by
the main process (:func:`is_main_process`).

Shards are balanced by length (:func:`shard_indices`): items sorted longest first are dealt out in a
snake (0, 1, …, N-1, N-1, …, 0), so every process gets about the same number of tokens and batches
of about the same shape. Every shard has the same number of items (the shorter ones repeat their own
last item, whose result is dropped), so processes run the same number of forwards: a sharded model
(FSDP, ZeRO-3) needs every process in every forward.

With one process (no launcher) nothing is initialised and :func:`score_sharded` is a plain ``score``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.distributed as dist

from .devices import AUTO_MAX_BATCH, BatchSize, attention_notice, resolve_device, with_batch_backoff
from .scoring import ScoringRequest, make_scorer, score
from .settings import Scoring

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["World", "barrier", "gather_in_order", "is_main_process", "score_sharded", "setup", "shard_indices",
           "world"]

logger = logging.getLogger("calibtune.distributed")


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` processes."""

    rank: int = 0
    size: int = 1


def world() -> World:
    """The current process group (``World(0, 1)`` when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def is_main_process() -> bool:
    """Whether this process writes outputs (rank 0, or the only process)."""
    return world().rank == 0


def barrier() -> None:
    """Wait until every process is here (no-op with one process): files rank 0 wrote are then visible."""
    if world().size > 1:
        dist.barrier()


def setup(device: str) -> str:
    """Join the process group when launched as several processes; return the device of this process.

    ``device`` is resolved first (``auto`` says what it chose; a missing device is an error). Under a
    launcher (``WORLD_SIZE`` > 1) accelerate's ``PartialState`` initialises the group — gloo for the
    CPU, NCCL for CUDA — and a plain ``cuda`` becomes this process's own GPU (``cuda:LOCAL_RANK``).
    """
    resolved = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return resolved
    parsed = torch.device(resolved)
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device {resolved!r}: several processes need cpu or cuda devices")
    from accelerate import PartialState

    state = PartialState(cpu=parsed.type == "cpu")
    if parsed.type == "cuda" and parsed.index is None:
        return str(state.device)
    return resolved


def shard_indices(lengths: Sequence[int], rank: int | None = None, size: int | None = None) -> list[int]:
    """The item indices process ``rank`` of ``size`` scores (default: this process), in item order.

    Longest first, items are dealt in a snake over the processes, which balances both the tokens and
    the batch shapes; every shard then has ``ceil(n / size)`` entries, a short one repeating its last
    item (or item 0 when it has none) so all processes run the same number of forwards.

    Example:
        >>> [shard_indices([5, 1, 4, 2, 3], rank=r, size=2) for r in (0, 1)]  # lengths 5, 2, 1 | 4, 3
        [[0, 1, 3], [2, 4, 4]]
    """
    current = world()
    rank = current.rank if rank is None else rank
    size = current.size if size is None else size
    if not lengths:
        return []

    def owner(position: int) -> int:  # 0, 1, ..., size-1, size-1, ..., 0, 0, 1, ...
        k = position % (2 * size)
        return k if k < size else 2 * size - 1 - k

    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    mine = sorted(i for position, i in enumerate(order) if owner(position) == rank)
    filler = mine[-1] if mine else 0
    shard = mine + [filler] * (-(-len(lengths) // size) - len(mine))
    logger.debug("rank %d/%d takes %d of %d items: %s", rank, size, len(shard), len(lengths), shard)
    return shard


def gather_in_order(indices: Sequence[int], values: Sequence[Any], n: int) -> list[Any]:
    """Every process's ``(index, value)`` pairs, gathered into one list of ``n`` values in item order.

    Repeated indices (shard padding) keep their first value; an index no process produced is an error.

    Example (one process):
        >>> gather_in_order([2, 0, 1, 1], ["c", "a", "b", "b"], 3)
        ['a', 'b', 'c']
    """
    if len(indices) != len(values):
        raise ValueError(f"{len(indices)} indices but {len(values)} values")
    pairs = list(zip(indices, values))
    if world().size > 1:
        gathered: list[list[tuple[int, Any]]] = [[] for _ in range(world().size)]
        dist.all_gather_object(gathered, pairs)
        pairs = [p for part in gathered for p in part]
    out: list[Any] = [None] * n
    filled = [False] * n
    for i, value in pairs:
        if not filled[i]:
            out[i], filled[i] = value, True
    if not all(filled):
        missing = [i for i, f in enumerate(filled) if not f]
        raise RuntimeError(f"no process returned items {missing[:10]} (of {len(missing)} missing)")
    return out


def score_sharded(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[ScoringRequest],
    *,
    scoring: Scoring = "letter",
    batch_size: BatchSize = 8,
    normalize: Literal["sum", "mean"] = "sum",
    progress: bool = True,
    **score_kwargs: Any,
) -> list[np.ndarray]:
    """:func:`calibtune.scoring.score` over this process's shard, gathered in request order on every process.

    ``batch_size="auto"`` starts at ``min(AUTO_MAX_BATCH, shard size)`` and halves on out-of-memory
    (each process for its own shard). The progress bar is the main process's.
    """
    current = world()
    attention_notice(model, scoring)
    if current.size > 1 and requests:
        encoded = make_scorer(scoring, normalize=normalize).encode(tokenizer, requests)
        mine = shard_indices([e.length for e in encoded])
    else:
        mine = list(range(len(requests)))
    shard = [requests[i] for i in mine]

    def run(size: int) -> list[np.ndarray]:
        return score(model, tokenizer, shard, scoring=scoring, batch_size=size, normalize=normalize,
                     progress=progress and current.rank == 0, **score_kwargs)

    if batch_size == "auto":
        device = next(model.parameters()).device
        local, _ = with_batch_backoff(run, min(AUTO_MAX_BATCH, max(1, len(shard))), where=str(device))
    else:
        local = run(batch_size)
    if current.size == 1:
        return local
    return gather_in_order(mine, local, len(requests))
