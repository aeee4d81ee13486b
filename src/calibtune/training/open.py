"""Fine-tuning on free-form answers: token-level objectives on the answer tokens, through the same Trainer.

Each training item is its 0-shot answer prompt (:mod:`calibtune.open_prompts`) followed by the target
``answer + newline`` (the first gold alias; the newline is the stop rule, so the model learns to end
its answer). The two are tokenised jointly and the target's tokens are the ones after the shared
prefix, as cloze scoring does. Labels follow the causal-LM convention: the token id at each target
position, ``-100`` elsewhere, so the Trainer's ``num_items_in_batch`` counts target tokens and the
loss is the mean over the answer tokens of the (accumulated, multi-process) batch.

Objectives are the option-level ones applied to the *token* distribution: every answer token is one
row of ``(N_tokens, V)`` log-probabilities over the vocabulary with its target token as the label.
So ``ce``/``sft`` is token-level CE (answer-only SFT), ``ls`` is label smoothing over the vocabulary,
``ecp`` penalises the token entropy (``normalize_entropy`` divides it by V), ``mbls`` puts the margin on
the token logits (log-softmax is a per-row shift, so margins are those of the logits), and
``cogcalib`` adds its regulariser on the tokens of *known* items. CogCalib's known indicator is per
item: the answer NLL (the sum of its tokens' CE, from the training forward itself) against a
threshold re-fitted by Youden's J on probe labels, or the probe labels directly — the multiple-choice
trainer's own logic (:class:`calibtune.training.CalibrationTrainer`), then spread over the item's
tokens.

``rcft`` (and ``rcft-code``) bins *sequence* confidence: the E-step (before the first epoch, or every
epoch with ``estep: epoch``) generates a greedy answer to every training item, and bins the answers'
sequence probabilities by exact-match accuracy; the loss is ``sft_weight`` × the answer tokens' CE plus
``ece_weight`` × :func:`calibtune.objectives.sequence_ece_term` of the probability the model now gives
its own E-step answer (a second, teacher-forced forward), averaged over the batch's items. Under several
processes every process generates the whole training set (the same answers everywhere).

The held-out curve (:class:`OpenCurveCallback`) generates answers every ``every`` steps: EM accuracy,
ECE and mean of the sequence-probability confidence, split by known/unknown held-out items.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from ..answers import exact_match
from ..data import OpenItem
from ..evaluation import curve_figures
from ..objectives import sequence_ece_term
from ..open_eval import answer_questions, sequence_confidences
from ..open_prompts import QATemplate
from ..scoring import ClozeScorer, ScoringRequest, _left_pad
from .callbacks import CalibrationCurveCallback
from .checkpoints import STATE_FILE
from .trainer import CalibrationTrainer

__all__ = ["OPEN_OBJECTIVES", "OpenCollator", "OpenCurveCallback", "OpenTrainDataset", "OpenTrainer", "answer_logits",
           "build_open_dataset", "check_open_objective", "check_open_training", "open_trainer", "token_losses"]

OPEN_OBJECTIVES = ("ce", "sft", "ls", "mbls", "ecp", "focal", "cogcalib", "rcft", "rcft-code")


def check_open_objective(objective: str) -> None:
    """Refuse objectives with no form on free-form answers (only registered ones outside OPEN_OBJECTIVES)."""
    if objective not in OPEN_OBJECTIVES:
        raise ValueError(f"objective {objective!r} is not available for open questions; use one of {OPEN_OBJECTIVES}")


@dataclass(frozen=True)
class _Example:
    prompt_ids: list[int]
    answer_ids: list[int]
    known: int  # 1 known, 0 unknown, -1 no probe label


class OpenTrainDataset(TorchDataset):
    """Pre-tokenised (prompt, answer) pairs with the probe's known label (-1 when there is none), and the
    items and template they came from (RCFT's E-step generates answers to them)."""

    def __init__(self, examples: Sequence[_Example], items: Sequence[OpenItem] = (),
                 template: QATemplate | None = None) -> None:
        self.examples = list(examples)
        self.items, self.template = list(items), template

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"example": self.examples[i], "index": i}


def build_open_dataset(items: Sequence[OpenItem], tokenizer, template: QATemplate, *,
                       known: dict[str, bool] | None = None) -> OpenTrainDataset:
    """Render each item's 0-shot prompt and target (first alias + newline) and tokenise them once."""
    requests = [ScoringRequest(template.prompt(it), [template.target(it.answers[0])]) for it in items]
    encoded = ClozeScorer(share_prompt=False).encode(tokenizer, requests)
    flags = [(int(known[it.id]) if it.id in known else -1) if known is not None else -1 for it in items]
    return OpenTrainDataset([_Example(e.context_ids, e.option_ids[0], k) for e, k in zip(encoded, flags)],
                            items, template)


