"""CogCalib inside TRL: an ``SFTTrainer`` subclass whose ``compute_loss`` is a CogCalib objective on option scores.

``SFTTrainer`` trains the language-model loss of whole texts; here each batch holds multiple-choice
items instead, scored by calibtune's cloze scorer (the log-likelihood of every answer option), and the
loss is CogCalib: cross-entropy on the gold option for every item, plus α times a calibration term
(label smoothing: CoLS; ``--regularizer mbls``/``ecp``: CoMbLS/CoECP) on the items the base model
already knows. "Known" comes from ``calibtune probe`` labels (``--probe``), or else from the item's NLL
under the model being trained (``NLL <= --known-nll``; ``calibtune train`` re-fits that threshold by
Youden's J, see ``calibtune.training.CalibrationTrainer``). The held-out curve goes to ``report_to``.

    calibtune probe --model smollm2 --data openbookqa:train --limit 200 --out probe.jsonl
    python examples/trl_cogcalib.py --model smollm2 --train openbookqa:train --heldout openbookqa:dev \\
        --limit 200 --probe probe.jsonl --out runs/trl-cogcalib --max-steps 20

Needs ``pip install 'calibtune[trl,hub]'`` (trl 1.16.0 and datasets 5.2.0, tested with transformers 5.23.0).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import torch
from transformers import Trainer
from trl import SFTConfig, SFTTrainer

from calibtune.data import load_dataset
from calibtune.models import load_model
from calibtune.objectives import get_objective, per_sample_nll
from calibtune.probing import load_probe
from calibtune.prompts import get_template
from calibtune.scoring import ClozeScorer, Encoded
from calibtune.training import CalibrationCurveCallback, MCCollator, MCTrainDataset, build_dataset, lora_model


def as_hf_dataset(train: MCTrainDataset) -> datasets.Dataset:
    """calibtune's tokenised items as a ``datasets.Dataset`` (``SFTTrainer`` takes no other kind): one row per
    item with the fields of its :class:`~calibtune.scoring.Encoded`, its gold option and its probe label."""
    return datasets.Dataset.from_list([{**{f.name: getattr(e, f.name) for f in dataclasses.fields(e)},
                                        "labels": y, "known": k}
                                       for e, y, k in zip(train.encoded, train.labels, train.known)])


@dataclass
class RowsCollator(MCCollator):
    """:class:`~calibtune.training.MCCollator` over rows of :func:`as_hf_dataset`."""

    def __call__(self, features):
        names = [f.name for f in dataclasses.fields(Encoded)]
        return super().__call__([{"encoded": Encoded(**{n: f[n] for n in names}), "labels": f["labels"],
                                  "known": f["known"]} for f in features])


class CogCalibSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with the loss replaced: CogCalib on the distribution over each item's answer options."""

    def __init__(self, *args, scorer: ClozeScorer, objective, known_nll: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scorer, self.objective, self.known_nll = scorer, objective, known_nll

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        labels, probe_known = inputs.pop("labels"), inputs.pop("known")
        scores = self.scorer.forward(model, inputs)  # (B, K_max) option log-likelihoods
        nll = per_sample_nll(scores, labels).detach()
        # probe labels where the item has one (1/0), else the online NLL rule (-1 = no probe label)
        known = torch.where(probe_known >= 0, probe_known == 1, nll <= self.known_nll)
        loss = self.objective(scores, labels, known=known).mean()
        return (loss, {"scores": scores}) if return_outputs else loss


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--train", default="openbookqa:train")
    ap.add_argument("--heldout", default="openbookqa:dev")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--probe", default=None, help="calibtune probe JSONL of the training items (known labels)")
    ap.add_argument("--known-nll", type=float, default=0.7, help="without a probe label: known when NLL <= this")
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--regularizer", default="ls", choices=["ls", "mbls", "ecp"])
    ap.add_argument("--max-steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--report-to", default="tensorboard")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (GPUs, CPUs with AVX512-BF16/AMX)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> tuple[Trainer, CalibrationCurveCallback]:
    args = parse_args(argv)
    model, tokenizer = load_model(args.model)
    model = lora_model(model, r=8, alpha=16)
    template = get_template("blob", tokenizer)
    train = load_dataset(args.train, limit=args.limit)
    held_out = load_dataset(args.heldout, limit=args.limit)
    known = {i: bool(r.known) for i, r in load_probe(args.probe).items()} if args.probe else None
    scorer = ClozeScorer(normalize="mean")
    config = SFTConfig(
        output_dir=args.out, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=5e-4, logging_steps=1, save_strategy="no", report_to=args.report_to, seed=0,
        use_cpu=not torch.cuda.is_available(),
        bf16=args.bf16,  # SFTConfig's default is bf16 on; emulated (slow, and less exact) on CPUs without native bf16
        dataset_kwargs={"skip_prepare_dataset": True},  # the items are tokenised by calibtune, not as chat text
        remove_unused_columns=False)
    trainer = CogCalibSFTTrainer(
        model=model, args=config, processing_class=tokenizer, data_collator=RowsCollator(scorer),
        train_dataset=as_hf_dataset(build_dataset(train.items, tokenizer, template, "cloze", known=known,
                                                  normalize="mean")),
        scorer=scorer, objective=get_objective("cogcalib", alpha=args.alpha, regularizer=args.regularizer),
        known_nll=args.known_nll)
    curve = CalibrationCurveCallback(held_out.items, tokenizer, template, scoring="cloze", normalize="mean",
                                     every=args.eval_every, trainer=trainer, curve_path=f"{args.out}/curve.csv")
    trainer.add_callback(curve)
    trainer.train()
    for row in curve.curve:
        print(", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return trainer, curve


if __name__ == "__main__":
    main()
