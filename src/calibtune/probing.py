"""Prior knowledge of a base model per item: SliCK categories (Gekhman et al. 2024) and the answer NLL.

The CogCalib trainer needs, per training item, whether the *base* model already knows the answer
(papers.md §1.4.1, §1.5). This module measures it two ways and stores both in a :class:`ProbeRecord`:

* **P_correct** over several random few-shot prompts, mapped to a SliCK category;
* **nll**: ``-log p(gold)`` in one canonical 0-shot prompt (the CogCalib signal).

Multiple choice (:func:`probe_mc`), SliCK adapted (papers.md §1.5 [I]): ``n_prompts`` prompts, each
with its own seeded ``shots`` exemplars and its own seeded option permutation (which cancels the
position bias of letter scoring; harmless for cloze); the prediction is the argmax over options,
mapped back to the original order. Categories: **HighlyKnown** (every prompt right), **MaybeKnown**
(some), **Unknown** (none). There is no WeaklyKnown: sampling an option is right 25% of the time by
chance, so "sampling is sometimes right" carries no information. ``nll`` uses the option distribution
(softmax over the options' scores) of the 0-shot prompt with the original option order.

Open questions (:func:`probe_open`), SliCK as published: ``n_prompts`` random ``shots``-shot prompts
``Q: …\\nA: …`` (exemplars from the same relation, i.e. ``subject``, when the pool has enough), one
greedy answer and ``n_samples`` answers sampled at ``temperature`` from the ``top_k`` tokens per
prompt, stopped at a newline, exact match (SQuAD normalisation) against the aliases. Categories:
HighlyKnown (greedy always right), MaybeKnown (greedy sometimes), WeaklyKnown (greedy never, a
sample sometimes), Unknown (never). ``nll`` is the summed token NLL of the first alias after the 0-shot
prompt ``Q: {q}\\nA:``. Defaults are sized for a CPU; the preset ``slick`` has the paper's values.

``known`` follows ``known_rule``. The multiple-choice default, ``"chance"``, calls an item known only
when its number of right prompts is more than a random guesser explains: a guesser picking one of K
options uniformly is right on c or more of n prompts with probability ``binomial_tail(c, n, 1/K)``,
and the item is known when that probability is at most ``false_known_rate`` (default 0.05). With
K = 4 and n = 4 that means all four prompts right (a guesser: 0.4 %); with K = 2 it needs n ≥ 5.
:func:`false_known_rate` is the rate the rule actually allows, printed by ``calibtune probe``. The
other rules: ``"any"`` (category is not Unknown, the SliCK union; a 4-option guesser over 4 prompts
is "known" 68 % of the time), ``"majority"`` (P_correct > 0.5, greedy for open questions) and ``"all"``
(HighlyKnown only). For open questions a right free-form answer is not a lucky guess, so
``"chance"`` there is ``"any"``.

Exemplars (multiple choice): by default (``exemplars="shared"``) prompt j of every item uses the same
seeded exemplar set (one per prompt index, and per subject for MMLU), so its keys and values are
computed once for the whole split (:class:`~calibtune.scoring.PrefixCache`); ``"per-item"`` draws a new
set for every item and prompt, as before.

:func:`run_probe` (what ``calibtune probe`` runs) adds loading and a cache: results are stored under
``probe_cache_dir()`` keyed by a hash of the model identity, the items, the exemplar pool and every
setting that changes the result, so an identical second call neither loads nor runs the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from .answers import exact_match, normalize_answer  # re-exported: calibtune.probing.normalize_answer
from .data import MCItem, OpenItem, exemplar_pool, load_dataset
from .models import load_model, resolve_model
from .open_prompts import pick_exemplars as _open_exemplars, slick_prompt as _open_prompt
from .predictions import write_jsonl
from .prompts import Exemplars, build_requests, get_template
from .devices import AUTO_MAX_BATCH, BatchSize, parse_batch_size, resolve_dtype, with_batch_backoff
from .distributed import barrier, is_main_process, setup
from .distributed import score_sharded as score  # scoring.score over this process's shard (accelerate launch)
from .scoring import ClozeScorer, ScoringRequest

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "PRESETS",
    "ProbeConfig",
    "ProbeRecord",
    "ProbeResult",
    "categorize_mc",
    "categorize_open",
    "exact_match",
    "is_known",
    "load_probe",
    "normalize_answer",
    "probe_cache_dir",
    "probe_mc",
    "probe_open",
    "run_probe",
    "summarize_probe",
]

KnownRule = Literal["chance", "any", "majority", "all"]
KNOWN_RULES: tuple[str, ...] = ("chance", "any", "majority", "all")
FALSE_KNOWN_RATE = 0.05  # the chance rule's default: at most this share of random guessers is called known
CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
_FORMAT_VERSION = 2  # bump when the probing procedure changes, to invalidate cached results

# Per preset and kind: the defaults of the settings that the caller leaves unset (None).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {"mc": {"n_prompts": 5, "shots": 2},  # 5: the chance rule can call a 2-option item known
                "open": {"n_prompts": 3, "shots": 4, "n_samples": 2}},
    "slick": {"mc": {"n_prompts": 10, "shots": 4},
              "open": {"n_prompts": 10, "shots": 4, "n_samples": 16}},  # N_ex = 10, N_sample = 16
}


@dataclass
class ProbeRecord:
    """What the base model knows about one item.

    ``p_correct``: fraction of prompts answered right (greedy for open questions);
    ``p_correct_sampled``: fraction of sampled answers right (open questions only, else None);
    ``nll``: ``-log p(gold)`` in the canonical 0-shot prompt; ``prompts``: per-prompt details.
    """

    id: str
    category: str
    known: bool
    p_correct: float
    nll: float
    n_prompts: int
    p_correct_sampled: float | None = None
    prompts: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Pure rules


def categorize_mc(correct: Sequence[bool]) -> str:
    """SliCK adapted to multiple choice: all prompts right → HighlyKnown, some → MaybeKnown, none → Unknown."""
    if len(correct) == 0:
        raise ValueError("categorize_mc needs at least one prompt result")
    if all(correct):
        return "HighlyKnown"
    return "MaybeKnown" if any(correct) else "Unknown"


def categorize_open(greedy: Sequence[bool], sampled: Sequence[bool]) -> str:
    """SliCK (papers.md §1.5) from the correctness of the greedy answers and of the sampled answers."""
    if len(greedy) == 0:
        raise ValueError("categorize_open needs at least one greedy answer")
    if all(greedy):
        return "HighlyKnown"
    if any(greedy):
        return "MaybeKnown"
    return "WeaklyKnown" if any(sampled) else "Unknown"


def binomial_tail(c: int, n: int, p: float) -> float:
    """P(X >= c) for X ~ Binomial(n, p): how often a guesser right with probability p gets c of n right.

    >>> round(binomial_tail(4, 4, 0.25), 6), round(binomial_tail(3, 4, 0.25), 6)
    (0.003906, 0.050781)
    """
    return float(sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(max(c, 0), n + 1)))


def chance_known(n_right: int, n_prompts: int, n_options: int, rate: float = FALSE_KNOWN_RATE) -> bool:
    """Whether ``n_right`` of ``n_prompts`` right is more than a uniform guesser over ``n_options`` explains.

    >>> chance_known(4, 4, 4), chance_known(3, 4, 4), chance_known(4, 4, 2), chance_known(5, 5, 2)
    (True, False, False, True)
    """
    return n_right > 0 and binomial_tail(n_right, n_prompts, 1 / n_options) <= rate


def false_known_rate(n_prompts: int, n_options: int, rule: KnownRule = "chance", rate: float = FALSE_KNOWN_RATE) -> float:
    """The probability that a uniform guesser over ``n_options`` is called known under ``rule``.

    >>> round(false_known_rate(4, 4, "chance"), 4), round(false_known_rate(4, 4, "any"), 4)
    (0.0039, 0.6836)
    """
    p = 1 / n_options
    if rule == "chance":
        need = next((c for c in range(1, n_prompts + 1) if binomial_tail(c, n_prompts, p) <= rate), None)
        return 0.0 if need is None else binomial_tail(need, n_prompts, p)
    need = {"any": 1, "majority": n_prompts // 2 + 1, "all": n_prompts}[rule]
    return binomial_tail(need, n_prompts, p)


def is_known(category: str, p_correct: float, rule: KnownRule = "any", *, n_prompts: int | None = None,
             n_options: int | None = None, rate: float = FALSE_KNOWN_RATE) -> bool:
    """The known/unknown label: ``chance`` = more right prompts than chance explains (needs ``n_prompts``
    and ``n_options``; open questions pass ``n_options=None`` and get ``any``), ``any`` = not Unknown,
    ``majority`` = P_correct > 0.5, ``all`` = HighlyKnown."""
    if rule == "chance":
        if n_options is None:
            return category != "Unknown"
        if n_prompts is None:
            raise ValueError("the chance rule needs the number of prompts")
        return chance_known(round(p_correct * n_prompts), n_prompts, n_options, rate)
    if rule == "any":
        return category != "Unknown"
    if rule == "majority":
        return p_correct > 0.5
    if rule == "all":
        return category == "HighlyKnown"
    raise ValueError(f"Expected `known_rule` to be one of {KNOWN_RULES}, but got {rule!r}")


def _seed(*parts: object) -> int:
    """A stable 63-bit seed from its parts (independent of the other items probed alongside)."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


