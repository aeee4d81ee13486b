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

from ..devices import cpu_has_native_bf16
from .arguments import KNOWN_SOURCES, SFT_TARGETS, CalibrationTrainingArguments
from .callbacks import CalibrationCurveCallback, _EStep
from .checkpoints import STATE_FILE, last_checkpoint
from .config import (
    SAVE_STEPS,
    LoraSettings,
    TrainConfig,
    _check_numbers,
    check_train_config,
    load_train_config,
    prepare_output_dir,
    training_arguments,
)
from .dataset import MCCollator, MCTrainDataset, build_dataset, select_ids
from .run import _known_labels, lora_model, run_training
from .trainer import _EXTRA_KEYS, CalibrationTrainer, NonFiniteLossError, prompt_nll

__all__ = [
    "KNOWN_SOURCES", "SAVE_STEPS", "SFT_TARGETS", "STATE_FILE", "_EXTRA_KEYS", "CalibrationCurveCallback",
    "CalibrationTrainer", "CalibrationTrainingArguments", "LoraSettings", "MCCollator", "MCTrainDataset",
    "NonFiniteLossError", "TrainConfig", "_EStep", "_check_numbers", "_known_labels", "build_dataset",
    "check_train_config", "cpu_has_native_bf16", "last_checkpoint", "load_train_config", "lora_model",
    "prepare_output_dir", "prompt_nll", "run_training", "select_ids", "training_arguments",
]