def _rows(prompts: Sequence[list[int]], answers: Sequence[list[int]], prefix: str = "") -> dict[str, torch.Tensor]:
    """Left-padded ``prompt + answer`` rows with causal-LM labels on the answer tokens, keys ``prefix + name``."""
    rows = [p + a for p, a in zip(prompts, answers)]
    labels = [[-100] * len(p) + a for p, a in zip(prompts, answers)]
    attention_mask = _left_pad([[1] * len(r) for r in rows])
    batch = {"input_ids": _left_pad(rows), "attention_mask": attention_mask,
             "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0), "labels": _left_pad(labels, value=-100),
             "logits_to_keep": torch.tensor(max(len(a) for a in answers) + 1)}
    return {prefix + k: v for k, v in batch.items()}


@dataclass
class OpenCollator:
    """Left-padded ``prompt + answer`` rows, causal-LM ``labels`` on the answer tokens, and ``known``.

    With ``predictions`` (dataset index → token ids of the model's own answer, set by RCFT's E-step) the
    batch also holds those answers' rows, under keys prefixed ``pred_``.
    """

    predictions: dict[int, list[int]] | None = None

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        examples = [f["example"] for f in features]
        batch = _rows([e.prompt_ids for e in examples], [e.answer_ids for e in examples])
        batch["known"] = torch.tensor([e.known for e in examples], dtype=torch.long)
        if self.predictions is not None:
            own = [self.predictions[f["index"]] for f in features]
            batch.update(_rows([e.prompt_ids for e in examples], own, prefix="pred_"))
        return batch


def answer_logits(model, batch: dict[str, torch.Tensor],
                  prefix: str = "") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits (N, V), target ids (N,), item index (N,))`` for the N answer tokens of the batch.

    Rows are left-padded, so every answer sits in the last ``logits_to_keep - 1`` columns; the logit at
    column ``c`` predicts the token at ``c + 1``. ``prefix="pred_"``: the rows of the model's own answers.
    Differentiable.
    """
    keep = int(batch[prefix + "logits_to_keep"])
    logits = model(input_ids=batch[prefix + "input_ids"], attention_mask=batch[prefix + "attention_mask"],
                   position_ids=batch[prefix + "position_ids"], logits_to_keep=keep, use_cache=False).logits
    targets = batch[prefix + "labels"][:, -(keep - 1):]
    mask = targets != -100
    item = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(targets)[mask]
    return logits[:, :-1][mask], targets[mask], item


def token_losses(objective, logits: torch.Tensor, targets: torch.Tensor, *,
                 known: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token losses ``(N,)``: ``objective`` on each token's distribution over the vocabulary.

    ``logits (N, V)`` are turned into log-probabilities (in at least float32) so that log-prob objectives
    (``sft``) apply too; ``known (N,)`` is the CogCalib indicator of each token's item.
    """
    scores = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    return objective(scores, targets, **({"known": known} if known is not None else {}))