# --------------------------------------------------------------------------------------------
# Multiple choice


def probe_mc(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[MCItem],
    *,
    pool: Sequence[MCItem] | None,
    n_prompts: int = 4,
    shots: int = 2,
    scoring: Literal["cloze", "letter"] = "cloze",
    normalize: Literal["sum", "mean"] = "sum",
    template: str = "blob",
    known_rule: KnownRule = "chance",
    false_known: float = FALSE_KNOWN_RATE,
    exemplars: Exemplars = "shared",
    seed: int = 0,
    batch_size: BatchSize = 8,
    progress: bool = True,
) -> list[ProbeRecord]:
    """Probe multiple-choice items (see the module docstring); one ``score`` call for all prompts.

    Under ``accelerate launch`` each process scores its shard of the prompts (:mod:`calibtune.distributed`).

    Prompt ``j`` of an item permutes its options with a seed derived from ``(seed, j, item id)``. Its
    exemplars are the split's shared set ``j`` (``exemplars="shared"``, seeded by ``(seed, j)``) or
    drawn for the item alone (``"per-item"``, seeded by ``(seed, j, item id)``); either way an item's
    probe does not depend on which other items are probed alongside it.
    """
    if n_prompts < 1:
        raise ValueError(f"Expected `n_prompts` >= 1, but got {n_prompts}")
    if known_rule == "chance":
        for k in sorted({len(it.options) for it in items}):
            if not chance_known(n_prompts, n_prompts, k, false_known):
                raise ValueError(f"known_rule 'chance': with {k} options and {n_prompts} prompts even an item right on "
                                 f"every prompt is within chance at false-known rate {false_known} "
                                 f"({binomial_tail(n_prompts, n_prompts, 1 / k):.3f}); use more prompts")
    tmpl = get_template(template, tokenizer)
    perms = [[np.random.default_rng(_seed(seed, "perm", j, item.id)).permutation(len(item.options))
              for j in range(n_prompts)] for item in items]
    per_prompt: list[list[ScoringRequest]] = []
    for j in range(n_prompts):
        permuted = [dataclasses.replace(item, options=tuple(item.options[p] for p in perms[i][j]),
                                        gold=int(np.flatnonzero(perms[i][j] == item.gold)[0]))
                    for i, item in enumerate(items)]
        if exemplars == "shared":
            per_prompt.append(build_requests(permuted, tmpl, scoring, shots=shots, pool=pool,
                                             seed=_seed(seed, "shots", j), exemplars="shared"))
        else:
            per_prompt.append([build_requests([it], tmpl, scoring, shots=shots, pool=pool, exemplars="per-item",
                                              seed=_seed(seed, "shots", j, it.id))[0] for it in permuted])
    requests = [per_prompt[j][i] for i in range(len(items)) for j in range(n_prompts)]
    requests += build_requests(items, tmpl, scoring)  # canonical: 0-shot, original order
    logprobs = score(model, tokenizer, requests, scoring=scoring, normalize=normalize, batch_size=batch_size,
                     progress=progress)
    canonical = logprobs[len(items) * n_prompts:]
    records = []
    for i, item in enumerate(items):
        details = []
        for j, perm in enumerate(perms[i]):
            lp = np.empty(len(item.options))
            lp[perm] = logprobs[i * n_prompts + j]  # permuted position k holds original option perm[k]
            pred = int(np.argmax(lp))
            details.append({"order": perm.tolist(), "pred": pred, "correct": pred == item.gold,
                            "p_gold": float(np.exp(lp[item.gold]))})
        flags = [d["correct"] for d in details]
        category = categorize_mc(flags)
        p_correct = sum(flags) / n_prompts
        known = is_known(category, p_correct, known_rule, n_prompts=n_prompts, n_options=len(item.options),
                         rate=false_known)
        records.append(ProbeRecord(id=item.id, category=category, known=known,
                                   p_correct=p_correct, nll=float(-canonical[i][item.gold]), n_prompts=n_prompts,
                                   prompts=details))
    return records


