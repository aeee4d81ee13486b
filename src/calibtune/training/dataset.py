"""Training data of multiple-choice items: pre-tokenised items, their collator, and id selection."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset

from ..data import MCItem
from ..prompts import Template, build_requests
from ..scoring import Encoded, _left_pad, check_context, make_scorer


class MCTrainDataset(TorchDataset):
    """Pre-tokenised multiple-choice items with gold index and (optional) probe known label."""

    def __init__(self, encoded: Sequence[Encoded], labels: Sequence[int], known: Sequence[int] | None = None) -> None:
        self.encoded = list(encoded)
        self.labels = list(labels)
        self.known = list(known) if known is not None else [-1] * len(self.encoded)  # -1 = no label

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"encoded": self.encoded[i], "labels": self.labels[i], "known": self.known[i]}


def build_dataset(items: Sequence[MCItem], tokenizer, template: Template, scoring: str, *,
                  known: dict[str, bool] | None = None, full_vocab: bool = False, normalize: str = "sum",
                  model=None) -> MCTrainDataset:
    """Render, tokenise and attach labels (and probe labels by item id) once, before training.

    With ``model``, items longer than its context are refused here, before the first step.
    """
    scorer = make_scorer(scoring, normalize=normalize, full_vocab=full_vocab)
    requests = build_requests(items, template, scoring)
    encoded = scorer.encode(tokenizer, requests)
    if model is not None:
        check_context(model, requests, encoded, scorer)
    flags = None if known is None else [int(known[it.id]) if it.id in known else -1 for it in items]
    return MCTrainDataset(encoded, [it.gold for it in items], flags)


@dataclass
class MCCollator:
    """Batches items with the scorer's own ``collate`` and adds ``labels`` and ``known``.

    With ``with_context`` it also adds the left-padded prompts (``context_input_ids``,
    ``context_attention_mask``) for the question part of ``L_SFT2``.
    """

    scorer: Any
    with_context: bool = False

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = [dataclasses.replace(f["encoded"], index=i) for i, f in enumerate(features)]
        batch = self.scorer.collate(encoded)
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        batch["known"] = torch.tensor([f["known"] for f in features], dtype=torch.long)
        if self.with_context:
            batch["context_input_ids"] = _left_pad([e.context_ids for e in encoded])
            batch["context_attention_mask"] = _left_pad([[1] * len(e.context_ids) for e in encoded])
        return batch


def select_ids(ds, ids: Sequence[str]):
    """The items of ``ds`` with these ids, in this order; an id that is missing or repeated is an error."""
    by_id = {it.id: it for it in ds.items}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"train_ids: {len(missing)} ids are not in {ds.name} (first: {missing[0]!r})")
    if len(set(ids)) != len(ids):
        raise ValueError("train_ids: an id is listed twice")
    return dataclasses.replace(ds, items=tuple(by_id[i] for i in ids))
