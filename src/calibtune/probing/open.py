"""Probing open questions: greedy and sampled answers to few-shot prompts, and the gold answer's NLL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..answers import exact_match
from ..data import OpenItem
from ..open_prompts import pick_exemplars as _open_exemplars, slick_prompt as _open_prompt
from ..scoring import ClozeScorer, ScoringRequest
from .labels import KnownRule, ProbeRecord, _seed, categorize_open, is_known

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


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
    """Probe open questions with SliCK (see :mod:`calibtune.probing`); all prompts generated in batches."""
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