# --------------------------------------------------------------------------------------------
# Open questions


def _generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    n_samples: int,
    temperature: float,
    top_k: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    progress: bool,
) -> tuple[list[str], list[list[str]]]:
    """Per prompt, the greedy answer and ``n_samples`` sampled answers, each cut at the first newline.

    Prompts are batched longest first with left padding; generation stops at a newline. Sampling uses
    a forked torch RNG seeded per batch, so the caller's RNG state is left alone.
    """
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    common = dict(max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                  stop_strings=["\n"])
    greedy_cfg = GenerationConfig(do_sample=False, **common)
    sample_cfg = GenerationConfig(do_sample=True, temperature=temperature, top_k=top_k, top_p=1.0,
                                  num_return_sequences=n_samples, **common)
    lengths = [len(ids) for ids in tokenizer(list(prompts))["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    greedy: list[str] = [""] * len(prompts)
    sampled: list[list[str]] = [[] for _ in prompts]
    device = next(model.parameters()).device

    def decode(out: torch.Tensor, width: int) -> list[str]:
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        return [t.split("\n", 1)[0].strip() for t in texts]

    with torch.inference_mode(), tqdm(total=len(prompts), unit="prompt", desc="generating", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            enc = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True, padding_side="left").to(device)
            width = enc["input_ids"].shape[1]
            out = model.generate(**enc, generation_config=greedy_cfg, tokenizer=tokenizer)
            for i, text in zip(chunk, decode(out, width)):
                greedy[i] = text
            if n_samples:
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    torch.manual_seed(_seed(seed, "sample", start))
                    out = model.generate(**enc, generation_config=sample_cfg, tokenizer=tokenizer)
                texts = decode(out, width)
                for n, i in enumerate(chunk):
                    sampled[i] = texts[n * n_samples:(n + 1) * n_samples]
            bar.update(len(chunk))
    return greedy, sampled


def _answer_nll(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], answers: Sequence[str],
    batch_size: int,
) -> list[float]:
    """Summed token NLL of each ``" " + answer`` after its prompt (one continuation per row)."""
    scorer = ClozeScorer(share_prompt=False)
    encoded = scorer.encode(tokenizer, [ScoringRequest(p, [f" {a}"]) for p, a in zip(prompts, answers)])
    device = next(model.parameters()).device
    nll = [0.0] * len(encoded)
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            batch = {k: v.to(device) for k, v in scorer.collate(chunk).items()}
            for e, s in zip(chunk, scorer.forward(model, batch)[:, 0].tolist()):
                nll[e.index] = -s
    return nll


def probe_open(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[OpenItem],
    *,
    pool: Sequence[OpenItem] | None,
    n_prompts: int = 3,
    n_samples: int = 2,
    temperature: float = 0.5,
    top_k: int = 40,
    shots: int = 4,
    max_new_tokens: int = 16,
    known_rule: KnownRule = "chance",
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> list[ProbeRecord]:
    """Probe open questions with SliCK (see the module docstring); all prompts generated in batches."""
    if n_prompts < 1:
        raise ValueError(f"Expected `n_prompts` >= 1, but got {n_prompts}")
    if shots and not pool:
        raise ValueError(f"{shots}-shot prompts need an exemplar pool")
    prompts = [_open_prompt(item, _open_exemplars(item, pool, shots, _seed(seed, "shots", j, item.id)) if shots else [])
               for item in items for j in range(n_prompts)]
    greedy, sampled = _generate(model, tokenizer, prompts, n_samples=n_samples, temperature=temperature, top_k=top_k,
                                max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, progress=progress)
    nll = _answer_nll(model, tokenizer, [_open_prompt(it, []) for it in items], [it.answers[0] for it in items],
                      batch_size)
    records = []
    for i, item in enumerate(items):
        details = []
        for j in range(i * n_prompts, (i + 1) * n_prompts):
            details.append({"greedy": greedy[j], "greedy_correct": exact_match(greedy[j], item.answers),
                            "samples": sampled[j], "samples_correct": [exact_match(s, item.answers) for s in sampled[j]]})
        g = [d["greedy_correct"] for d in details]
        s = [c for d in details for c in d["samples_correct"]]
        category = categorize_open(g, s)
        p_correct = sum(g) / n_prompts
        records.append(ProbeRecord(id=item.id, category=category, known=is_known(category, p_correct, known_rule),
                                   p_correct=p_correct, nll=nll[i], n_prompts=n_prompts,
                                   p_correct_sampled=sum(s) / len(s) if s else None, prompts=details))
    return records


# --------------------------------------------------------------------------------------------
# Files, cache and the end-to-end run


def load_probe(path: str | os.PathLike[str]) -> dict[str, ProbeRecord]:
    """Read a probe JSONL file into ``{item id: ProbeRecord}`` (for the trainer)."""
    names = {f.name for f in dataclasses.fields(ProbeRecord)}
    records: dict[str, ProbeRecord] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = ProbeRecord(**{k: v for k, v in json.loads(line).items() if k in names})
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}, line {lineno}: not a probe record ({e})") from None
        if rec.id in records:
            raise ValueError(f"{path}, line {lineno}: duplicate id {rec.id!r}")
        records[rec.id] = rec
    return records


def probe_cache_dir() -> Path:
    """Probe cache: ``$CALIBTUNE_CACHE/probes`` or ``~/.cache/calibtune/probes``."""
    env = os.environ.get("CALIBTUNE_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "calibtune") / "probes"


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


@dataclass
class ProbeConfig:
    """Settings of one probing run (``calibtune probe``); ``None`` settings come from ``preset``."""

    model: str
    data: str
    out: str | None = None
    scoring: Literal["cloze", "letter"] = "cloze"
    normalize: Literal["sum", "mean"] = "sum"  # cloze: use the scoring the model is trained and evaluated with
    template: str = "blob"
    preset: str = "default"
    n_prompts: int | None = None
    shots: int | None = None
    n_samples: int | None = None
    temperature: float = 0.5
    top_k: int = 40
    max_new_tokens: int = 16
    known_rule: KnownRule = "chance"
    false_known: float = FALSE_KNOWN_RATE  # the chance rule's allowed rate of random guessers called known
    exemplars: Exemplars = "shared"  # multiple choice: one exemplar set per prompt index, or per item
    limit: int | None = None
    seed: int = 0
    batch_size: BatchSize = 8  # "auto": the largest that fits (calibtune.devices)
    dtype: str = "float32"
    device: str = "auto"
    attn_implementation: str | None = None  # None: transformers' default (sdpa)
    data_dir: str | None = None
    cache: bool = True
    cache_dir: str | None = None  # default: probe_cache_dir()
    progress: bool = True
    overwrite: bool = True  # False: refuse an existing ``out`` (``calibtune probe`` without --overwrite)


def check_probe_config(cfg: ProbeConfig) -> None:
    """Every setting of ``cfg`` that can be checked before data or model are loaded, and the output file."""
    from . import checks
    from .models import _torch_dtype

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


def summarize_probe(records: Sequence[ProbeRecord]) -> dict[str, dict[str, float]]:
    """Per category present (in SliCK order) and ``all``: count, mean P_correct, mean NLL, known fraction."""
    groups = {c: [r for r in records if r.category == c] for c in CATEGORIES}
    groups = {c: rs for c, rs in groups.items() if rs}
    groups["all"] = list(records)
    return {c: {"n": len(rs), "p_correct": float(np.mean([r.p_correct for r in rs])) if rs else float("nan"),
                "nll": float(np.mean([r.nll for r in rs])) if rs else float("nan"),
                "known": float(np.mean([r.known for r in rs])) if rs else float("nan")}
            for c, rs in groups.items()}
