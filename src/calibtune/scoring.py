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
    "Scorer",
    "ScoringRequest",
    "make_scorer",
    "score",
]

_PACKABLE_ATTENTION = ("sdpa", "eager")  # implementations that accept a custom 4D mask


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


@dataclass(frozen=True)
class Encoded:
    """A tokenised item: shared context tokens and, per option, the tokens to score after it."""

    index: int  # position of the item in the request list
    context_ids: list[int]
    option_ids: list[list[int]]  # letter: one single-token list per option

    @property
    def length(self) -> int:
        """Tokens in the packed row (context + all options); the sort key for batching."""
        return len(self.context_ids) + sum(len(o) for o in self.option_ids)


class Scorer(Protocol):
    """What training and evaluation need from a scoring method."""

    def encode(self, tokenizer: PreTrainedTokenizerBase, requests: Sequence[ScoringRequest]) -> list[Encoded]: ...

    def collate(self, encoded: Sequence[Encoded]) -> dict[str, Tensor]: ...

    def forward(self, model: PreTrainedModel, batch: dict[str, Tensor]) -> Tensor: ...


def _tokenize(
    tokenizer: PreTrainedTokenizerBase, requests: Sequence[ScoringRequest]
) -> list[tuple[list[int], list[list[int]]]]:
    """Token ids of each prompt and of each ``prompt + choice`` (one batched tokenizer call)."""
    texts: list[str] = []
    for i, req in enumerate(requests):
        if len(req.choices) == 0:
            raise ValueError(f"item {i}: expected at least one choice, but got none")
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
        raise NonFiniteLogitsError(f"non-finite (NaN/inf) logits while scoring item(s) {items}")


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
                        f"item {i}: label {choice!r} is not a single token after the prompt for tokenizer "
                        f"{type(tokenizer).__name__} ({tokenizer.name_or_path!r}): prompt+label ends in pieces "
                        f"{pieces} after {n} of the prompt's {len(prompt)} tokens"
                    )
                labels.append([joint[-1]])
            if len({lab[0] for lab in labels}) != len(labels):
                raise ValueError(f"item {i}: labels {list(req.choices)} map to repeated tokens {labels}")
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

    def forward(self, model: PreTrainedModel, batch: dict[str, Tensor]) -> Tensor:
        """``(B, K_max)`` option scores, ``-inf`` for missing options; differentiable."""
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
            logits_to_keep=1,
            use_cache=False,
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

    ``normalize="mean"`` divides by the number of continuation tokens. ``share_prompt=True`` packs
    prompt + all continuations into one row (the prompt is computed once per item) and needs an
    attention implementation that takes a 4D mask (sdpa/eager); ``False`` runs one
    ``prompt+option`` row per option with an ordinary 2D mask.
    """

    normalize: Literal["sum", "mean"] = "sum"
    share_prompt: bool = True

    def __post_init__(self) -> None:
        if self.normalize not in ("sum", "mean"):
            raise ValueError(f"Expected `normalize` to be one of ('sum', 'mean'), but got {self.normalize!r}")

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
                raise ValueError(f"item {i}: no context token before the continuations (empty prompt and no BOS?)")
            options = [joint[n:] for joint in joints]
            for choice, opt in zip(req.choices, options):
                if not opt:
                    raise ValueError(f"item {i}: continuation {choice!r} adds no token to the prompt")
            out.append(Encoded(i, prompt[:n], options))
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
        return batch

    def forward(self, model: PreTrainedModel, batch: dict[str, Tensor]) -> Tensor:
        """``(B, K_max)`` continuation log-likelihoods, ``-inf`` for missing options; differentiable."""
        if "segment_ids" in batch:
            attention_mask = _packed_attention_mask(model, batch["segment_ids"], batch["position_ids"])
        else:
            attention_mask = batch["attention_mask"]
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=attention_mask,
            position_ids=batch["position_ids"],
            logits_to_keep=int(batch["logits_to_keep"]),
            use_cache=False,
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
        return scores.masked_fill(~batch["option_mask"], -math.inf)


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
    normalize: Literal["sum", "mean"] = "sum",
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


def score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: Sequence[ScoringRequest],
    *,
    scoring: Literal["letter", "cloze"] = "letter",
    batch_size: int = 8,
    normalize: Literal["sum", "mean"] = "sum",
    share_prompt: bool | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """Per item, float64 log-probabilities over its K options (log_softmax of the option scores).

    Items are batched by length (longest first) and returned in request order. ``share_prompt``
    (cloze only): ``None`` packs the prompt once per item whenever the model allows it.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"Expected `batch_size` >= 1, but got {batch_size}")
    if not requests:
        return []
    scorer = make_scorer(scoring, normalize=normalize)
    encoded = scorer.encode(tokenizer, requests)
    if isinstance(scorer, ClozeScorer):
        share = _can_pack(model, encoded) if share_prompt is None else share_prompt
        scorer = dataclasses.replace(scorer, share_prompt=share)
    order = sorted(range(len(encoded)), key=lambda i: -encoded[i].length)
    device = _model_device(model)
    results: list[np.ndarray] = [np.empty(0)] * len(encoded)
    bar = tqdm(total=len(encoded), unit="item", desc=f"{scoring} scoring", disable=not progress)
    with torch.inference_mode(), bar:
        for start in range(0, len(order), batch_size):
            chunk = [encoded[i] for i in order[start : start + batch_size]]
            batch = {name: t.to(device) for name, t in scorer.collate(chunk).items()}
            logp = torch.log_softmax(scorer.forward(model, batch).double(), dim=-1).cpu().numpy()
            for e, row in zip(chunk, logp):
                results[e.index] = row[: len(e.option_ids)]
            bar.update(len(chunk))
    return results
