"""calibtune's pieces in your own transformers ``Trainer``: the option scorer, an objective, the held-out curve.

The loss of this plain ``Trainer`` subclass is a calibtune objective (label smoothing by default) on the
distribution over each question's answer options, computed by the same cloze scorer that
``calibtune eval`` uses; ``CalibrationCurveCallback`` measures held-out accuracy, ECE, confidence and NLL
every few steps and logs them to the Trainer's ``report_to`` trackers (TensorBoard here).

    python examples/custom_trainer.py --model smollm2 --train openbookqa:train --heldout openbookqa:dev \\
        --limit 200 --out runs/custom-trainer --max-steps 20 --report-to tensorboard
    tensorboard --logdir runs/custom-trainer/runs     # train/heldout_ece, train/heldout_accuracy, ...

``calibtune.training.CalibrationTrainer`` is the complete version of this (gradient accumulation counted
in items, CogCalib's online known indicator, RCFT's E-step); this file shows the minimum.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch
from transformers import Trainer, TrainingArguments

from calibtune.data import load_dataset
from calibtune.models import load_model
from calibtune.objectives import get_objective
from calibtune.prompts import get_template
from calibtune.scoring import ClozeScorer
from calibtune.training import CalibrationCurveCallback, MCCollator, build_dataset, lora_model


class OptionLossTrainer(Trainer):
    """A ``Trainer`` whose loss is ``objective(option scores, gold option)``, averaged over the batch."""

    def __init__(self, *args, scorer: ClozeScorer, objective, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scorer, self.objective = scorer, objective

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        inputs.pop("known")  # probe labels (unused by objectives that do not need them)
        scores = self.scorer.forward(model, inputs)  # (B, K_max) option log-likelihoods, -inf where no option
        loss = self.objective(scores, labels).mean()
        return (loss, {"scores": scores}) if return_outputs else loss


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", help="calibtune model: alias, HF folder or .gguf")
    ap.add_argument("--train", default="openbookqa:train", help="calibtune data spec of the training items")
    ap.add_argument("--heldout", default="openbookqa:dev", help="data spec of the held-out curve's items")
    ap.add_argument("--limit", type=int, default=None, help="seeded subset of this many items per split")
    ap.add_argument("--out", required=True, help="Trainer output_dir")
    ap.add_argument("--objective", default="ls", help="calibtune objective: ce, ls, mbls, ecp, focal, ...")
    ap.add_argument("--objective-params", default='{"epsilon": 0.1}', help="its hyper-parameters as JSON")
    ap.add_argument("--normalize", default="mean", help="cloze: sum or per-token mean log-likelihood")
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--report-to", default="tensorboard", help="Trainer trackers: tensorboard, wandb, none, ...")
    ap.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> tuple[Trainer, CalibrationCurveCallback]:
    args = parse_args(argv)
    model, tokenizer = load_model(args.model)
    if args.lora:
        model = lora_model(model, r=8, alpha=16)
    template = get_template("blob", tokenizer)
    train = load_dataset(args.train, limit=args.limit)
    held_out = load_dataset(args.heldout, limit=args.limit)
    scorer = ClozeScorer(normalize=args.normalize)
    objective = get_objective(args.objective, **json.loads(args.objective_params))

    training_args = TrainingArguments(
        output_dir=args.out, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=5e-4, logging_steps=1, save_strategy="no", report_to=args.report_to,
        remove_unused_columns=False,  # the batches carry option targets the model's forward never sees
        use_cpu=not torch.cuda.is_available(), seed=0)
    trainer = OptionLossTrainer(
        model=model, args=training_args, scorer=scorer, objective=objective,
        train_dataset=build_dataset(train.items, tokenizer, template, "cloze", normalize=args.normalize),
        data_collator=MCCollator(scorer), processing_class=tokenizer)
    curve = CalibrationCurveCallback(held_out.items, tokenizer, template, scoring="cloze", normalize=args.normalize,
                                     every=args.eval_every, trainer=trainer, curve_path=f"{args.out}/curve.csv")
    trainer.add_callback(curve)
    trainer.train()
    for row in curve.curve:
        print(", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return trainer, curve


if __name__ == "__main__":
    main()
