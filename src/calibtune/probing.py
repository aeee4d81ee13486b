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

``known`` follows ``known_rule``: ``"any"`` (default; category is not Unknown, the SliCK union),
``"majority"`` (P_correct > 0.5, greedy for open questions) or ``"all"`` (HighlyKnown only).

:func:`run_probe` (what ``calibtune probe`` runs) adds loading and a cache: results are stored under
``probe_cache_dir()`` keyed by a hash of the model identity, the items, the exemplar pool and every
setting that changes the result, so an identical second call neither loads nor runs the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from .data import MCItem, OpenItem, exemplar_pool, load_dataset
from .models import load_model, resolve_model
from .predictions import write_jsonl
from .prompts import build_requests, get_template
from .scoring import ClozeScorer, ScoringRequest, score

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

KnownRule = Literal["any", "majority", "all"]
CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
_FORMAT_VERSION = 1  # bump when the probing procedure changes, to invalidate cached results

# Per preset and kind: the defaults of the settings that the caller leaves unset (None).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {"mc": {"n_prompts": 4, "shots": 2},
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


def is_known(category: str, p_correct: float, rule: KnownRule = "any") -> bool:
    """The known/unknown label: ``any`` = not Unknown, ``majority`` = P_correct > 0.5, ``all`` = HighlyKnown."""
    if rule == "any":
        return category != "Unknown"
    if rule == "majority":
        return p_correct > 0.5
    if rule == "all":
        return category == "HighlyKnown"
    raise ValueError(f"Expected `known_rule` to be one of ('any', 'majority', 'all'), but got {rule!r}")


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, answers: Sequence[str]) -> bool:
    """Whether the normalised prediction equals one of the normalised gold aliases."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(a) for a in answers)


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
    known_rule: KnownRule = "any",
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> list[ProbeRecord]:
    """Probe multiple-choice items (see the module docstring); one ``score`` call for all prompts.

    Prompt ``j`` of an item permutes its options and draws its exemplars from ``pool`` with seeds
    derived from ``(seed, j, item id)``, so an item's probe does not depend on the other items.
    """
    if n_prompts < 1:
        raise ValueError(f"Expected `n_prompts` >= 1, but got {n_prompts}")
    tmpl = get_template(template, tokenizer)
    requests: list[ScoringRequest] = []
    perms: list[list[np.ndarray]] = []
    for item in items:
        item_perms = []
        for j in range(n_prompts):
            perm = np.random.default_rng(_seed(seed, "perm", j, item.id)).permutation(len(item.options))
            permuted = dataclasses.replace(item, options=tuple(item.options[p] for p in perm),
                                           gold=int(np.flatnonzero(perm == item.gold)[0]))
            requests += build_requests([permuted], tmpl, scoring, shots=shots, pool=pool,
                                       seed=_seed(seed, "shots", j, item.id))
            item_perms.append(perm)
        perms.append(item_perms)
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
        records.append(ProbeRecord(id=item.id, category=category, known=is_known(category, p_correct, known_rule),
                                   p_correct=p_correct, nll=float(-canonical[i][item.gold]), n_prompts=n_prompts,
                                   prompts=details))
    return records


# --------------------------------------------------------------------------------------------
# Open questions


def _open_prompt(item: OpenItem, exemplars: Sequence[OpenItem]) -> str:
    """SliCK's prompt (App. C): ``Q: …\\nA: …`` per exemplar, then ``Q: {question}\\nA:``."""
    shots = "".join(f"Q: {ex.question}\nA: {ex.answers[0]}\n" for ex in exemplars)
    return f"{shots}Q: {item.question}\nA:"


def _open_exemplars(item: OpenItem, pool: Sequence[OpenItem], shots: int, seed: int) -> list[OpenItem]:
    """``shots`` seeded exemplars, never the item itself; from its own relation when there are enough."""
    candidates = [p for p in pool if p.id != item.id and p.question != item.question]
    same = [p for p in candidates if item.subject and p.subject == item.subject]
    if len(same) >= shots:
        candidates = same
    if len(candidates) < shots:
        raise ValueError(f"{shots}-shot prompts need {shots} exemplars, but the pool has {len(candidates)}")
    picks = np.random.default_rng(seed).choice(len(candidates), size=shots, replace=False)
    return [candidates[k] for k in picks]


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
    known_rule: KnownRule = "any",
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
    known_rule: KnownRule = "any"
    limit: int | None = None
    seed: int = 0
    batch_size: int = 8
    dtype: str = "float32"
    device: str = "cpu"
    data_dir: str | None = None
    cache: bool = True
    cache_dir: str | None = None  # default: probe_cache_dir()
    progress: bool = True


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
        settings.update(scoring=cfg.scoring, template=cfg.template)
        if cfg.scoring == "cloze":
            settings.update(normalize=cfg.normalize)
    else:
        settings.update(temperature=cfg.temperature, top_k=cfg.top_k, max_new_tokens=cfg.max_new_tokens)
    return settings


def run_probe(cfg: ProbeConfig) -> ProbeResult:
    """Load the data, probe (or reuse the cached result) and write ``cfg.out``.

    The exemplar pool is the data set's other labelled split (:func:`exemplar_pool`) or, when it has
    none, the whole data set (an item is never its own exemplar). Batch size, device and progress are
    not part of the cache key.
    """
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
        model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
        common = dict(pool=pool.items if pool else None, seed=cfg.seed, batch_size=cfg.batch_size,
                      progress=cfg.progress, **{k: v for k, v in settings.items() if k not in ("seed", "dtype")})
        probe = probe_mc if kind == "mc" else probe_open
        records = probe(model, tokenizer, ds.items, **common)
    rows = [dataclasses.asdict(r) for r in records]
    if cfg.cache and not cached:
        write_jsonl(cache_file, rows)
    if cfg.out:
        write_jsonl(cfg.out, rows)
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
