"""How a run uses the hardware: device, dtype, attention implementation and batch size, all stated.

One story for ``eval``, ``probe``, ``train`` and ``compare`` (CLI flags and YAML keys alike):

* ``device``: ``auto`` picks CUDA, else MPS, else the CPU and says which; a named device that is not
  there is an error, never a silent move to the CPU.
* ``dtype``: ``auto`` is bfloat16 where the hardware computes it natively (a CUDA GPU with bf16, a CPU
  with AVX512-BF16/AMX-BF16), else float32, and says which and why.
* ``attn_implementation``: ``sdpa``, ``eager`` or ``flash_attention_2``. Packed cloze rows need a 4D
  attention mask (sdpa/eager); with any other implementation cloze scores one row per option, in
  evaluation and training alike, after a one-line notice (:func:`fit_scorer_to_model`).
* ``batch_size="auto"``: the largest batch from :data:`AUTO_MAX_BATCH` down that runs, halving on
  out-of-memory (:func:`with_batch_backoff`), as lm-eval's ``--batch_size auto``.

Notices go to the ``calibtune`` logger (the CLI prints them on stderr), from the main process only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

from .settings import AttnImplementation, BatchSize, Dtype, choices

if TYPE_CHECKING:
    from .scoring import ClozeScorer, Encoded, LetterScorer

__all__ = [
    "ATTN_IMPLEMENTATIONS",
    "AUTO_MAX_BATCH",
    "attention_notice",
    "DTYPES",
    "check_attention",
    "cpu_has_native_bf16",
    "fit_scorer_to_model",
    "notice",
    "parse_batch_size",
    "resolve_device",
    "resolve_dtype",
    "with_batch_backoff",
]

DTYPES = choices(Dtype)
ATTN_IMPLEMENTATIONS = choices(AttnImplementation)
AUTO_MAX_BATCH = 64  # where --batch-size auto starts (lm-eval's default --max_batch_size)
T = TypeVar("T")

logger = logging.getLogger("calibtune")
_said: set[str] = set()


def notice(message: str, *, level: int = logging.INFO) -> None:
    """Log ``message`` once per process, on the main process only (``RANK`` 0 or unset)."""
    if int(os.environ.get("RANK", "0")) != 0 or message in _said:
        return
    _said.add(message)
    logger.log(level, message)


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX-BF16); ``None`` when it cannot tell.

    Without them, bf16 autocast on the CPU is emulated: on an AVX2 machine a LoRA step took over ten
    times longer than in fp32 (BENCHMARKS.md).
    """
    try:
        flags = Path(cpuinfo).read_text()
    except OSError:
        return None
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: str) -> str:
    """The device to run on: ``auto`` → cuda, mps or cpu (with a notice); a named device must exist."""
    if device == "auto":
        if torch.cuda.is_available():
            chosen, why = "cuda", torch.cuda.get_device_name(0)
        elif torch.backends.mps.is_available():
            chosen, why = "mps", "Apple GPU"
        else:
            chosen, why = "cpu", "no CUDA or MPS device visible"
        notice(f"device auto: {chosen} ({why})")
        return chosen
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r} is not a device name: use cpu, cuda, cuda:N, mps or auto") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"device {device!r}: no CUDA device is visible (torch {torch.__version__}, {build}); "
                             "use --device cpu or auto")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available on this machine; use --device cpu or auto")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r}: calibtune runs on cpu, cuda or mps")
    return device


def native_bf16(device: str) -> tuple[bool, str]:
    """Whether ``device`` computes bfloat16 natively, and why (for the notice that says what was chosen)."""
    kind = torch.device(device).type
    if kind == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return native, f"{torch.cuda.get_device_name(torch.device(device))} {'has' if native else 'lacks'} bf16"
    if kind == "cpu":
        native = bool(cpu_has_native_bf16())
        return native, ("the CPU has avx512_bf16/amx_bf16" if native
                        else "the CPU lacks avx512_bf16/amx_bf16 (bf16 would be emulated)")
    return False, f"bf16 support on {kind} is not checked"


