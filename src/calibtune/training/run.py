"""``calibtune train``: load model and data, train, and save the adapter, the curves and the summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import set_seed

from ..distributed import barrier
from ..objectives import get_objective
from .callbacks import CalibrationCurveCallback
from .config import TrainConfig, check_train_config, load_weights_dtype
from .dataset import build_dataset, select_ids
from .trainer import CalibrationTrainer


def lora_model(model, *, r: int = 8, alpha: int = 16, dropout: float = 0.0, targets: str | list[str] = "all-linear"):
    """Wrap ``model`` with a PEFT LoRA adapter (``targets="all-linear"`` or a list of module names)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _known_labels(probe: str | Path) -> dict[str, bool]:
    """Known/unknown by item id from a ``calibtune probe`` JSONL."""
    from ..probing import load_probe

    return {k: bool(v.known) for k, v in load_probe(probe).items()}


def run_training(cfg: TrainConfig, *, resume: str | bool | None = None, progress: bool = True,
                 keep_model: bool = False) -> dict[str, Any]:
    """Load model and data, train, save the adapter (or full model) and the curves into ``output_dir``."""
    from ..data import load_dataset, takes_fields
    from ..models import load_model
    from ..open_eval import is_open
    from ..prompts import get_template
    from .open import check_open_training, open_trainer

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
    model, tokenizer = load_model(cfg.model, dtype=load_weights_dtype(cfg), device=str(args.device),
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
        from ..io import atomic_write

        with atomic_write(out / "training_summary.json") as fh:
            json.dump(summary, fh, indent=1)
    if keep_model:  # the caller evaluates the trained model in memory instead of reloading the adapter
        # without Accelerate's mixed-precision wrapper: under training.bf16 it runs every later forward in bf16
        # autocast, so the kept model would score differently from the saved adapter reloaded (as ``ts`` does)
        kept = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        kept.eval()
        return {**summary, "model": kept, "tokenizer": tokenizer}
    return summary
