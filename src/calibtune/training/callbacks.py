"""Trainer callbacks: RCFT's E-step before each epoch, and the held-out calibration curve."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import Trainer, TrainerCallback

from ..data import MCItem
from ..distributed import score_sharded
from ..evaluation import curve_figures, predictions_rows
from ..prompts import Template, build_requests

if TYPE_CHECKING:
    from .trainer import CalibrationTrainer


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
        """The held-out figures for ``model`` now (scored and summarised by :mod:`calibtune.evaluation`)."""
        was_training = model.training
        model.eval()
        logprobs = score_sharded(model, self.tokenizer, self.requests, scoring=self.scoring,
                                 batch_size=self.batch_size, normalize=self.normalize, progress=False)
        if was_training:
            model.train()
        rows = predictions_rows(self.prefix, self.scoring, self.items, logprobs)
        return curve_figures(rows, known=self.known, n_bins=self.n_bins, prefix=self.prefix)

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
        from ..io import atomic_write

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
