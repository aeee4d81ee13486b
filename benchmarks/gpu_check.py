"""The measurements behind ``benchmarks/gpu_check.sh``: eval throughput, a LoRA step, a small compare grid.

``--mode gpu`` (one CUDA GPU, bf16, batch 64): letter and cloze throughput of SmolLM2-135M and Gemma3-270M
on 512 ARC-Easy test questions (synthetic ones of the same shape when the data is not there), the time
of a LoRA training step, and the wall time of a 3-method compare grid (base, sft, ts × 1 task × 1 seed).
``--mode cpu-smoke``: the same code on the tiny random test model (tests/conftest.py, built on the fly) on the CPU, in
fp32 and a few items, so the script is exercised by the test suite. Figures go to ``--out`` (JSON).
A model that cannot be loaded (its package missing) is recorded with its error; the rest still runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {
    "gpu": {"device": "cuda", "dtype": "bfloat16", "batch_size": 64, "n_eval": 512, "n_warmup": 64,
            "models": ["smollm2", "gemma3-270m"], "train_model": "smollm2", "train_batch": 16, "train_steps": 10,
            "grid": {"train_limit": 128, "heldout_limit": 64, "test_limit": 256, "max_steps": 20}, "bf16": True},
    "cpu-smoke": {"device": "cpu", "dtype": "float32", "batch_size": 64, "n_eval": 24, "n_warmup": 4,
                  "models": ["tiny"], "train_model": "tiny", "train_batch": 4, "train_steps": 3,
                  "grid": {"train_limit": 8, "heldout_limit": 8, "test_limit": 8, "max_steps": 2}, "bf16": False},
}
WORDS = ["Paris", "Berlin", "Madrid", "Rome", "London", "Lisbon", "Vienna", "Oslo", "red", "green", "blue",
         "water", "fire", "stone", "cat", "dog", "bird", "fish"]


def tiny_model(folder: Path) -> str:
    """The tiny random Llama and BPE tokenizer of the test suite, saved to ``folder``."""
    spec = importlib.util.spec_from_file_location("calibtune_test_conftest", ROOT / "tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    conftest.tiny_llama().save_pretrained(folder)
    conftest.build_tokenizer().save_pretrained(folder)
    return str(folder)


def synthetic_items(path: Path, n: int, offset: int = 0) -> str:
    """``n`` four-option questions of ARC's shape, in words every test tokenizer knows."""
    rows = []
    for i in range(offset, offset + n):
        question = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(8 + i % 12))
        rows.append({"id": f"s{i}", "question": f"Which of these is the {question}?",
                     "options": [WORDS[(3 * i + j) % len(WORDS)] for j in range(4)], "answer": i % 4})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def data_specs(mode: str, work: Path, cfg: dict) -> dict[str, str]:
    """Train / held-out / test specs: ARC-Easy when its files are there (and not smoke), else synthetic files."""
    data_dir = Path(os.environ.get("CALIBTUNE_DATA_DIR", ROOT.parent / "shared" / "data"))
    if mode == "gpu" and (data_dir / "arc" / "arc_easy").is_dir():
        return {"train": "arc-easy:train", "heldout": "arc-easy:dev", "test": "arc-easy:test", "source": "ARC-Easy"}
    n = max(cfg["n_eval"], cfg["grid"]["test_limit"])
    n_train = max(cfg["grid"]["train_limit"], cfg["train_batch"] * cfg["train_steps"])
    return {"train": synthetic_items(work / "train.jsonl", n_train, offset=10_000),
            "heldout": synthetic_items(work / "heldout.jsonl", cfg["grid"]["heldout_limit"], offset=20_000),
            "test": synthetic_items(work / "test.jsonl", n), "source": "synthetic (ARC-shaped)"}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def eval_throughput(label: str, model_name: str, cfg: dict, specs: dict) -> list[dict[str, Any]]:
    """Letter and cloze items/s at ``batch_size`` after a warm-up, one row per scoring."""
    from calibtune.data import load_dataset
    from calibtune.distributed import score_sharded
    from calibtune.models import load_model
    from calibtune.prompts import build_requests, get_template

    t0 = time.perf_counter()
    model, tok = load_model(model_name, dtype=cfg["dtype"], device=cfg["device"], attn_implementation="sdpa")
    load = time.perf_counter() - t0
    items = load_dataset(specs["test"], limit=cfg["n_eval"], seed=0).items
    rows = []
    for scoring in ("letter", "cloze"):
        requests = build_requests(items, get_template("blob", tok), scoring)
        score_sharded(model, tok, requests[: cfg["n_warmup"]], scoring=scoring, batch_size=cfg["batch_size"],
                      progress=False)
        if cfg["device"].startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        sync(cfg["device"])
        t1 = time.perf_counter()
        score_sharded(model, tok, requests, scoring=scoring, batch_size=cfg["batch_size"], progress=False)
        sync(cfg["device"])
        seconds = time.perf_counter() - t1
        rows.append({"model": label, "scoring": scoring, "n": len(requests), "batch_size": cfg["batch_size"],
                     "dtype": cfg["dtype"], "seconds": round(seconds, 3),
                     "items_per_second": round(len(requests) / seconds, 1), "load_seconds": round(load, 2),
                     "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                     if cfg["device"].startswith("cuda") else None})
    del model
    return rows


class StepTimer(TrainerCallback):
    """Wall time of every optimiser step (synchronised on a GPU)."""

    def __init__(self, device: str) -> None:
        self.device, self.times, self._start = device, [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        sync(self.device)
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        self.times.append(time.perf_counter() - self._start)


def lora_step(label: str, model_name: str, cfg: dict, specs: dict, work: Path) -> dict[str, Any]:
    """Median seconds of a LoRA (r 8, all linear layers) cloze CE step, first step (warm-up) left out."""
    from calibtune.data import load_dataset
    from calibtune.models import load_model
    from calibtune.prompts import get_template
    from calibtune.training import CalibrationTrainer, CalibrationTrainingArguments, build_dataset, lora_model

    model, tok = load_model(model_name, dtype="float32", device=cfg["device"])
    model.train()
    model = lora_model(model, r=8, alpha=16)
    n = cfg["train_batch"] * cfg["train_steps"]
    items = load_dataset(specs["train"], limit=n, seed=0).items
    ds = build_dataset(items, tok, get_template("blob", tok), "cloze")
    args = CalibrationTrainingArguments(output_dir=str(work / "lora"), per_device_train_batch_size=cfg["train_batch"],
                                        max_steps=cfg["train_steps"], learning_rate=1e-4, report_to="none",
                                        save_strategy="no", logging_steps=cfg["train_steps"], disable_tqdm=True,
                                        use_cpu=cfg["device"] == "cpu", bf16=cfg["bf16"])
    timer = StepTimer(cfg["device"])
    trainer = CalibrationTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[timer])
    trainer.train()
    steady = timer.times[1:] or timer.times
    return {"model": label, "lora_r": 8, "batch_size": cfg["train_batch"], "scoring": "cloze",
            "autocast_bf16": cfg["bf16"], "steps": len(timer.times), "first_step_seconds": round(timer.times[0], 3),
            "median_step_seconds": round(statistics.median(steady), 3)}


def compare_grid(label: str, model_name: str, cfg: dict, specs: dict, work: Path) -> dict[str, Any]:
    """Wall time of ``calibtune compare`` over base, sft and ts on one task and one seed."""
    from calibtune.grid import load_compare_config, run_compare

    grid = cfg["grid"]
    config = {
        "name": "gpu-check", "model": model_name, "dtype": cfg["dtype"], "device": cfg["device"],
        "batch_size": cfg["batch_size"], "out": str(work / "grid"), "probe": None,
        "train": {"lora": {"r": 8, "alpha": 16},
                  "training": {"per_device_train_batch_size": cfg["train_batch"], "max_steps": grid["max_steps"],
                               "learning_rate": 1e-4, "bf16": cfg["bf16"]}},
        "tasks": [{"name": "arc", "train": specs["train"], "train_limit": grid["train_limit"],
                   "heldout": specs["heldout"], "heldout_limit": grid["heldout_limit"], "test": [specs["test"]],
                   "test_limit": grid["test_limit"], "seeds": [0]}],
        "methods": [{"name": "base"}, {"name": "sft", "objective": "ce"}, {"name": "ts", "temperature_of": "sft"}],
    }
    path = work / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    t0 = time.perf_counter()
    summary = run_compare(load_compare_config(path), progress=False)
    seconds = time.perf_counter() - t0
    cells = [json.loads(p.read_text()) for p in sorted((work / "grid").glob("*/seed*/*/cell.json"))]
    return {"model": label, "methods": [c["method"] for c in cells], "seconds": round(seconds, 2),
            "train_steps": grid["max_steps"], "test_items": grid["test_limit"], "summary_rows": len(
                summary.read_text().splitlines()) - 1}


def machine(cfg: dict) -> dict[str, Any]:
    import calibtune

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "calibtune": calibtune.__version__, "cpu_threads": torch.get_num_threads()}
    if cfg["device"].startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def main() -> None:
    from calibtune.predictions import atomic_write

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(SETTINGS), default="gpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    cfg = SETTINGS[args.mode]
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device is visible to this torch "
                 f"({torch.__version__}, CUDA {torch.version.cuda}); use --cpu-smoke on a CPU")
    t0 = time.perf_counter()
    report: dict[str, Any] = {"mode": args.mode, "settings": cfg, "machine": machine(cfg), "eval": [],
                              "errors": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        specs = data_specs(args.mode, work, cfg)
        report["data"] = specs["source"]
        sources = {m: tiny_model(work / "tiny") if m == "tiny" else m for m in {*cfg["models"], cfg["train_model"]}}
        for model in cfg["models"]:
            try:
                report["eval"] += eval_throughput(model, sources[model], cfg, specs)
            except (ImportError, OSError, ValueError) as e:  # e.g. the model's package is not installed
                report["errors"][model] = f"{type(e).__name__}: {e}"
            print(json.dumps(report["eval"][-2:] if model not in report["errors"] else report["errors"]), flush=True)
        trained = cfg["train_model"]
        report["lora_step"] = lora_step(trained, sources[trained], cfg, specs, work)
        print(json.dumps(report["lora_step"]), flush=True)
        report["compare"] = compare_grid(trained, sources[trained], cfg, specs, work)
        print(json.dumps(report["compare"]), flush=True)
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as fh:
        json.dump(report, fh, indent=1)
    print(f"wrote {args.out} ({report['total_seconds']} s)")


if __name__ == "__main__":
    main()
