"""Shared prefixes: the keys and values of leading tokens many requests share, computed once.

Requests with the same ``shared_prefix`` (one k-shot exemplar set) are grouped; each group's longest
common leading tokens run once into a :class:`PrefixCache` that every batch of the group expands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

from .requests import Encoded, ScoringRequest, _common_prefix, _model_device

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class PrefixCache:
    """Keys and values of ``length`` leading tokens shared by every row of a batch (batch size 1).

    :meth:`expand` gives a fresh ``DynamicCache`` per batch; the model appends the batch's own
    tokens to it, never to these tensors.
    """

    layers: tuple[tuple[Tensor, Tensor], ...]
    length: int
    config: object

    @classmethod
    def build(cls, model: PreTrainedModel, token_ids: Sequence[int]) -> PrefixCache:
        """Run ``token_ids`` once through ``model`` and keep its keys and values."""
        ids = torch.tensor([list(token_ids)], dtype=torch.long, device=_model_device(model))
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1)
        layers = tuple((layer.keys, layer.values) for layer in out.past_key_values.layers)
        return cls(layers, len(token_ids), getattr(model, "module", model).config)

    def expand(self, batch_size: int):
        """A new cache holding the prefix once per row of a ``batch_size`` batch."""
        from transformers import DynamicCache

        data = [(k.expand(batch_size, *k.shape[1:]), v.expand(batch_size, *v.shape[1:])) for k, v in self.layers]
        return DynamicCache(ddp_cache_data=data, config=self.config)

    def extend_mask(self, attention_mask: Tensor) -> Tensor:
        """A 2D ``(B, W)`` mask of the batch's own tokens, preceded by the prefix's ``length`` ones."""
        ones = torch.ones(attention_mask.shape[0], self.length, dtype=attention_mask.dtype, device=attention_mask.device)
        return torch.cat([ones, attention_mask], dim=1)


def _prefix_groups(requests: Sequence[ScoringRequest], encoded: Sequence[Encoded]) -> list[tuple[list[int], int]]:
    """Items grouped by ``shared_prefix``, each group with the number of leading tokens all its items share.

    The shared length is the longest common prefix of the groups' context tokens (so it is exact
    whatever the tokenizer merges at the boundary), less one so every item keeps a token to predict
    from; ungrouped items and groups of one get 0.
    """
    groups: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
        groups.setdefault(req.shared_prefix, []).append(i)
    out = []
    for key, members in groups.items():
        shared = 0
        if key and len(members) > 1:
            first = encoded[members[0]].context_ids
            shared = min(min(_common_prefix(first, encoded[i].context_ids) for i in members[1:]),
                         min(len(encoded[i].context_ids) for i in members) - 1)
        out.append((members, max(shared, 0)))
    return out


def _can_share_prefix(model: PreTrainedModel, encoded: Sequence[Encoded]) -> bool:
    """A cached prefix equals recomputing it unless a row outgrows a sliding window (the cache would drop keys)."""
    window = getattr(getattr(model, "module", model).config, "sliding_window", None)
    return window is None or max(e.length for e in encoded) <= window
