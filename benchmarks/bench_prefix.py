"""Shared-prefix scoring: probing and k-shot evaluation with and without one cached exemplar prefix.

Usage: HF_HUB_OFFLINE=1 CALIBTUNE_DATA_DIR=/work/shared/data \
       .venv/bin/python benchmarks/bench_prefix.py [--limit 60] [--shots 4] [--n-prompts 4] [--repeats 2]

On ``--limit`` ARC-Easy dev items (seed 0, ``blob`` template, cloze per-token mean, fp32, batch 8,
the embedded SmolLM2-135M-Instruct; model load excluded), it times, round-robin ``--repeats`` times
(best wall time kept, so load from other processes hits all alike):

1. ``eval 0-shot``: one 0-shot scoring pass of the items (the reference cost);
2. ``probe shared``: ``probe_mc`` with ``n_prompts`` prompts × ``shots`` exemplars, one exemplar set
   per prompt index (the default), keys/values of each set computed once, plus its 0-shot canonical pass;
3. ``probe unshared``: the same prompts with ``score(..., share_prefix=False)`` (every row recomputes
   its exemplars), i.e. the computation before shared prefixes;
4. ``probe per-item``: per-item exemplar draws (round 1's procedure: no prefix to share);
5. ``eval k-shot shared`` / ``unshared``: ``5``-shot evaluation with one exemplar set, with and without
   prefix reuse.

It checks that shared and unshared give the same option log-probabilities (max |Δ|) and prints a
Markdown table with the ratios, the CPU flags and the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--n-prompts", type=int, default=4)
    parser.add_argument("--eval-shots", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    from calibtune.probing import mc as probing  # probe_mc and the score it calls
    from calibtune.data import exemplar_pool, load_dataset
    from calibtune.models import load_model
    from calibtune.prompts import build_requests, get_template
    from calibtune.scoring import score

    torch.set_num_threads(os.cpu_count() or 1)
    model, tok = load_model("smollm2", dtype="float32")
    items = load_dataset("arc-easy:dev", limit=args.limit, seed=0).items
    pool = exemplar_pool("arc-easy:dev").items
    template = get_template("blob", tok)
    common = dict(scoring="cloze", normalize="mean", batch_size=8, progress=False)
    kshot = build_requests(items, template, "cloze", shots=args.eval_shots, pool=pool, seed=0, exemplars="shared")

    def probe(exemplars: str, share: bool):
        original = probing.score

        def scored(*a, **kw):
            return original(*a, share_prefix=share, **kw)

        probing.score = scored
        try:
            return probing.probe_mc(model, tok, items, pool=pool, n_prompts=args.n_prompts, shots=args.shots,
                                    scoring="cloze", normalize="mean", exemplars=exemplars, known_rule="any",
                                    progress=False)
        finally:
            probing.score = original

    jobs = {
        "eval 0-shot": lambda: score(model, tok, build_requests(items, template, "cloze"), **common),
        "probe shared": lambda: probe("shared", True),
        "probe unshared": lambda: probe("shared", False),
        "probe per-item": lambda: probe("per-item", True),
        f"eval {args.eval_shots}-shot shared": lambda: score(model, tok, kshot, share_prefix=True, **common),
        f"eval {args.eval_shots}-shot unshared": lambda: score(model, tok, kshot, share_prefix=False, **common),
    }
    best = {name: float("inf") for name in jobs}
    results = {}
    for _ in range(args.repeats):
        for name, job in jobs.items():
            t0 = time.perf_counter()
            results[name] = job()
            best[name] = min(best[name], time.perf_counter() - t0)
    shared_lp = [d["p_gold"] for r in results["probe shared"] for d in r.prompts]
    unshared_lp = [d["p_gold"] for r in results["probe unshared"] for d in r.prompts]
    diff_probe = float(np.max(np.abs(np.log(shared_lp) - np.log(unshared_lp))))
    k_shared, k_unshared = results[f"eval {args.eval_shots}-shot shared"], results[f"eval {args.eval_shots}-shot unshared"]
    diff_eval = float(max(np.max(np.abs(a - b)) for a, b in zip(k_shared, k_unshared)))
    flags = open("/proc/cpuinfo").read()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, avx2={'avx2' in flags}, "
          f"avx512_bf16={'avx512_bf16' in flags}, load average at the end {os.getloadavg()}")
    print(f"{args.limit} ARC-Easy dev items; probe {args.n_prompts} prompts x {args.shots} shots (+ 0-shot canonical); "
          f"max |Δ log p_gold| shared vs unshared probe {diff_probe:.2e}; max |Δ log p| {args.eval_shots}-shot eval {diff_eval:.2e}")
    ref = best["eval 0-shot"]
    print("| job | best of %d (s) | × 0-shot eval |" % args.repeats)
    print("|---|---|---|")
    for name, t in best.items():
        print(f"| {name} | {t:.2f} | {t / ref:.2f}× |")
    print(f"probe unshared / shared: {best['probe unshared'] / best['probe shared']:.2f}×; "
          f"{args.eval_shots}-shot eval unshared / shared: "
          f"{best[f'eval {args.eval_shots}-shot unshared'] / best[f'eval {args.eval_shots}-shot shared']:.2f}×")


if __name__ == "__main__":
    main()
