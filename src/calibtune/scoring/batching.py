"""The scoring entry points: the scorer for a name, the context check, and :func:`score`, the batching loop."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

from .cloze import ClozeScorer, Normalization, _can_pack
from ..settings import Scoring
from .letter import LetterScorer
from .prefix import PrefixCache, _can_share_prefix, _prefix_groups
from .requests import (ContextLengthError, Encoded, NonFiniteLogitsError, ScoringRequest, _model_device, _who,
                       context_length)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class Scorer(Protocol):
    """What training and evaluation need from a scoring method."""

    def encode(self, tokenizer: PreTrainedTokenizerBase, requests: Sequence[ScoringRequest]) -> list[Encoded]: ...

    def collate(self, encoded: Sequence[Encoded]) -> dict[str, Tensor]: ...

    def forward(self, model: PreTrainedModel, batch: dict[str, Tensor], prefix: PrefixCache | None = None) -> Tensor: ...


def check_context(model: PreTrainedModel, requests: Sequence[ScoringRequest], encoded: Sequence[Encoded],
                  scorer: LetterScorer | ClozeScorer) -> None:
    """Refuse, before any forward pass, items whose tokens run past the model's context (positions
    beyond it give garbage, or an index error, instead of a score)."""
    limit = context_length(model)
    if limit is None:
        return
    cloze = isinstance(scorer, ClozeScorer)
    need = [len(e.context_ids) + (max(len(o) for o in e.option_ids) if cloze else 0) for e in encoded]
    over = [i for i, n in enumerate(need) if n > limit]
    if over:
        i = over[0]
        raise ContextLengthError(
            f"{len(over)} of {len(requests)} prompts are longer than the model's context of {limit} tokens; "
            f"first {_who(requests[i], i)} with {need[i]} tokens (prompt{' and longest option' if cloze else ''}): "
            "use a shorter template, fewer shots, or leave such items out")


def make_scorer(
    scoring: Scoring,
    *,
    normalize: Normalization = "sum",
    share_prompt: bool = True,
    full_vocab: bool = False,
) -> LetterScorer | ClozeScorer:
    """The scorer for a scoring name."""
    if scoring == "letter":
        return LetterScorer(full_vocab=full_vocab)
    if scoring == "cloze":
        return ClozeScorer(normalize=normalize, share_prompt=share_prompt)
    raise ValueError(f"Expected `scoring` to be one of ('letter', 'cloze'), but got {scoring!r}")


def score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[ScoringRequest],
    *,
    scoring: Scoring = "letter",
    batch_size: int = 8,
    normalize: Normalization = "sum",
    share_prompt: bool | None = None,
    share_prefix: bool = True,
    log_softmax: bool = True,
    progress: bool = True,
) -> list[np.ndarray]:
    """Per item, float64 log-probabilities over its K options (log_softmax of the option scores).

    ``log_softmax=False`` returns the option scores themselves (letter: logits; cloze: the options'
    log-likelihoods under ``normalize``), for callers that normalise them another way.

    Items are batched by length (longest first) and returned in request order. ``share_prompt``
    (cloze only): ``None`` packs the prompt once per item whenever the model allows it.
    ``share_prefix``: requests with the same ``shared_prefix`` are scored against its keys and values,
    computed once (see :class:`PrefixCache`); ``False`` recomputes it in every row.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` >= 1, but got {batch_size}")
    if not requests:
        return []
    scorer = make_scorer(scoring, normalize=normalize)
    encoded = scorer.encode(tokenizer, requests)
    check_context(model, requests, encoded, scorer)
    if isinstance(scorer, ClozeScorer):
        share = _can_pack(model, encoded) if share_prompt is None else share_prompt
        scorer = dataclasses.replace(scorer, share_prompt=share)
    if share_prefix and _can_share_prefix(model, encoded):
        groups = _prefix_groups(requests, encoded)
    else:
        groups = [(list(range(len(encoded))), 0)]
    device = _model_device(model)
    results: list[np.ndarray] = [np.empty(0)] * len(encoded)
    bar = tqdm(total=len(encoded), unit="item", desc=f"{scoring} scoring", disable=not progress)
    with torch.inference_mode(), bar:
        for members, shared in groups:
            prefix = PrefixCache.build(model, encoded[members[0]].context_ids[:shared]) if shared else None
            rows = [dataclasses.replace(encoded[i], context_ids=encoded[i].context_ids[shared:]) for i in members]
            rows.sort(key=lambda e: -e.length)
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                batch = {name: t.to(device) for name, t in scorer.collate(chunk).items()}
                try:
                    scores = scorer.forward(model, batch, prefix).double()
                except NonFiniteLogitsError as e:  # name the items by id
                    names = [requests[i].item_id or i for i in e.indices]
                    raise NonFiniteLogitsError(f"non-finite (NaN/inf) logits while scoring item(s) {names[:5]}"
                                               f"{' and more' if len(names) > 5 else ''}: the model's weights or "
                                               "dtype are broken (try --dtype float32)") from None
                logp = (torch.log_softmax(scores, dim=-1) if log_softmax else scores).cpu().numpy()
                for e, row in zip(chunk, logp):
                    results[e.index] = row[: len(e.option_ids)]
                bar.update(len(chunk))
    return results
