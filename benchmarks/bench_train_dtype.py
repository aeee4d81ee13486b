"""One LoRA training step of the embedded model in fp32 vs bf16 autocast on the CPU.

Usage: .venv/bin/python benchmarks/bench_train_dtype.py [--threads 2] [--steps 2] [--dtypes fp32 bf16]
Batch 8 x 128 random tokens, LoRA r=8 on all linear layers, forward with ``logits_to_keep=1`` and backward.
Prints the wall time of each step (the first includes warm-up). Without native bf16 instructions
(avx512_bf16 / amx_bf16) autocast is emulated: run it under ``timeout`` there.
"""

from __future__ import annotations

import argparse
import time

import torch

from calibtune.models import load_model
from calibtune.training import cpu_has_native_bf16, lora_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"native bf16: {cpu_has_native_bf16()}, torch CPU capability: {torch.backends.cpu.get_cpu_capability()}")
    model, _ = load_model("smollm2")
    model = lora_model(model)
    model.train()
    x = torch.randint(0, 1000, (8, 128), generator=torch.Generator().manual_seed(0))
    for name in args.dtypes:
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                logits = model(input_ids=x, logits_to_keep=1).logits
            logits.float().logsumexp(-1).mean().backward()
            times.append(time.perf_counter() - t0)
            print(f"{name} step {len(times)}: {times[-1]:.2f} s", flush=True)


if __name__ == "__main__":
    main()
