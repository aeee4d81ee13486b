"""One small study grid (the CogCalib cell with probe labels, 2 seeds) before and after issue 11's changes.

"Before" is a git revision (default ``90259c2``, the last commit before shared-prefix probing and the
one-load grid cell); it is checked out into a temporary worktree and run with its own source on
``PYTHONPATH``, in the same venv. "After" is this checkout. Each side runs ``calibtune compare`` in a
fresh process on a fresh probe cache (the converted-model cache is shared, so no side converts the
GGUF), and the whole command is timed: probing, training, held-out curves, evaluation, model loads.

The grid is the study's shape at a small size: ARC-Easy, 64 training items, a held-out curve every
4 steps on 48 items, 8 LoRA steps (batch 8, bf16 autocast where the CPU has it), 100 test items,
method ``cols`` (CoLS, probe labels: the training set is probed), seeds 0 and 1. The after-config
adds ``data_seed: 0`` (every seed trains on the same items, as ``experiments/study.yaml`` does), which
the before-revision does not know: there each seed draws, and probes, its own 64 items.

    HF_HUB_OFFLINE=1 CALIBTUNE_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_grid_cell.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _config(out: Path, *, data_seed: bool, bf16: bool) -> dict:
    task = {"name": "arc-easy", "train": "arc-easy:train", "train_limit": 64, "heldout": "arc-easy:dev",
            "heldout_limit": 48, "test": ["arc-easy:test"], "test_limit": 100, "seeds": [0, 1]}
    if data_seed:
        task["data_seed"] = 0
    return {"name": "bench", "model": "smollm2", "dtype": "float32", "scoring": "cloze", "normalize": "mean",
            "template": "blob", "out": str(out), "probe": {"n_prompts": 4, "shots": 2, "known_rule": "majority"},
            "train": {"eval_every": 4, "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
                      "training": {"per_device_train_batch_size": 8, "max_steps": 8, "learning_rate": 5e-4,
                                   "warmup_steps": 1, "bf16": bf16, "save_strategy": "no", "logging_steps": 4}},
            "tasks": [task],
            "methods": [{"name": "cols", "objective": "cogcalib", "objective_params": {"alpha": 0.15},
                         "known_source": "probe"}],
            "baselines": ["cols"]}


def _run(src: Path, config: Path, cache: Path) -> float:
    models = Path.home() / ".cache" / "calibtune" / "models"
    cache.mkdir(parents=True)
    if models.is_dir():
        (cache / "models").symlink_to(models)
    env = {**os.environ, "PYTHONPATH": str(src), "CALIBTUNE_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "calibtune.cli", "compare", "--config", str(config),
                           "--no-progress", "--bootstrap", "10"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"compare failed under {src}:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="90259c2")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    bf16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text() or "amx_bf16" in Path("/proc/cpuinfo").read_text()
    work = Path(tempfile.mkdtemp(prefix="bench-grid-"))
    tree = work / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), args.before],
                   check=True, capture_output=True)
    try:
        seconds, cells = {}, {}
        for side, src, data_seed in (("before", tree / "src", False), ("after", ROOT / "src", True)):
            config = work / f"{side}.yaml"
            config.write_text(yaml.safe_dump(_config(work / f"{side}-out", data_seed=data_seed, bf16=bf16)))
            seconds[side] = _run(src, config, work / f"{side}-cache")
            cells[side] = sorted(str(p.relative_to(work)) for p in (work / f"{side}-out").glob("*/seed*/*/cell.json"))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    figures = {"before_revision": args.before, "seconds": seconds, "speedup": seconds["before"] / seconds["after"],
               "cells": cells, "bf16": bf16, "load": os.getloadavg()}
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
