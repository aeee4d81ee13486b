"""Train the tiny model for a few steps; run alone or under `accelerate launch` (see test_training.py).

Usage: ddp_train.py MODEL_DIR OUT_DIR PER_DEVICE_BATCH
Each process writes OUT_DIR/rank{R}.json: world size, the batch sizes it saw, the final training loss.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_training import make_items  # noqa: E402

from calibtune.models import load_model  # noqa: E402
from calibtune.prompts import get_template  # noqa: E402
from calibtune.training import CalibrationTrainer, CalibrationTrainingArguments, build_dataset  # noqa: E402


def main() -> None:
    model_dir, out, per_device = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    model, tok = load_model(model_dir)
    model.train()
    ds = build_dataset(make_items(16), tok, get_template("blob"), "cloze")
    args = CalibrationTrainingArguments(output_dir=str(out), per_device_train_batch_size=per_device, max_steps=6,
                                        learning_rate=1e-2, lr_scheduler_type="constant", optim="sgd",
                                        report_to="none", save_strategy="no", logging_steps=1, seed=0, data_seed=0,
                                        use_cpu=True, disable_tqdm=True)
    trainer = CalibrationTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    sizes: list[int] = []
    original = trainer.compute_loss

    def counting(model, inputs, *a, **kw):
        sizes.append(int(inputs["labels"].shape[0]))
        return original(model, inputs, *a, **kw)

    trainer.compute_loss = counting
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    rank = trainer.args.process_index
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps({
        "world_size": trainer.args.world_size, "batch_sizes": sizes, "final_loss": losses[-1],
        "losses": losses, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
