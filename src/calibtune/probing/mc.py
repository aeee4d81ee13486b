"""Probing multiple-choice items: seeded few-shot prompts with permuted options, scored in one call."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..data import MCItem
from ..devices import BatchSize
from ..distributed import score_sharded as score  # scoring.score over this process's shard (accelerate launch)
from ..prompts import Exemplars, build_requests, get_template
from ..scoring import ScoringRequest
from ..settings import FALSE_KNOWN_RATE, KnownRule, Scoring
from .labels import ProbeRecord, _seed, binomial_tail, categorize_mc, chance_known, is_known

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def probe_mc(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[MCItem],
    *,
    pool: Sequence[MCItem] | None,
    n_prompts: int = 4,
    shots: int = 2,
    scoring: Scoring = "cloze",
    normalize: Literal["sum", "mean"] = "sum",
    template: str = "blob",
    known_rule: KnownRule = "chance",
    false_known: float = FALSE_KNOWN_RATE,
    exemplars: Exemplars = "shared",
    seed: int = 0,
    batch_size: BatchSize = 8,
    progress: bool = True,
) -> list[ProbeRecord]:
    """Probe multiple-choice items (see :mod:`calibtune.probing`); one ``score`` call for all prompts.

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
