"""Time binned ECE on 10^7 confidences: calibtune vs torchmetrics, in one run.

Usage: .venv/bin/python benchmarks/bench_metrics.py [--n 10000000] [--repeats 5]
Prints the best-of-repeats wall time of each and the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def best_time(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(value)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-bins", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from torchmetrics.functional.classification import binary_calibration_error

    from calibtune.metrics import calibration_error

    rng = np.random.default_rng(0)
    conf64 = rng.uniform(size=args.n)
    correct64 = (rng.uniform(size=args.n) < conf64 ** 1.3).astype(np.int64)
    conf32 = conf64.astype(np.float32)
    conf_t, correct_t = torch.from_numpy(conf32), torch.from_numpy(correct64)

    rows = [
        ("torchmetrics binary_calibration_error (float32 tensor)",
         lambda: binary_calibration_error(conf_t, correct_t, n_bins=args.n_bins, validate_args=False)),
        ("calibtune calibration_error preset=torchmetrics (same float32 tensor)",
         lambda: calibration_error(conf_t, correct_t, n_bins=args.n_bins, preset="torchmetrics")),
        ("calibtune calibration_error default (float64 numpy)",
         lambda: calibration_error(conf64, correct64, n_bins=args.n_bins)),
        ("calibtune calibration_error binning=mass (float64 numpy)",
         lambda: calibration_error(conf64, correct64, n_bins=args.n_bins, binning="mass")),
    ]
    print(f"N = {args.n:,} confidences, {args.n_bins} bins, best of {args.repeats}, torch threads 2")
    results = {}
    for name, fn in rows:
        t, v = best_time(fn, args.repeats)
        results[name] = t
        print(f"{t:8.3f} s  ECE={v:.6f}  {name}")
    ref = results[rows[0][0]]
    for name in list(results)[1:]:
        print(f"ratio torchmetrics / calibtune = {ref / results[name]:.2f}x  ({name})")


if __name__ == "__main__":
    main()
