"""A calibtune training step against a plain ``transformers.Trainer`` step on the same batches.

Usage: HF_HUB_OFFLINE=1 CALIBTUNE_DATA_DIR=/work/shared/data \
       .venv/bin/python benchmarks/bench_step.py [--steps 6] [--items 48] [--bf16]

The embedded SmolLM2-135M-Instruct, LoRA r 8 on all linear layers, batch 8 ARC-Easy train items
(seed 0, ``blob`` template, cloze per-token mean), AdamW lr 5e-4, no checkpoints, no logging. Per
variant a fresh model is trained ``--steps`` steps after one warm-up step; the median step time is
reported. Variants, each through ``Trainer.train``:

* ``trainer-sft``: a plain ``Trainer`` on ``prompt + gold option`` rows, labels ``-100`` except the
  gold option's tokens (transformers' own causal-LM loss) — the plain SFT step on the same items;
* ``calibtune-ce``: ``CalibrationTrainer`` with CE on the option distribution (all K options, packed);
* ``calibtune-cogcalib``: CoLS with the online NLL indicator (refit every step: the worst case);
* ``calibtune-rcft``: RCFT with its E-step over the training set every epoch, amortised: the epoch is
  the ``--items`` items, so the E-step's cost is spread over ``items / 8`` steps;
* ``calibtune-ce-attn``: CE with LoRA on the attention projections only (``lora.targets: [q_proj,
  k_proj, v_proj, o_proj]``) instead of every linear layer — the same objective, fewer trained modules;
* ``calibtune-ce-compile``: CE with ``torch_compile: true`` (the Trainer compiles the model with
  inductor; the warm-up step holds the compilation and is not timed).

``--variants`` picks which run (default: all), in the order given.

Prints a Markdown table with the ratios to ``trainer-sft``, the CPU flags and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments


class StepTimer(TrainerCallback):
    """Wall time of every optimiser step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t0)


VARIANTS = ("trainer-sft", "calibtune-ce", "calibtune-cogcalib", "calibtune-rcft", "calibtune-ce-attn",
            "calibtune-ce-compile")
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()

    from calibtune.data import load_dataset
    from calibtune.models import load_model
    from calibtune.prompts import build_requests, get_template
    from calibtune.training import CalibrationTrainer, CalibrationTrainingArguments, build_dataset, lora_model

    items = load_dataset("arc-easy:train", limit=args.items, seed=0).items
    common = dict(output_dir="/tmp/bench_step", per_device_train_batch_size=8, learning_rate=5e-4,
                  max_steps=args.steps + 1, save_strategy="no", report_to="none", logging_strategy="no",
                  use_cpu=True, bf16=args.bf16, disable_tqdm=True, seed=0)

    def run(kind: str) -> list[float]:
        model, tok = load_model("smollm2")
        model = lora_model(model, targets=ATTENTION if kind == "calibtune-ce-attn" else "all-linear")
        timer = StepTimer()
        template = get_template("blob", tok)
        if kind == "trainer-sft":
            reqs = build_requests(items, template, "cloze")
            rows = []
            for r, it in zip(reqs, items):
                prompt = tok(r.prompt)["input_ids"]
                full = tok(r.prompt + r.choices[it.gold])["input_ids"]
                rows.append({"input_ids": full, "labels": [-100] * len(prompt) + full[len(prompt):]})

            def collate(batch):
                width = max(len(b["input_ids"]) for b in batch)
                pad = tok.pad_token_id
                ids = torch.tensor([[pad] * (width - len(b["input_ids"])) + b["input_ids"] for b in batch])
                labels = torch.tensor([[-100] * (width - len(b["labels"])) + b["labels"] for b in batch])
                mask = torch.tensor([[0] * (width - len(b["input_ids"])) + [1] * len(b["input_ids"]) for b in batch])
                return {"input_ids": ids, "labels": labels, "attention_mask": mask}

            trainer = Trainer(model=model, args=TrainingArguments(**common, remove_unused_columns=False),
                              train_dataset=rows, data_collator=collate, callbacks=[timer])
        else:
            objective = {"calibtune-cogcalib": ("cogcalib", {"alpha": 0.15}), "calibtune-rcft": ("rcft", {})}.get(
                kind, ("ce", {}))
            extra = {"known_source": "nll", "refit_every": 1} if kind == "calibtune-cogcalib" else {}
            targs = CalibrationTrainingArguments(**common, objective=objective[0], objective_params=objective[1],
                                                 scoring="cloze", normalize="mean",
                                                 torch_compile=kind == "calibtune-ce-compile", **extra)
            known = {it.id: i % 2 == 0 for i, it in enumerate(items)} if extra else None
            dataset = build_dataset(items, tok, template, "cloze", known=known, normalize="mean")
            trainer = CalibrationTrainer(model=model, args=targs, train_dataset=dataset, processing_class=tok,
                                         callbacks=[timer])
        t0 = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - t0
        steps = timer.times[1:]  # the first step warms up
        return steps, total

    results = {}
    for kind in args.variants:
        steps, total = run(kind)
        results[kind] = (statistics.median(steps), total)
        print(f"{kind}: median step {results[kind][0]:.2f} s, train() {total:.1f} s", flush=True)
    flags = open("/proc/cpuinfo").read()
    print(f"\n{os.cpu_count()} cores, avx2={'avx2' in flags}, avx512_bf16={'avx512_bf16' in flags}, "
          f"bf16 autocast={args.bf16}, load average {os.getloadavg()}")
    ref = results[args.variants[0]][0]
    print(f"| step | median (s) | × {args.variants[0]} step | train() incl. E-step (s) |\n|---|---|---|---|")
    for kind, (median, total) in results.items():
        print(f"| {kind} | {median:.2f} | {median / ref:.2f}× | {total:.1f} |")


if __name__ == "__main__":
    main()
