"""``CalibrationTrainer``: a ``Trainer`` whose loss is an objective on the option distribution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer

from ..devices import fit_scorer_to_model
from ..distributed import gather_in_order, shard_indices
from ..objectives import get_objective, per_sample_nll, youden_threshold
from ..scoring import NonFiniteLogitsError, make_scorer
from .arguments import CalibrationTrainingArguments
from .callbacks import _EStep
from .checkpoints import STATE_FILE, last_checkpoint
from .dataset import MCCollator

_EXTRA_KEYS = ("labels", "known", "context_input_ids", "context_attention_mask")  # not the scorer's


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; training stopped at that step."""


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

        from ..io import atomic_write

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
        from ..objectives.rcft import e_step

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
