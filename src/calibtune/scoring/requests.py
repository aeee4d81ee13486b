"""Scoring requests and their tokenisation: the items, their token ids, left padding, the errors.

Shared by both scorers (:mod:`.letter`, :mod:`.cloze`): the request and encoded-item types, the one
batched tokenizer call, left-padded tensors, the model's context length and the errors scoring raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class NonFiniteLogitsError(FloatingPointError):
    """The model produced NaN/inf logits where an option is scored."""


class ContextLengthError(ValueError):
    """A prompt with its longest option does not fit the model's context window."""


@dataclass(frozen=True)
class ScoringRequest:
    """One multiple-choice item, already rendered to text.

    ``prompt`` is the text up to the answer position; ``choices`` are the option labels as they
    follow the prompt (letter scoring, e.g. ``[" A", " B"]``) or the continuation texts (cloze
    scoring, e.g. ``[" Paris", " Berlin"]``).
    """

    prompt: str
    choices: Sequence[str]
    shared_prefix: str = ""  # k-shot exemplars that other requests start with too: scored once (see score)
    item_id: str = ""  # the item's id, so errors name items by id, not by position


@dataclass(frozen=True)
class Encoded:
    """A tokenised item: shared context tokens and, per option, the tokens to score after it."""

    index: int  # position of the item in the request list
    context_ids: list[int]
    option_ids: list[list[int]]  # letter: one single-token list per option
    divisors: tuple[float, ...] | None = None  # cloze char/byte: each option's length its log-likelihood is divided by
    unconditional: Encoded | None = None  # cloze pmi: the same options after the neutral one-token prompt

    @property
    def length(self) -> int:
        """Tokens in the packed row (context + all options); the sort key for batching."""
        return len(self.context_ids) + sum(len(o) for o in self.option_ids)


def _tokenize(
    tokenizer: PreTrainedTokenizerBase, requests: Sequence[ScoringRequest]
) -> list[tuple[list[int], list[list[int]]]]:
    """Token ids of each prompt and of each ``prompt + choice`` (one batched tokenizer call)."""
    texts: list[str] = []
    for i, req in enumerate(requests):
        if len(req.choices) == 0:
            raise ValueError(f"{_who(req, i)}: expected at least one choice, but got none")
        texts.append(req.prompt)
        texts.extend(req.prompt + c for c in req.choices)
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
    out, pos = [], 0
    for req in requests:
        k = len(req.choices)
        out.append((list(ids[pos]), [list(x) for x in ids[pos + 1 : pos + 1 + k]]))
        pos += 1 + k
    return out


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def left_pad(rows: Sequence[Sequence[int]], value: int = 0) -> Tensor:
    """``(len(rows), max_len)`` long tensor, each row right-aligned.

    >>> left_pad([[1, 2, 3], [4]]).tolist()
    [[1, 2, 3], [0, 0, 4]]
    """
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
    return out


_left_pad = left_pad  # the earlier, private name (generation, training, open_training import it)


def _raise_if_nonfinite(bad: Tensor, index: Tensor) -> None:
    """``bad``: ``(B,)`` bool, True where an item's needed logits are NaN/inf."""
    if bool(bad.any()):
        items = index[bad].tolist()
        error = NonFiniteLogitsError(f"non-finite (NaN/inf) logits while scoring item(s) {items}")
        error.indices = items
        raise error


def _who(req: ScoringRequest, i: int) -> str:
    """How an error names a request: by its item id when it has one."""
    return f"item {req.item_id!r}" if req.item_id else f"item {i}"


def context_length(model: PreTrainedModel) -> int | None:
    """The longest sequence the model's positions cover (``max_position_embeddings``), when it says."""
    config = getattr(model, "module", model).config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "max_position_embeddings", None)


def _model_device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device
