"""Evaluation throughput with 2 processes (``accelerate launch -m calibtune eval``) vs 1, on this machine.

Both runs score the same ARC-Easy test questions with the embedded SmolLM2 on the CPU, one after the
other in this one invocation: 1 process with 2 torch threads, then 2 processes (gloo) with 1 thread each,
so both use the same 2 cores. Reported: wall time of each command (start-up and model load included),
the scoring time and items/s from ``metrics.json`` (with 2 processes, the main process's time, which
includes waiting for the other shard), the largest probability difference between the two runs, and the
load average before and after (``uptime``): figures taken while other jobs run are not comparable.

Usage: HF_HUB_OFFLINE=1 CALIBTUNE_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/bench_dp_eval.py --limit 48
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


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=48)
    parser.add_argument("--scoring", default="cloze")
    parser.add_argument("--batch-size", default="8")
    parser.add_argument("--port", type=int, default=29591)
    args = parser.parse_args()
    before = uptime()
    with tempfile.TemporaryDirectory(prefix="bench-dp-") as tmp:
        common = ["eval", "--model", "smollm2", "--data", "arc-easy:test", "--limit", str(args.limit), "--scoring",
                  args.scoring, "--batch-size", args.batch_size, "--device", "cpu", "--no-progress"]
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                  "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                  "--main_process_port", str(args.port)]
        wall = {1: run([sys.executable, "-m", "calibtune", *common, "--out", f"{tmp}/one"], threads=2),
                2: run([*launch, "-m", "calibtune", *common, "--out", f"{tmp}/two"], threads=1)}
        metrics = {n: json.loads(Path(f"{tmp}/{name}/metrics.json").read_text()) for n, name in ((1, "one"), (2, "two"))}
        preds = {n: [json.loads(x) for x in Path(f"{tmp}/{name}/predictions.jsonl").read_text().splitlines()]
                 for n, name in ((1, "one"), (2, "two"))}
    after = uptime()
    dp = max(abs(a - b) for r1, r2 in zip(preds[1], preds[2]) for a, b in zip(r1["probs"], r2["probs"]))
    print(f"before: {before}\nafter:  {after}")
    print(f"\n{args.limit} ARC-Easy test questions, SmolLM2-135M fp32, {args.scoring}, batch {args.batch_size}\n")
    print("| processes | threads each | wall (s) | scoring (s) | questions/s (scoring) | model load (s) |")
    print("|---|---|---|---|---|---|")
    for n in (1, 2):
        result = next(iter(metrics[n]["results"].values()))
        print(f"| {n} | {2 // n} | {wall[n]:.1f} | {result['seconds']:.2f} | {result['items_per_second']:.2f} | "
              f"{metrics[n]['model_load_seconds']:.2f} |")
    print(f"\nmax |Δp| between the runs: {dp:.2e}; processes recorded: {metrics[1]['processes']}, "
          f"{metrics[2]['processes']}")


if __name__ == "__main__":
    main()