def resolve_dtype(dtype: str, device: str) -> str:
    """The dtype to load weights in: ``auto`` → bfloat16 where ``device`` computes it natively, else float32."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {DTYPES}")
    if dtype != "auto":
        return dtype
    native, why = native_bf16(device)
    chosen = "bfloat16" if native else "float32"
    notice(f"dtype auto: {chosen} ({why})")
    return chosen


def check_attention(attn_implementation: str | None, device: str, dtype: str) -> None:
    """Refuse, before any model is loaded, an attention implementation the device or dtype cannot run."""
    if attn_implementation is None or attn_implementation in ("sdpa", "eager"):
        return
    if attn_implementation == "flash_attention_2":
        if torch.device(device).type != "cuda":
            raise ValueError(f"attn_implementation 'flash_attention_2' needs a CUDA device, but the device is {device!r}")
        if dtype not in ("bfloat16", "float16"):
            raise ValueError(f"attn_implementation 'flash_attention_2' needs dtype bfloat16 or float16, got {dtype!r}")


def parse_batch_size(value: int | str, name: str = "--batch-size") -> BatchSize:
    """``"auto"`` or a positive int, from a flag or a YAML key (``name`` says which, in the error)."""
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and value.strip().isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(f"{name} must be a positive integer or 'auto', got {value!r}")


def with_batch_backoff(run: Callable[[int], T], start: int, *, where: str = "") -> tuple[T, int]:
    """``(run(b), b)`` for the largest ``b`` from ``start`` down (halving) that does not run out of memory.

    Out-of-memory is recognised by accelerate's ``should_reduce_batch_size`` (CUDA, MPS, XPU, CPU
    allocator); any other error propagates. Scoring sorts items longest first, so a batch that does not
    fit almost always fails in the first forward, before much work is lost.
    """
    from accelerate.utils.memory import clear_device_cache, should_reduce_batch_size

    size = max(1, start)
    while True:
        try:
            result = run(size)
            break
        except Exception as e:
            if not should_reduce_batch_size(e) or size == 1:
                raise
        clear_device_cache(garbage_collection=True)
        notice(f"batch size {size} ran out of memory{' on ' + where if where else ''}; trying {size // 2}",
               level=logging.WARNING)
        size //= 2
    notice(f"batch size auto: {size}{' on ' + where if where else ''}")
    return result, size


def _unpacked_reason(model, encoded: Sequence[Encoded] | None = None) -> str | None:
    """Why ``model`` cannot score packed cloze rows (of ``encoded``, when given); ``None`` when it can."""
    from .scoring import _PACKABLE_ATTENTION, _can_pack

    config = getattr(model, "module", model).config
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in _PACKABLE_ATTENTION:
        return f"attention implementation {implementation!r} cannot take the packed 4D mask"
    if encoded and not _can_pack(model, encoded):
        return f"a row is longer than the model's sliding window ({config.sliding_window})"
    return None


def fit_scorer_to_model(scorer: LetterScorer | ClozeScorer, model, encoded: Sequence[Encoded]):
    """The scorer unchanged, or a cloze scorer with unpacked rows when ``model`` cannot score packed ones.

    Packed rows need an attention implementation that takes a 4D mask and, for a sliding-window model,
    rows within the window; otherwise the 4D mask would be refused, so training scores one
    ``prompt+option`` row per option instead (the same option scores), after a notice.
    """
    from .scoring import ClozeScorer

    if not isinstance(scorer, ClozeScorer) or not scorer.share_prompt:
        return scorer
    why = _unpacked_reason(model, encoded)
    if why is None:
        return scorer
    notice(f"cloze: {why}; scoring one row per option (unpacked)", level=logging.WARNING)
    return dataclasses.replace(scorer, share_prompt=False)


def attention_notice(model, scoring: str) -> None:
    """Say (once) that cloze scoring uses unpacked rows because of ``model``'s attention implementation.

    ``scoring.score`` makes that choice itself; this only states it.
    """
    why = _unpacked_reason(model) if scoring == "cloze" else None
    if why is not None:
        notice(f"cloze: {why}; scoring one row per option (unpacked)", level=logging.WARNING)