class OpenTrainer(CalibrationTrainer):
    """:class:`CalibrationTrainer` with the loss on the answer tokens (see the module docstring)."""

    def __init__(self, *args: Any, max_new_tokens: int = 16, **kwargs: Any) -> None:
        """``max_new_tokens``: the cap on RCFT's E-step answers (the held-out curve's too)."""
        check_open_objective(kwargs["args"].objective)
        kwargs.setdefault("data_collator", OpenCollator())
        super().__init__(*args, **kwargs)
        self.max_new_tokens = max_new_tokens

    def e_step(self, model) -> None:
        """RCFT's E-step on free-form answers: a greedy answer to every training item, binned by its
        sequence probability and exact match; the answers become the collator's ``predictions``."""
        from ..objectives.rcft import e_step

        was_training = model.training
        model.eval()
        data: OpenTrainDataset = self.train_dataset
        _, gens = answer_questions(model, self.processing_class, data.template, data.items,
                                   max_new_tokens=self.max_new_tokens, batch_size=self.args.per_device_eval_batch_size,
                                   progress=False)
        if was_training:
            model.train()
        confidence = np.array([sequence_confidences(g)["seq_prob"] for g in gens])
        correct = np.array([exact_match(g.text, it.answers) for g, it in zip(gens, data.items)])
        accuracy, count = e_step(confidence, correct, n_bins=self.objective.n_bins)
        device = self.args.device
        self.bins = {"bin_accuracy": torch.as_tensor(accuracy, device=device),
                     "bin_count": torch.as_tensor(count, device=device)}
        self.data_collator.predictions = {i: list(g.token_ids) for i, g in enumerate(gens)}
        self.estep_history.append({"step": self.state.global_step, "epoch": int(self.state.epoch or 0),
                                   "bin_accuracy": accuracy.tolist(), "bin_count": count.tolist(),
                                   "accuracy": float(correct.mean()), "confidence": float(confidence.mean())})

    def calibration_state(self) -> dict[str, Any]:
        """The multiple-choice state plus RCFT's E-step answers (a resumed epoch keeps its answers)."""
        predictions = self.data_collator.predictions
        return {**super().calibration_state(),
                "predictions": None if predictions is None else {str(k): v for k, v in predictions.items()}}

    def load_calibration_state(self, checkpoint: str | Path) -> None:
        super().load_calibration_state(checkpoint)
        path = Path(checkpoint) / STATE_FILE
        saved = json.loads(path.read_text(encoding="utf-8")).get("predictions") if path.is_file() else None
        if saved is not None:
            self.data_collator.predictions = {int(k): v for k, v in saved.items()}

    def _own_answer_ece(self, model, inputs) -> torch.Tensor:
        """RCFT's ECE term, per item, on the probability of the model's own E-step answer (differentiable)."""
        logits, labels, item = answer_logits(model, inputs, prefix="pred_")
        token_nll = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
        logprob = torch.zeros(inputs["known"].shape[0], device=logits.device).index_add(0, item, -token_nll)
        return sequence_ece_term(logprob.exp(), self.bins["bin_accuracy"], self.bins["bin_count"],
                                 n_bins=self.objective.n_bins, include_top_bin=self.objective.include_top_bin)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        logits, labels, item = answer_logits(model, inputs)
        probe_known = inputs["known"]
        token_nll = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
        nll = torch.zeros(probe_known.shape[0], device=logits.device).index_add(0, item, token_nll.detach())
        if self.args.known_source == "nll" and model.training:
            self._remember(nll, probe_known)
        per_item = None  # a per-item term (RCFT's), averaged over the batch's items
        if self.state.global_step < self.args.style_steps:
            per_token = token_nll  # style adaptation: plain CE on the answer format first
        elif "bin_accuracy" in self.state_keys:
            per_token = self.objective.sft_weight * token_nll
            per_item = self.objective.ece_weight * self._own_answer_ece(model, inputs)
        else:
            known = self._known(nll, probe_known)[item] if "known" in self.state_keys else None
            per_token = token_losses(self.objective, logits, labels, known=known)
        if num_items_in_batch is not None and model.training:
            loss = per_token.sum() / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
            if per_item is not None:
                loss = loss + per_item.mean().to(loss.dtype) / self.args.gradient_accumulation_steps
        else:
            loss = per_token.mean() + (per_item.mean().to(per_token.dtype) if per_item is not None else 0.0)
        return (loss, {"logits": logits}) if return_outputs else loss


class OpenCurveCallback(CalibrationCurveCallback):
    """The held-out curve over generated answers: EM accuracy, ECE and mean of the sequence probability."""

    def __init__(self, items: Sequence[OpenItem], tokenizer, template: QATemplate, *, max_new_tokens: int = 16,
                 **kwargs: Any) -> None:
        """``kwargs``: those of :class:`CalibrationCurveCallback` (every, known, curve_path, trainer, ...)."""
        super().__init__([], tokenizer, None, **kwargs)  # no option scoring: measure() generates instead
        self.items = list(items)
        self.template, self.max_new_tokens = template, max_new_tokens

    def measure(self, model) -> dict[str, float]:
        """The held-out figures for ``model`` now (greedy answers, 0-shot)."""
        _, gens = answer_questions(model, self.tokenizer, self.template, self.items,
                                   max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, progress=False)
        rows = [{"id": it.id, "confidence": sequence_confidences(g)["seq_prob"],
                 "correct": int(exact_match(g.text, it.answers))} for g, it in zip(gens, self.items)]
        return curve_figures(rows, known=self.known, n_bins=self.n_bins, prefix=self.prefix)


def open_trainer(cfg, args, model, tokenizer, train_items: Sequence[OpenItem], held_out_items, *,
                 known: dict[str, bool] | None, heldout_known: dict[str, bool] | None,
                 curve_path: Path) -> tuple[OpenTrainer, OpenCurveCallback | None]:
    """The trainer (and held-out curve) of a ``calibtune train`` run on short-answer data."""
    from ..open_prompts import get_qa_template

    template = get_qa_template(cfg.qa_template, tokenizer)
    dataset = build_open_dataset(train_items, tokenizer, template, known=known)
    trainer = OpenTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          max_new_tokens=cfg.max_new_tokens)
    curve = None
    if held_out_items is not None and cfg.eval_every:
        curve = OpenCurveCallback(held_out_items, tokenizer, template, every=cfg.eval_every, known=heldout_known,
                                  curve_path=curve_path, trainer=trainer, max_new_tokens=cfg.max_new_tokens,
                                  batch_size=args.per_device_eval_batch_size,
                                  best_dir=curve_path.parent / "best" if cfg.early_stopping else None)
        trainer.add_callback(curve)
    return trainer, curve


def check_open_training(cfg) -> None:
    """Refuse settings that do not apply to open questions, before the model is loaded."""
    check_open_objective(cfg.objective)
    if cfg.qa_template not in ("qa", "chat"):
        from ..open_prompts import get_qa_template

        get_qa_template(cfg.qa_template)
    if cfg.sft_target != "answer":
        raise ValueError("sft_target 'question+answer' applies to multiple-choice data only")
