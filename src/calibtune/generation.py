"""Batched greedy generation of short answers with stop rules, and the log-probability of every generated token.

Stop rules, per row: a token whose text contains a newline, an end-of-sequence token (the
tokenizer's and the model's generation config's), or ``max_new_tokens`` tokens. Prompts are batched
longest first with left padding, through ``model.generate`` (greedy, no logits processors). A
:class:`Generation` keeps the tokens up to and including the one that stopped generation, their
log-probabilities under the model's raw logits, and the answer text: those tokens decoded, cut at
the first newline and stripped. The terminating token counts in the answer's probability, so the
sequence probability is that of "this answer, and then stop"; a row cut by ``max_new_tokens`` has
no terminator.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from .scoring import NonFiniteLogitsError, _left_pad

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["Generation", "generate_answers", "stop_token_ids"]

StopReason = Literal["newline", "eos", "max_tokens"]


@dataclass(frozen=True)
class Generation:
    """One generated answer: ``text``, the generated ``token_ids`` (terminator included), their
    ``logprobs`` (natural log) and why generation stopped."""

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    stop: StopReason

    @property
    def logprob(self) -> float:
        """Log-probability of the whole generated sequence (sum over its tokens)."""
        return float(sum(self.logprobs))

    @property
    def mean_logprob(self) -> float:
        """Per-token mean log-probability (generation always yields at least one token)."""
        return self.logprob / len(self.logprobs)


_NEWLINE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _newline_tokens(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Ids of the tokens whose decoded text contains a newline (cached per tokenizer object)."""
    try:
        return _NEWLINE_CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    ids = frozenset(i for i, t in enumerate(texts) if "\n" in t)
    try:
        _NEWLINE_CACHE[tokenizer] = ids
    except TypeError:
        pass
    return ids


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if config_eos is not None:
        ids.update(int(i) for i in (config_eos if isinstance(config_eos, (list, tuple)) else [config_eos]))
    return frozenset(ids)


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, newline: bool = True
                   ) -> tuple[frozenset[int], frozenset[int]]:
    """``(newline token ids, end-of-sequence token ids)`` that end a generated answer."""
    return (_newline_tokens(tokenizer) if newline else frozenset()), _eos_ids(model, tokenizer)


def _stopping_criteria(stop_ids: frozenset[int], vocab: int, device: torch.device):
    from transformers import StoppingCriteria, StoppingCriteriaList

    table = torch.zeros(vocab, dtype=torch.bool, device=device)
    table[torch.tensor(sorted(i for i in stop_ids if i < vocab), dtype=torch.long, device=device)] = True

    class _StopAtToken(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
            return table[input_ids[:, -1]]

    return StoppingCriteriaList([_StopAtToken()])


def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 16,
    stop_at_newline: bool = True,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "generating",
) -> list[Generation]:
    """Greedy answers to ``prompts`` (in prompt order) under the stop rules of the module docstring."""
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` >= 1, but got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"Expected `max_new_tokens` >= 1, but got {max_new_tokens}")
    if not prompts:
        return []
    newline_ids, eos_ids = stop_token_ids(model, tokenizer, newline=stop_at_newline)
    device = next(model.parameters()).device
    vocab = max(len(tokenizer), int(model.get_output_embeddings().weight.shape[0]))
    criteria = _stopping_criteria(newline_ids | eos_ids, vocab, device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids, default=0)
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, min_new_tokens=0,
                              repetition_penalty=1.0, no_repeat_ngram_size=0, pad_token_id=pad,
                              eos_token_id=sorted(eos_ids) or None, return_dict_in_generate=True, output_logits=True)
    encoded = [list(ids) for ids in tokenizer(list(prompts))["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    results: list[Generation | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(prompts), unit="prompt", desc=desc, disable=not progress)
    try:
        with torch.inference_mode(), bar:
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                rows = [encoded[i] for i in chunk]
                input_ids = _left_pad(rows, value=pad).to(device)
                attention_mask = _left_pad([[1] * len(r) for r in rows]).to(device)
                out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                     stopping_criteria=criteria)
                generated = out.sequences[:, input_ids.shape[1]:].cpu()
                logits = torch.stack(out.logits, dim=1).float()  # (B, steps, V): raw, before any processor
                logp = torch.log_softmax(logits, dim=-1).gather(2, generated[:, :logits.shape[1], None].to(device))
                logp = logp.squeeze(2).cpu()
                for row, i in enumerate(chunk):
                    results[i] = _one(tokenizer, generated[row].tolist(), logp[row].tolist(), newline_ids, eos_ids, i)
                bar.update(len(chunk))
    finally:
        if was_training:
            model.train()
    return results  # type: ignore[return-value]


def _one(tokenizer: PreTrainedTokenizerBase, ids: list[int], logp: list[float], newline_ids: frozenset[int],
         eos_ids: frozenset[int], index: int) -> Generation:
    """Cut one row at its first stop token (kept) and decode the answer."""
    stop: StopReason = "max_tokens"
    end = len(ids)
    for t, token in enumerate(ids):
        if token in eos_ids or token in newline_ids:
            stop, end = ("eos" if token in eos_ids else "newline"), t + 1
            break
    ids, logp = ids[:end], logp[:end]
    if not all(math.isfinite(v) for v in logp):
        raise NonFiniteLogitsError(f"non-finite (NaN/inf) logits while generating for prompt {index}")
    text = tokenizer.decode(ids, skip_special_tokens=True).split("\n", 1)[0].strip()
    return Generation(text=text, token_ids=tuple(ids), logprobs=tuple(logp), stop=stop)
