"""Calibration-aware fine-tuning on a transformers ``Trainer``: the loss sees the distribution over options.

``CalibrationTrainer.compute_loss`` asks the scorer (the same letter/cloze scorer as evaluation) for
option scores of the batch and the chosen objective for per-sample losses, and divides their sum by
``num_items_in_batch`` so gradient accumulation and several processes give the same gradient as one
big batch. Everything else — optimiser, schedule, checkpoints and ``--resume``, logging to
``report_to`` trackers, Accelerate (DDP/FSDP/DeepSpeed) — is the Trainer's own.

CogCalib's known indicator comes either from precomputed probe labels (``known_source="probe"``) or
online from the per-sample NLL of the training forward pass itself (``known_source="nll"``): after
``style_steps`` steps of plain CE (style adaptation) a threshold ``t`` is fitted by Youden's J on the
NLLs of the items seen in the last ``refit_every`` steps against their probe labels (the labelled
calibration data), and re-fitted every ``refit_every`` steps. No extra forward pass is spent.

``sft_target="question+answer"`` adds the language-model loss of the prompt (question and listed options)
to each item's loss — CFT/RCFT's ``L_SFT2``, the joint likelihood of question plus answer, where the answer
part is the objective on the option distribution. The prompt term is the per-token mean NLL of the
prompt's tokens (so a long question does not swamp the one-answer term), times ``question_weight``; it
costs one more forward over the prompts.

Faults: checkpoints are saved by default (every ``SAVE_STEPS`` steps) and each also holds the
calibration state (``STATE_FILE``: CogCalib's threshold and NLL window, RCFT's bins, the held-out
curve), so ``calibtune train --resume last`` continues exactly; a NaN/inf loss stops training at its
step (:class:`NonFiniteLossError`) before the optimiser applies it, keeping the last good checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import warnings

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch.utils.data import Dataset as TorchDataset
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from .data import MCItem
from .metrics import calibration_error
from .objectives import get_objective, per_sample_nll, youden_threshold
from .prompts import Template, build_requests
from .devices import cpu_has_native_bf16, fit_scorer_to_model, resolve_device
from .distributed import barrier, gather_in_order, score_sharded, shard_indices
from .scoring import Encoded, NonFiniteLogitsError, _left_pad, check_context, make_scorer

KNOWN_SOURCES = ("none", "probe", "nll")
STATE_FILE = "calibtune_state.json"  # beside the Trainer's files in each checkpoint: the calibration state


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; training stopped at that step."""


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder of ``output_dir`` (it holds ``trainer_state.json``)."""
    folder = Path(output_dir)
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()
             and (p / "trainer_state.json").is_file()] if folder.is_dir() else []
    return max(found, key=lambda p: int(p.name.split("-", 1)[1]), default=None)
SFT_TARGETS = ("answer", "question+answer")
_EXTRA_KEYS = ("labels", "known", "context_input_ids", "context_attention_mask")  # not the scorer's


@dataclass
class CalibrationTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the calibration settings (so every Trainer flag still applies)."""

    objective: str = field(default="ce", metadata={"help": "ce, ls, mbls, ecp, focal, sft or cogcalib."})
    objective_params: dict = field(default_factory=dict, metadata={"help": "Parameters of the objective."})
    scoring: str = field(default="cloze", metadata={"help": "letter or cloze: which option distribution is trained."})
    normalize: str = field(default="sum", metadata={"help": "Cloze: sum or mean of the option's token log-probs."})
    known_source: str = field(default="none", metadata={"help": "CogCalib known indicator: probe labels or online NLL threshold."})
    style_steps: int = field(default=0, metadata={"help": "Steps of plain CE before the calibration regulariser starts."})
    refit_every: int = field(default=20, metadata={"help": "Steps between Youden's-J refits of the NLL threshold."})
    estep: str = field(default="epoch", metadata={"help": "RCFT E-step over the training set: every 'epoch' (paper) or 'once' (released code)."})
    sft_target: str = field(default="answer", metadata={"help": "'answer' (L_SFT1) or 'question+answer' (L_SFT2: adds the prompt's LM loss)."})
    question_weight: float = field(default=1.0, metadata={"help": "Weight of the prompt's mean token NLL with sft_target='question+answer'."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.known_source not in KNOWN_SOURCES:
            raise ValueError(f"known_source must be one of {KNOWN_SOURCES}, got {self.known_source!r}")
        if self.estep not in ("epoch", "once"):
            raise ValueError(f"estep must be 'epoch' or 'once', got {self.estep!r}")
        if self.sft_target not in SFT_TARGETS:
            raise ValueError(f"sft_target must be one of {SFT_TARGETS}, got {self.sft_target!r}")
        if not self.question_weight >= 0:
            raise ValueError(f"question_weight must be >= 0, got {self.question_weight!r}")
        if self.scoring not in ("letter", "cloze"):
            raise ValueError(f"scoring must be 'letter' or 'cloze', got {self.scoring!r}")
        self.remove_unused_columns = False  # our batches carry labels/known flags the model never sees


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


def prompt_nll(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Per-row mean NLL of each real token after the first given the ones before it (left-padded rows), ``(B,)``."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   use_cache=False).logits[:, :-1].float()
    target = input_ids[:, 1:]
    counted = (attention_mask[:, 1:] * attention_mask[:, :-1]).bool()
    token_nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    return (token_nll * counted).sum(-1) / counted.sum(-1).clamp(min=1)


class CalibrationTrainer(Trainer):
    """A ``Trainer`` whose loss is an objective on the option distribution (CE, LS, MbLS, ECP, focal, SFT, CogCalib)."""

    loss_is_scaled_for_ga = True  # compute_loss divides by num_items_in_batch itself

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        targs: CalibrationTrainingArguments = kwargs["args"]
        self.objective = get_objective(targs.objective, **targs.objective_params)
        if self.objective.needs_known and targs.known_source == "none":
            raise ValueError("objective 'cogcalib' needs known_source='probe' or 'nll'")
        self.scorer = make_scorer(targs.scoring, normalize=targs.normalize,
                                  full_vocab=getattr(self.objective, "needs_logprob_scores", False))
        # flash-attention (no 4D mask) or rows beyond a sliding window: unpacked cloze rows, with a notice
        self.scorer = fit_scorer_to_model(self.scorer, kwargs.get("model"),
                                          getattr(kwargs.get("train_dataset"), "encoded", ()))
        kwargs.setdefault("data_collator", MCCollator(self.scorer, with_context=targs.sft_target == "question+answer"))
        super().__init__(*args, **kwargs)
        # Our labels are one option index per item (never shifted, never -100): count them all.
        self.model_accepts_loss_kwargs = True
        self._loss_shifts_labels = False
        self.threshold: float | None = None
        self.threshold_history: list[dict[str, float]] = []
        self._window: list[torch.Tensor] = []
        self._last_refit = 0
        self.state_keys = set(getattr(self.objective, "state_keys", ("known",) if self.objective.needs_known else ()))
        self.bins: dict[str, torch.Tensor] | None = None  # RCFT: per-bin accuracy and count from the E-step
        self.estep_history: list[dict[str, Any]] = []
        if "bin_accuracy" in self.state_keys:
            self.add_callback(_EStep(self))

    # Checkpoints: the Trainer saves weights, optimiser, schedule, RNG and its state; this adds the
    # calibration state (CogCalib's threshold and NLL window, RCFT's bins, the held-out curve) as
    # STATE_FILE in the same folder, written first, so every complete checkpoint has it.

    def calibration_state(self) -> dict[str, Any]:
        """What a resumed run needs to continue exactly as if it had never stopped (JSON-able)."""
        window = torch.cat(self._window).tolist() if self._window else []
        bins = None if self.bins is None else {k: {"values": v.tolist(), "dtype": str(v.dtype).removeprefix("torch.")}
                                                for k, v in self.bins.items()}
        callbacks = {type(cb).__name__: cb.state_dict() for cb in self.callback_handler.callbacks
                     if hasattr(cb, "state_dict")}
        return {"step": self.state.global_step, "threshold": self.threshold, "threshold_history": self.threshold_history,
                "last_refit": self._last_refit, "window": window, "bins": bins, "estep_history": self.estep_history,
                "callbacks": callbacks}

    def load_calibration_state(self, checkpoint: str | Path) -> None:
        """Restore :meth:`calibration_state` from ``checkpoint``; a stateful objective refuses a checkpoint without it."""
        path = Path(checkpoint) / STATE_FILE
        if not path.is_file():
            if self.args.known_source == "nll" or "bin_accuracy" in self.state_keys:
                raise ValueError(f"{checkpoint}: no {STATE_FILE} (a checkpoint from before calibtune saved its "
                                 "calibration state), so the threshold/bins cannot be restored; train from scratch")
            return
        saved = json.loads(path.read_text(encoding="utf-8"))
        self.threshold, self.threshold_history = saved["threshold"], saved["threshold_history"]
        self._last_refit = saved["last_refit"]
        self._window = [torch.tensor(saved["window"], dtype=torch.float32).reshape(-1, 2)] if saved["window"] else []
        self.bins = None if saved["bins"] is None else {
            k: torch.tensor(v["values"], dtype=getattr(torch, v["dtype"]), device=self.args.device)
            for k, v in saved["bins"].items()}
        self.estep_history = saved["estep_history"]
        for cb in self.callback_handler.callbacks:
            if type(cb).__name__ in saved["callbacks"] and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(saved["callbacks"][type(cb).__name__])

    def _save_checkpoint(self, model, trial) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        from .predictions import atomic_write

        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            with atomic_write(folder / STATE_FILE) as fh:
                json.dump(self.calibration_state(), fh)
        super()._save_checkpoint(model, trial)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """``Trainer.train``; ``resume_from_checkpoint=True`` takes the newest complete checkpoint, whose
        calibration state is restored too."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise FileNotFoundError(f"{self.args.output_dir}: no checkpoint to resume from")
        if resume_from_checkpoint:
            resume_from_checkpoint = str(resume_from_checkpoint)
            self.load_calibration_state(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        """``Trainer.training_step``, stopped with :class:`NonFiniteLossError` at the first NaN/inf loss
        (before the optimiser applies it), so the checkpoints on disk are all from finite steps."""
        step = self.state.global_step + 1
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
        except NonFiniteLogitsError:
            raise NonFiniteLossError(self._diverged(step, "the model's logits became NaN/inf")) from None
        if not torch.isfinite(loss).all():
            raise NonFiniteLossError(self._diverged(step, f"the loss is {float(loss)}"))
        return loss

    def _diverged(self, step: int, what: str) -> str:
        last = last_checkpoint(self.args.output_dir)
        kept = (f"the last good checkpoint is {last} (resume it with a lower learning rate)" if last is not None
                else "no checkpoint had been saved yet")
        return f"training diverged at step {step}: {what}; stopped, {kept}"

    def e_step(self, model) -> None:
        """RCFT's E-step: score the whole training set with the current model; bin it by confidence.

        Under several processes each scores its length-balanced shard and the results are gathered.
        """
        from .objectives.rcft import e_step

        was_training = model.training
        model.eval()
        conf, correct = [], []
        mine = shard_indices([e.length for e in self.train_dataset.encoded])
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(self.train_dataset, mine),
                                             batch_size=self.args.per_device_train_batch_size,
                                             collate_fn=self.data_collator)
        with torch.inference_mode():
            for batch in loader:
                batch = self._prepare_inputs(batch)
                scores = self.scorer.forward(model, {k: v for k, v in batch.items() if k not in _EXTRA_KEYS})
                p = torch.softmax(scores.float(), dim=-1)
                conf.append(p.max(-1).values.cpu())
                correct.append((p.argmax(-1) == batch["labels"]).cpu())
        if was_training:
            model.train()
        pairs = gather_in_order(mine, list(zip(torch.cat(conf).tolist(), torch.cat(correct).tolist())),
                                len(self.train_dataset))
        accuracy, count = e_step(np.array([c for c, _ in pairs]), np.array([k for _, k in pairs]),
                                 n_bins=getattr(self.objective, "n_bins", 10))
        device = self.args.device
        self.bins = {"bin_accuracy": torch.as_tensor(accuracy, device=device),
                     "bin_count": torch.as_tensor(count, device=device)}
        self.estep_history.append({"step": self.state.global_step, "epoch": int(self.state.epoch or 0),
                                   "bin_accuracy": np.asarray(accuracy).tolist(),
                                   "bin_count": np.asarray(count).tolist()})

    def _known(self, nll: torch.Tensor, probe_known: torch.Tensor) -> torch.Tensor:
        """The known indicator for this batch (all False during style adaptation)."""
        args: CalibrationTrainingArguments = self.args
        if self.state.global_step < args.style_steps:
            return torch.zeros_like(nll, dtype=torch.bool)
        if args.known_source == "probe":
            return probe_known == 1
        if args.known_source == "nll":
            self._maybe_refit()
            if self.threshold is None:
                return torch.zeros_like(nll, dtype=torch.bool)
            return nll <= self.threshold
        return torch.zeros_like(nll, dtype=torch.bool)

    def _remember(self, nll: torch.Tensor, probe_known: torch.Tensor) -> None:
        """Keep (NLL, probe label) of the items just seen, from every process."""
        pair = torch.stack([nll.detach().float(), probe_known.float()], dim=1)
        pair = self.accelerator.pad_across_processes(pair, dim=0, pad_index=-2)
        pair = self.accelerator.gather(pair)
        self._window.append(pair[pair[:, 1] >= 0].cpu())

    def _maybe_refit(self) -> None:
        step = self.state.global_step
        due = self.threshold is None or step - self._last_refit >= self.args.refit_every
        if not due or not self._window:
            return
        window = torch.cat(self._window)
        labels = window[:, 1].numpy() == 1
        if labels.all() or not labels.any():
            return  # Youden's J needs both known and unknown items in the window
        fit = youden_threshold(window[:, 0].numpy(), labels)
        agreement = float(np.mean((window[:, 0].numpy() <= fit.t) == labels))  # indicator vs probe labels
        self.threshold = float(fit.t)
        self._last_refit = step
        self._window = []
        self.threshold_history.append({"step": step, "threshold": fit.t, "youden_j": fit.j, "agreement": agreement,
                                       "known_fraction": float(labels.mean()), "n": int(len(labels))})
        self.log({"cogcalib_threshold": fit.t, "cogcalib_youden_j": fit.j, "cogcalib_agreement": agreement})

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        labels = inputs["labels"]
        probe_known = inputs["known"]
        batch = {k: v for k, v in inputs.items() if k not in _EXTRA_KEYS}
        scores = self.scorer.forward(model, batch)
        nll = per_sample_nll(scores, labels).detach()
        if self.args.known_source == "nll" and model.training:
            self._remember(nll, probe_known)
        if self.state.global_step < self.args.style_steps:
            per_item = get_objective("ce")(scores, labels)  # style adaptation: the task format first
        else:
            state: dict[str, torch.Tensor] = {}
            if "known" in self.state_keys:
                state["known"] = self._known(nll, probe_known)
            if "bin_accuracy" in self.state_keys:
                state.update(self.bins)
            per_item = self.objective(scores, labels, **state)
        if "context_input_ids" in inputs:  # L_SFT2: the question's likelihood too
            per_item = per_item + self.args.question_weight * prompt_nll(
                model, inputs["context_input_ids"], inputs["context_attention_mask"])
        if num_items_in_batch is not None and model.training:
            loss = per_item.sum() / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        else:
            loss = per_item.mean()
        return (loss, {"scores": scores}) if return_outputs else loss


class _EStep(TrainerCallback):
    """Runs the trainer's RCFT E-step before the first epoch and, with ``estep="epoch"``, before every epoch."""

    def __init__(self, trainer: CalibrationTrainer) -> None:
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        history = self.trainer.estep_history
        if history and history[-1].get("epoch") == int(state.epoch or 0):
            return  # resumed inside an epoch whose E-step ran before the checkpoint: its bins are restored
        if self.trainer.bins is None or args.estep == "epoch":
            self.trainer.e_step(model)


class CalibrationCurveCallback(TrainerCallback):
    """Every ``every`` steps, accuracy/ECE on held-out items, and confidence vs accuracy for known and unknown.

    Usable in any ``Trainer``: give it the items, the tokenizer, a template and (optionally) probe
    labels of these items by id (items without one count in neither group), and ``trainer`` to send
    the figures to ``report_to`` trackers through ``trainer.log``.
    The curve is also written to ``curve_path`` (CSV, and JSON beside it) on the main process. With
    ``best_dir`` the model of the first measured step with the highest held-out accuracy (after step 0)
    is saved there: model selection on the held-out split, never on a test set.
    """

    def __init__(self, items: Sequence[MCItem], tokenizer, template: Template, *, scoring: str = "cloze",
                 normalize: str = "sum", every: int = 50, known: dict[str, bool] | None = None,
                 curve_path: str | Path | None = None, trainer: Trainer | None = None, n_bins: int = 15,
                 batch_size: int = 8, prefix: str = "heldout", best_dir: str | Path | None = None) -> None:
        self.items = list(items)
        self.requests = build_requests(self.items, template, scoring)
        self.tokenizer = tokenizer
        self.scoring, self.normalize, self.every = scoring, normalize, every
        self.known = known
        self.curve_path = Path(curve_path) if curve_path else None
        self.trainer = trainer
        self.n_bins, self.batch_size, self.prefix = n_bins, batch_size, prefix
        self.best_dir = Path(best_dir) if best_dir else None
        self.best: dict[str, float] | None = None
        self.curve: list[dict[str, float]] = []

    def measure(self, model) -> dict[str, float]:
        """The held-out figures for ``model`` now."""
        was_training = model.training
        model.eval()
        logprobs = score_sharded(model, self.tokenizer, self.requests, scoring=self.scoring,
                                 batch_size=self.batch_size, normalize=self.normalize, progress=False)
        if was_training:
            model.train()
        conf = np.array([float(np.exp(lp.max())) for lp in logprobs])
        correct = np.array([int(np.argmax(lp) == it.gold) for lp, it in zip(logprobs, self.items)])
        nll = np.array([-float(lp[it.gold]) for lp, it in zip(logprobs, self.items)])
        out = {f"{self.prefix}_accuracy": float(correct.mean()),
               f"{self.prefix}_ece": calibration_error(conf, correct, n_bins=self.n_bins),
               f"{self.prefix}_confidence": float(conf.mean()), f"{self.prefix}_nll": float(nll.mean())}
        if self.known is not None:  # items without a label are in neither group
            labels = [self.known.get(it.id) for it in self.items]
            known = np.array([lab is True for lab in labels])
            unknown = np.array([lab is False for lab in labels])
            for name, sel in (("known", known), ("unknown", unknown)):
                if sel.any():
                    out[f"{self.prefix}_{name}_confidence"] = float(conf[sel].mean())
                    out[f"{self.prefix}_{name}_accuracy"] = float(correct[sel].mean())
                    out[f"{self.prefix}_{name}_n"] = int(sel.sum())
        return out

    def state_dict(self) -> dict[str, Any]:
        """The curve so far (saved in checkpoints, so a resumed run keeps its earlier points)."""
        return {"curve": self.curve, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve, self.best = list(state["curve"]), state["best"]

    def _record(self, state, model) -> None:
        figures = {"step": state.global_step, **self.measure(model)}
        self.curve.append(figures)
        accuracy = figures[f"{self.prefix}_accuracy"]
        if self.best_dir is not None and state.global_step > 0 and (
                self.best is None or accuracy > self.best[f"{self.prefix}_accuracy"]):
            self.best = figures  # SliCK-style early stopping: the first step with the best held-out accuracy
            if state.is_world_process_zero:
                model.save_pretrained(str(self.best_dir))
        if self.trainer is not None:
            # Trainer.log clears control.should_log: keep it, or this step's training loss would go unlogged
            # (and, under several processes, end up in train_loss as one process's unreduced value)
            should_log = self.trainer.control.should_log
            self.trainer.log({k: v for k, v in figures.items() if k != "step"})
            self.trainer.control.should_log = should_log
        if self.curve_path is not None and state.is_world_process_zero:
            self._write()

    def _write(self) -> None:
        from .predictions import atomic_write

        keys = sorted({k for row in self.curve for k in row}, key=lambda k: (k != "step", k))
        with atomic_write(self.curve_path) as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.curve)
        with atomic_write(self.curve_path.with_suffix(".json")) as fh:
            json.dump(self.curve, fh, indent=1)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self._record(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self._record(state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not self.curve or self.curve[-1]["step"] != state.global_step:
            self._record(state, model)


def lora_model(model, *, r: int = 8, alpha: int = 16, dropout: float = 0.0, targets: str | list[str] = "all-linear"):
    """Wrap ``model`` with a PEFT LoRA adapter (``targets="all-linear"`` or a list of module names)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


class LoraSettings(BaseModel):
    """LoRA through PEFT; ``targets`` is "all-linear" or a list of module names."""

    model_config = ConfigDict(extra="forbid")
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: str | list[str] = "all-linear"


class TrainConfig(BaseModel):
    """A ``calibtune train`` run, as read from YAML (unknown keys are errors, with their path)."""

    model_config = ConfigDict(extra="forbid")
    model: str = "smollm2"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    device: str = Field("auto", description="auto, cpu, cuda or mps; under accelerate launch each process takes its own GPU")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="None: transformers' default (sdpa); cloze rows are unpacked when it takes no 4D mask")
    batch_size: Annotated[int, Field(gt=0)] | Literal["auto"] | None = Field(
        None, description="per-device train batch (training.per_device_train_batch_size); auto: the Trainer's "
                          "auto_find_batch_size")
    train_data: str
    train_limit: int | None = Field(None, ge=1)
    train_ids: list[str] | None = Field(None, description="train only on these item ids of train_data (in this order)")
    data_seed: int | None = Field(None, description="seed of the train/eval subsets (default: seed)")
    eval_data: str | None = None
    eval_limit: int | None = Field(None, ge=1)
    data_dir: str | None = None
    fields: dict[str, str] = Field(default_factory=dict, description="columns of file/hf: train and eval data (question, options, gold...)")
    seed: int = 0
    template: str = "blob"
    scoring: Literal["letter", "cloze"] = "cloze"
    normalize: Literal["sum", "mean", "char", "byte", "pmi"] = "sum"
    probe: str | None = Field(None, description="probe JSONL (calibtune probe) with known labels by item id")
    eval_probe: str | None = Field(None, description="probe JSONL of the held-out items: splits the curve into known/unknown")
    lora: LoraSettings | None = Field(default_factory=LoraSettings, description="null = full fine-tuning")
    objective: str = "ce"
    objective_params: dict[str, Any] = Field(default_factory=dict)
    known_source: Literal["none", "probe", "nll"] = "none"
    style_steps: int = Field(0, ge=0)
    refit_every: int = Field(20, ge=1)
    estep: Literal["epoch", "once"] = "epoch"
    sft_target: Literal["answer", "question+answer"] = "answer"
    question_weight: float = Field(1.0, ge=0)
    eval_every: int = Field(0, ge=0)
    qa_template: str = Field("qa", description="open questions: qa (SliCK's Q:/A:), chat, or a template file")
    max_new_tokens: int = Field(16, gt=0, description="open questions: answer length cap of the held-out curve")
    early_stopping: bool = Field(False, description="with eval_every: keep the best held-out-accuracy model in output_dir/best")
    training: dict[str, Any] = Field(default_factory=dict, description="any transformers TrainingArguments field")


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and validate a YAML config; ``overrides`` (CLI flags) win, ``training.*`` keys included."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    for key, value in (overrides or {}).items():
        if key.startswith("training."):
            raw.setdefault("training", {})[key.split(".", 1)[1]] = value
        else:
            raw[key] = value
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ValueError(f"{path}: {problems}") from None


def training_arguments(cfg: TrainConfig) -> CalibrationTrainingArguments:
    """The Trainer arguments of ``cfg`` (``training:`` keys checked against ``TrainingArguments``).

    ``device`` decides ``use_cpu`` (the Trainer puts each process on its own GPU); ``batch_size`` sets
    ``per_device_train_batch_size``, or ``auto_find_batch_size`` for ``"auto"``.
    """
    device = torch.device(resolve_device(cfg.device))
    if device.index:
        raise ValueError(f"device {cfg.device!r}: the Trainer places process i on GPU i; choose GPUs with "
                         "CUDA_VISIBLE_DEVICES and use device cuda")
    placed = {"use_cpu": (device.type == "cpu", "device")}
    if cfg.batch_size == "auto":
        placed["auto_find_batch_size"] = (True, "batch_size")
    elif cfg.batch_size is not None:
        placed["per_device_train_batch_size"] = (cfg.batch_size, "batch_size")
    for key, (value, source) in placed.items():
        if key in cfg.training and cfg.training[key] != value:
            raise ValueError(f"training.{key}: {cfg.training[key]!r} contradicts {source} {getattr(cfg, source)!r}")
    placed = {key: value for key, (value, _) in placed.items()}
    # checkpoints by default (every SAVE_STEPS steps, the newest two kept), so `--resume last` works after a crash
    kwargs = {"report_to": "none", "save_strategy": "steps", "save_steps": SAVE_STEPS, "save_total_limit": 2,
              "logging_steps": 10, "seed": cfg.seed, **placed, **cfg.training}
    if kwargs.get("bf16") and kwargs["use_cpu"] and cpu_has_native_bf16() is False:
        warnings.warn("bf16 autocast on a CPU without native bf16 (no avx512_bf16/amx_bf16) is emulated and "
                      "far slower than fp32: set training.bf16: false", stacklevel=2)
    try:
        args = CalibrationTrainingArguments(
            objective=cfg.objective, objective_params=cfg.objective_params, scoring=cfg.scoring,
            normalize=cfg.normalize, known_source=cfg.known_source, style_steps=cfg.style_steps,
            refit_every=cfg.refit_every, estep=cfg.estep, sft_target=cfg.sft_target,
            question_weight=cfg.question_weight, **kwargs)
    except TypeError as e:
        raise ValueError(f"training: {e}") from None
    _check_numbers(args)
    return args


SAVE_STEPS = 50


def _check_numbers(args: TrainingArguments) -> None:
    """The numbers ``TrainingArguments`` lets through that no run wants (a negative learning rate, NaN...)."""
    from . import checks

    for name in ("learning_rate", "weight_decay", "warmup_ratio", "max_grad_norm", "adam_epsilon", "num_train_epochs"):
        checks.at_least(f"training.{name}", getattr(args, name, None), 0)
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        checks.at_least(f"training.{name}", getattr(args, name, None), 1)
    checks.at_least("training.warmup_steps", getattr(args, "warmup_steps", None), 0)
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(f"training.max_steps must be a positive number of steps (or -1: use num_train_epochs), "
                         f"got {args.max_steps}")
    if args.max_steps == -1 and not args.num_train_epochs > 0:
        raise ValueError(f"training.num_train_epochs must be > 0 (or set max_steps), got {args.num_train_epochs}")
    if args.save_strategy == "steps":
        checks.at_least("training.save_steps", args.save_steps, 1e-12)


def prepare_output_dir(output_dir: str | Path, *, resume: str | bool | None, overwrite: bool) -> None:
    """``calibtune train``'s rule for ``output_dir``: a non-empty folder (an earlier run) is continued with
    ``resume`` or started over with ``overwrite`` (its old checkpoints are removed, so ``--resume last``
    never picks one up later), else refused: nothing an earlier run wrote is silently mixed or lost."""
    import shutil

    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the earlier run, or start over")
    folder = Path(output_dir)
    entries = [p for p in folder.iterdir() if not p.name.startswith(".calibtune-write-test-")] if folder.is_dir() else []
    if not entries or resume:
        return
    if not overwrite:
        raise FileExistsError(f"training.output_dir {folder}: is not empty (an earlier run?); pass --resume last "
                              "to continue it or --overwrite to start over")
    from .distributed import is_main_process

    if is_main_process():
        for old in folder.glob("checkpoint-*"):
            shutil.rmtree(old)


def check_train_config(cfg: TrainConfig, resume: str | bool | None = None) -> CalibrationTrainingArguments:
    """Everything about ``cfg`` that can be checked before data or a model are loaded; returns the Trainer
    arguments. Checks the Trainer arguments and their numbers, the objective and its parameters, the
    template and model names, the probe files, that ``output_dir`` is writable, and the checkpoint to
    resume (``True``: the newest in ``output_dir``)."""
    from . import checks
    from .models import resolve_model

    args = training_arguments(cfg)
    get_objective(cfg.objective, **cfg.objective_params)
    checks.template(cfg.template)
    resolve_model(cfg.model)
    for name in ("probe", "eval_probe"):
        path = getattr(cfg, name)
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{name}: {path}: no such file (write it with calibtune probe)")
    checks.writable_folder(args.output_dir, what="training.output_dir")
    if resume is True and last_checkpoint(args.output_dir) is None:
        raise FileNotFoundError(f"--resume last: {args.output_dir} has no checkpoint (one is saved every "
                                f"training.save_steps = {args.save_steps} steps)")
    if isinstance(resume, (str, Path)) and not (Path(resume) / "trainer_state.json").is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no trainer_state.json)")
    return args


def _known_labels(probe: str | Path) -> dict[str, bool]:
    """Known/unknown by item id from a ``calibtune probe`` JSONL."""
    from .probing import load_probe

    return {k: bool(v.known) for k, v in load_probe(probe).items()}


def select_ids(ds, ids: Sequence[str]):
    """The items of ``ds`` with these ids, in this order; an id that is missing or repeated is an error."""
    by_id = {it.id: it for it in ds.items}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise ValueError(f"train_ids: {len(missing)} ids are not in {ds.name} (first: {missing[0]!r})")
    if len(set(ids)) != len(ids):
        raise ValueError("train_ids: an id is listed twice")
    return dataclasses.replace(ds, items=tuple(by_id[i] for i in ids))


def run_training(cfg: TrainConfig, *, resume: str | bool | None = None, progress: bool = True,
                 keep_model: bool = False) -> dict[str, Any]:
    """Load model and data, train, save the adapter (or full model) and the curves into ``output_dir``."""
    from .data import load_dataset, takes_fields
    from .models import load_model
    from .open_eval import is_open
    from .open_training import check_open_training, open_trainer
    from .prompts import get_template

    args = check_train_config(cfg, resume)  # before any data or model is loaded
    args.disable_tqdm = not progress
    out = Path(args.output_dir)
    if cfg.fields and not any(takes_fields(s) for s in (cfg.train_data, cfg.eval_data) if s):
        raise ValueError(f"fields: {cfg.fields} map columns of file and hf: data, but train_data/eval_data are neither")
    data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    train = load_dataset(cfg.train_data, data_dir=cfg.data_dir, limit=cfg.train_limit, seed=data_seed,
                         fields=cfg.fields if takes_fields(cfg.train_data) else None)
    if cfg.train_ids is not None:
        train = select_ids(train, cfg.train_ids)
    held_out = (load_dataset(cfg.eval_data, data_dir=cfg.data_dir, limit=cfg.eval_limit, seed=data_seed,
                             fields=cfg.fields if takes_fields(cfg.eval_data) else None)
                if cfg.eval_data else None)
    known = None
    if cfg.probe:
        known = _known_labels(cfg.probe)
        missing = [it.id for it in train.items if it.id not in known]
        if cfg.known_source == "probe" and missing:
            raise ValueError(f"{cfg.probe}: no probe record for {len(missing)} training items (first: {missing[0]})")
    elif cfg.known_source != "none":
        raise ValueError(f"known_source={cfg.known_source!r} needs `probe:` labels (calibtune probe)")
    heldout_known = _known_labels(cfg.eval_probe) if cfg.eval_probe else None
    open_qa = is_open([train] + ([held_out] if held_out is not None else []))  # free-form answers
    if open_qa:
        check_open_training(cfg)
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=str(args.device),
                                  attn_implementation=cfg.attn_implementation)
    set_seed(cfg.seed)  # LoRA's random init must not depend on what ran before
    if cfg.lora is not None:
        model = lora_model(model, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout, targets=cfg.lora.targets)
    if open_qa:  # token-level objectives on the answer, held-out curve over generations
        trainer, curve = open_trainer(cfg, args, model, tokenizer, train.items, held_out.items if held_out else None,
                                      known=known, heldout_known=heldout_known, curve_path=out / "curve.csv")
    else:
        template = get_template(cfg.template, tokenizer)
        full_vocab = getattr(get_objective(cfg.objective, **cfg.objective_params), "needs_logprob_scores", False)
        dataset = build_dataset(train.items, tokenizer, template, cfg.scoring, known=known, full_vocab=full_vocab,
                                normalize=cfg.normalize, model=model)
        trainer = CalibrationTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        curve = None
        if held_out is not None and cfg.eval_every:
            curve = CalibrationCurveCallback(held_out.items, tokenizer, template, scoring=cfg.scoring,
                                             normalize=cfg.normalize, every=cfg.eval_every, known=heldout_known,
                                             curve_path=out / "curve.csv", trainer=trainer,
                                             batch_size=args.per_device_eval_batch_size, best_dir=out / "best" if cfg.early_stopping else None)
            trainer.add_callback(curve)
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(out))
    barrier()  # the main process saved it: every process may load it now
    summary = {"config": cfg.model_dump(), "train": result.metrics, "steps": trainer.state.global_step,
               "thresholds": trainer.threshold_history, "e_steps": trainer.estep_history,
               "curve": curve.curve if curve else [], "best": curve.best if curve else None}
    if trainer.is_world_process_zero():
        from .predictions import atomic_write

        with atomic_write(out / "training_summary.json") as fh:
            json.dump(summary, fh, indent=1)
    if keep_model:  # the caller evaluates the trained model in memory instead of reloading the adapter
        model.eval()
        return {**summary, "model": trainer.model, "tokenizer": tokenizer}
    return summary
