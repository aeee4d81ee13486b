"""Confidence of a causal LM over the options of a multiple-choice item.

Two scorings share one design: ``encode`` (tokenisation) -> ``collate`` (left-padded tensors) ->
``forward`` (differentiable ``(B, K_max)`` option scores). Training losses call ``forward`` with
gradients on; evaluation (:func:`score`) is the same call under ``torch.inference_mode()`` plus
length-sorted batching.

* ``letter``: the logit of each option label's single token (" A", "B", " true", ...) at the answer
  position: one forward per item with ``logits_to_keep=1``.
* ``cloze``: the log-likelihood of each option's continuation text. By default the prompt is run once
  per item: prompt and all K continuations are packed into one row whose 4D attention mask lets each
  continuation see the prompt and itself only, with positions restarting after the prompt for every
  continuation (so the result equals K independent ``prompt+option`` forwards).
  ``normalize``: the summed token log-probabilities (``sum``), their per-token ``mean``, per
  character (``char``: lm-eval's ``acc_norm``) or per UTF-8 byte (``byte``: ``acc_bytes``) of the option
  text, or ``pmi``: minus the option's log-likelihood after a neutral one-token prompt (lm-eval's
  ``acc_mutual_info``).

Shared prefixes: requests that carry the same ``shared_prefix`` (one k-shot exemplar set used by many
items) are scored against one :class:`PrefixCache`: the keys and values of their longest common
leading tokens are computed once and expanded over each batch, so only each item's own tokens are run.
The result equals the unshared computation (same tokens, same positions, same attention).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "ClozeScorer",
    "Encoded",
    "LetterScorer",
    "NonFiniteLogitsError",
    "PrefixCache",
    "Scorer",
    "ScoringRequest",
    "make_scorer",
    "score",
]

_PACKABLE_ATTENTION = ("sdpa", "eager")  # implementations that accept a custom 4D mask
Normalization = Literal["sum", "mean", "char", "byte", "pmi"]
NORMALIZATIONS: tuple[str, ...] = ("sum", "mean", "char", "byte", "pmi")  # cloze option scores, see ClozeScorer


class NonFiniteLogitsError(FloatingPointError):
    """The model produced NaN/inf logits where an option is scored."""


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


class Scorer(Protocol):
    """What training and evaluation need from a scoring method."""

    def encode(self, tokenizer: PreTrainedTokenizerBase, requests: Sequence[ScoringRequest]) -> list[Encoded]: ...

    def collate(self, encoded: Sequence[Encoded]) -> dict[str, Tensor]: ...

    def forward(self, model: PreTrainedModel, batch: dict[str, Tensor], prefix: PrefixCache | None = None) -> Tensor: ...


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


def _left_pad(rows: Sequence[Sequence[int]], value: int = 0) -> Tensor:
    """``(len(rows), max_len)`` long tensor, each row right-aligned."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
    return out


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


class ContextLengthError(ValueError):
    """A prompt with its longest option does not fit the model's context window."""


def context_length(model: PreTrainedModel) -> int | None:
    """The longest sequence the model's positions cover (``max_position_embeddings``), when it says."""
    config = getattr(model, "module", model).config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "max_position_embeddings", None)


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
        input_ids = _left_pad([e.context_ids for e in encoded])
        attention_mask = _left_pad([[1] * len(e.context_ids) for e in encoded])
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
        segment_ids = _left_pad(seg_rows)
        batch = {
            "input_ids": _left_pad(ids_rows),
            "position_ids": _left_pad(pos_rows),
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


def make_scorer(
    scoring: Literal["letter", "cloze"],
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


def _model_device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


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


def score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[ScoringRequest],
    *,
    scoring: Literal["letter", "cloze"] = "letter",
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
