"""Letter scoring: the logit of each option label's single token at the answer position."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

from .prefix import PrefixCache
from .requests import Encoded, ScoringRequest, _common_prefix, _raise_if_nonfinite, _tokenize, _who, left_pad

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class LetterScorer:
    """Option score = logit of the label's single token at the answer position.

    With ``full_vocab=True`` the scores are full-vocabulary log-probabilities of the label tokens
    instead (same softmax over options; ``logsumexp`` of them is the log of the probability mass on
    the labels), for losses that use the whole vocabulary at the answer position.
    """

    full_vocab: bool = False

    def encode(self, tokenizer: PreTrainedTokenizerBase, requests: Sequence[ScoringRequest]) -> list[Encoded]:
        """Resolve each label to the single token it adds after the prompt (handles " A" vs "A")."""
        out = []
        for i, (req, (prompt, joints)) in enumerate(zip(requests, _tokenize(tokenizer, requests))):
            labels = []
            for choice, joint in zip(req.choices, joints):
                n = _common_prefix(prompt, joint)
                if n != len(prompt) or len(joint) != n + 1:
                    pieces = tokenizer.convert_ids_to_tokens(joint[n:])
                    raise ValueError(
                        f"{_who(req, i)}: label {choice!r} is not a single token after the prompt for tokenizer "
                        f"{type(tokenizer).__name__} ({tokenizer.name_or_path!r}): prompt+label ends in pieces "
                        f"{pieces} after {n} of the prompt's {len(prompt)} tokens"
                    )
                labels.append([joint[-1]])
            if len({lab[0] for lab in labels}) != len(labels):
                raise ValueError(f"{_who(req, i)}: labels {list(req.choices)} map to repeated tokens {labels}")
            out.append(Encoded(i, prompt, labels))
        return out

    def collate(self, encoded: Sequence[Encoded]) -> dict[str, Tensor]:
        """Left-padded prompts plus ``(B, K_max)`` label ids and option mask."""
        input_ids = left_pad([e.context_ids for e in encoded])
        attention_mask = left_pad([[1] * len(e.context_ids) for e in encoded])
        k_max = max(len(e.option_ids) for e in encoded)
        option_ids = torch.zeros(len(encoded), k_max, dtype=torch.long)
        option_mask = torch.zeros(len(encoded), k_max, dtype=torch.bool)
        for b, e in enumerate(encoded):
            option_ids[b, : len(e.option_ids)] = torch.tensor([o[0] for o in e.option_ids])
            option_mask[b, : len(e.option_ids)] = True
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
            "option_ids": option_ids,
            "option_mask": option_mask,
            "index": torch.tensor([e.index for e in encoded], dtype=torch.long),
        }

    def forward(self, model: PreTrainedModel, batch: dict[str, Tensor], prefix: PrefixCache | None = None) -> Tensor:
        """``(B, K_max)`` option scores, ``-inf`` for missing options; differentiable.

        With ``prefix``, the batch holds only the tokens after it (see :class:`PrefixCache`).
        """
        attention_mask, position_ids, past = batch["attention_mask"], batch["position_ids"], None
        if prefix is not None:
            past = prefix.expand(attention_mask.shape[0])
            attention_mask, position_ids = prefix.extend_mask(attention_mask), position_ids + prefix.length
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=1,
            past_key_values=past,
            use_cache=past is not None,
        )
        logits = out.logits[:, -1, :].float()
        _raise_if_nonfinite(~torch.isfinite(logits).all(-1), batch["index"])
        scores = logits.gather(1, batch["option_ids"])
        if self.full_vocab:
            scores = scores - torch.logsumexp(logits, -1, keepdim=True)
        return scores.masked_fill(~batch["option_mask"], -math.inf)
