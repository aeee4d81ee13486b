"""Cloze scoring: the log-likelihood of each option's continuation, with the prompt packed once per item.

Also the option-score normalisations (``sum``, ``mean``, ``char``, ``byte``, ``pmi`` and its
unconditional pass) and the 4D attention mask of packed rows.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

from ..settings import Normalization, choices
from .prefix import PrefixCache
from .requests import Encoded, ScoringRequest, _common_prefix, _raise_if_nonfinite, _tokenize, _who, left_pad

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_PACKABLE_ATTENTION = ("sdpa", "eager")  # implementations that accept a custom 4D mask
NORMALIZATIONS: tuple[str, ...] = choices(Normalization)  # cloze option scores, see ClozeScorer


@dataclass(frozen=True)
class ClozeScorer:
    """Option score = log-likelihood of the option's continuation tokens given the prompt.

    ``normalize="mean"`` divides by the number of continuation tokens; ``"char"`` / ``"byte"`` by the
    option text's length in characters / UTF-8 bytes (the continuation less the one space that separates
    it from the prompt, lm-eval's ``target_delimiter``: its ``acc_norm`` / ``acc_bytes``); ``"pmi"``
    subtracts the continuation's log-likelihood after the tokenizer's BOS token alone (EOS where there
    is no BOS), the unconditional pass of lm-eval's ``acc_mutual_info``. ``share_prompt=True`` packs
    prompt + all continuations into one row (the prompt is computed once per item) and needs an
    attention implementation that takes a 4D mask (sdpa/eager); ``False`` runs one
    ``prompt+option`` row per option with an ordinary 2D mask.
    """

    normalize: Normalization = "sum"
    share_prompt: bool = True

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"Expected `normalize` to be one of {NORMALIZATIONS}, but got {self.normalize!r}")

    def encode(self, tokenizer: PreTrainedTokenizerBase, requests: Sequence[ScoringRequest]) -> list[Encoded]:
        """Tokenise ``prompt + option`` jointly; the option tokens are those after the shared prefix.

        When the prompt's tokens are not a prefix of ``prompt + option`` (a merge across the boundary),
        the context is cut back to the longest prefix shared by the prompt and all options, and the
        re-tokenised tail is scored as part of each continuation (``log P(prompt+option | prefix)``).
        """
        out = []
        for i, (req, (prompt, joints)) in enumerate(zip(requests, _tokenize(tokenizer, requests))):
            n = min(_common_prefix(prompt, joint) for joint in joints)
            if n == 0:
                raise ValueError(f"{_who(req, i)}: no context token before the continuations (empty prompt and no BOS?)")
            options = [joint[n:] for joint in joints]
            for choice, opt in zip(req.choices, options):
                if not opt:
                    raise ValueError(f"{_who(req, i)}: continuation {choice!r} adds no token to the prompt")
            divisors = None
            if self.normalize in ("char", "byte"):
                divisors = tuple(float(_option_length(c, self.normalize)) for c in req.choices)
                if 0 in divisors:
                    raise ValueError(f"{_who(req, i)}: an empty option text cannot be normalised per {self.normalize}")
            out.append(Encoded(i, prompt[:n], options, divisors=divisors))
        if self.normalize == "pmi":
            out = [dataclasses.replace(e, unconditional=u) for e, u in zip(out, _unconditional(tokenizer, requests))]
        return out

    def collate(self, encoded: Sequence[Encoded]) -> dict[str, Tensor]:
        """Left-padded rows plus, per (item, option, token), where its predicting logit sits.

        Rows end at the same column, so all needed logits lie in the last ``logits_to_keep`` columns.
        ``segment_ids`` (packed rows) is 0 for padding, 1 for the context and ``2 + k`` for option k.
        """
        ids_rows: list[list[int]] = []
        seg_rows: list[list[int]] = []
        pos_rows: list[list[int]] = []
        targets: list[tuple[int, int, int, int, list[int]]] = []  # (b, k, row, predictor col from row start, ids)
        for b, e in enumerate(encoded):
            p = len(e.context_ids)
            if self.share_prompt:
                row, ids, seg, pos = len(ids_rows), list(e.context_ids), [1] * p, list(range(p))
                for k, opt in enumerate(e.option_ids):
                    start = len(ids)
                    targets.append((b, k, row, start, opt))
                    ids += opt
                    seg += [2 + k] * len(opt)
                    pos += range(p, p + len(opt))
                ids_rows.append(ids)
                seg_rows.append(seg)
                pos_rows.append(pos)
            else:
                for k, opt in enumerate(e.option_ids):
                    targets.append((b, k, len(ids_rows), p, opt))
                    ids_rows.append(e.context_ids + opt)
                    seg_rows.append([1] * p + [2] * len(opt))
                    pos_rows.append(list(range(p + len(opt))))
        width = max(len(r) for r in ids_rows)
        k_max = max(len(e.option_ids) for e in encoded)
        c_max = max(len(o) for e in encoded for o in e.option_ids)
        shape = (len(encoded), k_max, c_max)
        target_row = torch.zeros(shape, dtype=torch.long)
        target_col = torch.zeros(shape, dtype=torch.long)
        target_ids = torch.zeros(shape, dtype=torch.long)
        target_mask = torch.zeros(shape, dtype=torch.bool)
        p_of = [len(e.context_ids) for e in encoded]
        for b, k, row, start, opt in targets:
            shift = width - len(ids_rows[row])  # left padding of this row
            # token j of the option is predicted at the previous token: the context's last for j = 0
            cols = [shift + p_of[b] - 1] + [shift + start + j for j in range(len(opt) - 1)]
            target_row[b, k, : len(opt)] = row
            target_col[b, k, : len(opt)] = torch.tensor(cols)
            target_ids[b, k, : len(opt)] = torch.tensor(opt)
            target_mask[b, k, : len(opt)] = True
        first = int(target_col[target_mask].min())
        segment_ids = left_pad(seg_rows)
        batch = {
            "input_ids": left_pad(ids_rows),
            "position_ids": left_pad(pos_rows),
            "target_row": target_row,
            "target_col": torch.where(target_mask, target_col - first, 0),
            "target_ids": target_ids,
            "target_mask": target_mask,
            "option_mask": target_mask[:, :, 0],
            "logits_to_keep": torch.tensor(width - first),
            "index": torch.tensor([e.index for e in encoded], dtype=torch.long),
        }
        if self.share_prompt:
            batch["segment_ids"] = segment_ids
        else:
            batch["attention_mask"] = (segment_ids > 0).long()
        if any(e.divisors for e in encoded):
            divisors = torch.ones(shape[:2], dtype=torch.float32)
            for b, e in enumerate(encoded):
                divisors[b, : len(e.divisors)] = torch.tensor(e.divisors)
            batch["option_divisor"] = divisors
        if any(e.unconditional is not None for e in encoded):  # pmi: the unconditional rows, keys "uncond_*"
            plain = dataclasses.replace(self, normalize="sum")
            batch.update({f"uncond_{k}": v for k, v in plain.collate([e.unconditional for e in encoded]).items()})
        return batch

    def forward(self, model: PreTrainedModel, batch: dict[str, Tensor], prefix: PrefixCache | None = None) -> Tensor:
        """``(B, K_max)`` continuation log-likelihoods, ``-inf`` for missing options; differentiable.

        With ``prefix``, the batch holds only the tokens after it (see :class:`PrefixCache`): the
        packed mask is built over prefix + row and cut to the row's queries.
        """
        position_ids, past = batch["position_ids"], None
        if prefix is not None:
            past = prefix.expand(position_ids.shape[0])
            position_ids = position_ids + prefix.length
        if "segment_ids" in batch:
            segment_ids = batch["segment_ids"]
            if prefix is None:
                attention_mask = _packed_attention_mask(model, segment_ids, position_ids)
            else:
                full_segments = prefix.extend_mask(segment_ids)  # the prefix is context: segment 1
                full_positions = torch.cat([torch.arange(prefix.length, device=position_ids.device).expand(
                    position_ids.shape[0], -1), position_ids], dim=1)
                attention_mask = _packed_attention_mask(model, full_segments, full_positions)[:, :, prefix.length:]
        else:
            attention_mask = batch["attention_mask"]
            if prefix is not None:
                attention_mask = prefix.extend_mask(attention_mask)
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=int(batch["logits_to_keep"]),
            past_key_values=past,
            use_cache=past is not None,
        )
        logits = out.logits  # (rows, W, V): only the last W columns
        rows, width, vocab = logits.shape
        flat = batch["target_row"] * width + batch["target_col"]  # (B, K, C) index into rows*W
        token_logits = logits.reshape(rows * width, vocab)[flat, batch["target_ids"]].float()
        log_norm = torch.logsumexp(logits.float(), dim=-1).reshape(-1)[flat]
        mask = batch["target_mask"]
        logp = token_logits - log_norm
        _raise_if_nonfinite((~torch.isfinite(logp) & mask).flatten(1).any(-1), batch["index"])
        scores = logp.masked_fill(~mask, 0.0).sum(-1)
        if self.normalize == "mean":
            scores = scores / mask.sum(-1).clamp(min=1)
        if "option_divisor" in batch:
            scores = scores / batch["option_divisor"]
        if "uncond_target_ids" in batch:
            plain = dataclasses.replace(self, normalize="sum")
            unconditional = plain.forward(model, {k[len("uncond_"):]: v for k, v in batch.items() if k.startswith("uncond_")})
            scores = scores - unconditional.masked_fill(~batch["option_mask"], 0.0)
        return scores.masked_fill(~batch["option_mask"], -math.inf)


def _option_length(choice: str, unit: str) -> int:
    """Characters (``char``) or UTF-8 bytes (``byte``) of an option's text: the continuation less the one
    space that separates it from the prompt (lm-eval's default ``target_delimiter``)."""
    text = choice[1:] if choice.startswith(" ") else choice
    return len(text) if unit == "char" else len(text.encode("utf-8"))


def _unconditional(tokenizer: PreTrainedTokenizerBase, requests: Sequence[ScoringRequest]) -> list[Encoded]:
    """Each request's continuations, tokenised on their own, after one neutral token: lm-eval's empty-context
    pass for ``acc_mutual_info`` (the BOS token, or EOS where the tokenizer has no BOS)."""
    neutral = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if neutral is None:
        raise ValueError("normalize='pmi' needs a tokenizer with a BOS or EOS token for the unconditional pass")
    flat = [c for req in requests for c in req.choices]
    ids = tokenizer(flat, add_special_tokens=False)["input_ids"]
    out, pos = [], 0
    for i, req in enumerate(requests):
        options = [list(x) for x in ids[pos : pos + len(req.choices)]]
        pos += len(req.choices)
        for choice, opt in zip(req.choices, options):
            if not opt or opt[0] == neutral:
                raise ValueError(f"{_who(req, i)}: continuation {choice!r} tokenises to {opt} on its own; "
                                 "normalize='pmi' needs it to be non-empty and not start with the BOS/EOS token")
        out.append(Encoded(i, [neutral], options))
    return out


def _packed_attention_mask(model: PreTrainedModel, segment_ids: Tensor, position_ids: Tensor) -> Tensor:
    """4D mask: causal, each token sees the context (segment 1) and its own segment only.

    Boolean (True = attend) for sdpa, additive float for eager, as transformers builds them itself.
    Padding rows see themselves so no softmax row is empty (which would give NaN).
    """
    model = getattr(model, "module", model)  # DDP/FSDP wrappers keep the config on .module
    config = model.config
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in _PACKABLE_ATTENTION:
        raise ValueError(
            f"packed cloze scoring needs an attention implementation taking a 4D mask {_PACKABLE_ATTENTION}, "
            f"but the model uses {implementation!r}; use ClozeScorer(share_prompt=False)"
        )
    window = getattr(config, "sliding_window", None)
    if window is not None and int(position_ids.max()) >= window:
        raise ValueError(
            f"packed cloze scoring ignores the model's sliding window ({window}) but a row reaches position "
            f"{int(position_ids.max())}; use ClozeScorer(share_prompt=False)"
        )
    n = segment_ids.shape[1]
    q, k = segment_ids[:, :, None], segment_ids[:, None, :]
    causal = torch.ones(n, n, dtype=torch.bool, device=segment_ids.device).tril()
    eye = torch.eye(n, dtype=torch.bool, device=segment_ids.device)
    allowed = (causal & (k != 0) & ((k == 1) | (k == q))) | eye
    allowed = allowed[:, None]
    if implementation == "sdpa":
        return allowed
    dtype = model.get_input_embeddings().weight.dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _can_pack(model: PreTrainedModel, encoded: Sequence[Encoded]) -> bool:
    """Whether packed cloze rows give the same result as independent ones for this model and data."""
    config = getattr(model, "module", model).config
    if getattr(config, "_attn_implementation", None) not in _PACKABLE_ATTENTION:
        return False
    window = getattr(config, "sliding_window", None)
    longest = max(len(e.context_ids) + max(len(o) for o in e.option_ids) for e in encoded)
    return window is None or longest <= window
