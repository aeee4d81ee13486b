"""Evaluation throughput (questions/second) of calibtune scoring on the embedded SmolLM2-135M.

Usage: HF_HUB_OFFLINE=1 CALIBTUNE_DATA_DIR=/work/shared/data \
       .venv/bin/python benchmarks/bench_eval.py [--limit 200] [--repeats 3] [--dtypes float32,bfloat16]

On ``--limit`` ARC-Easy test questions (seed 0, ``blob`` template), per dtype, it times:

1. ``letter``: ``calibtune.scoring.score(..., scoring="letter", batch_size=8)`` (tokenisation included);
2. ``cloze``: the same with ``scoring="cloze"`` on the cloze rendering (packed prompt + options);
3. ``naive``: an lm-evaluation-harness-style loop: per question and per option one unbatched forward
   over ``(prompt + " A")[:-1]`` with full logits, ``log_softmax`` over all of them, the option
   token's log-prob read off (tokenisation included, as in (1));
4. ``bare``: ``model(input_ids, attention_mask=..., logits_to_keep=1)`` under ``torch.inference_mode()``
   over exactly the batches letter scoring builds (``LetterScorer.encode`` -> length-sorted ->
   ``collate``, batch 8, left-padded, prepared before timing): the floor for (1).

Each is warmed up once on the first ``--warmup`` questions, then run ``--repeats`` times over all
questions, round-robin (letter, cloze, naive, bare, letter, ...) so that load from other processes
hits all four alike; the best wall time is reported. The script
checks that (1) and (3) give the same option probabilities (max |dp|), so (3) is the same computation.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def naive_loop(model, tokenizer, requests) -> list[np.ndarray]:
    """lm-eval ``loglikelihood`` one request at a time: per (question, option) one full-logit forward."""
    out = []
    with torch.inference_mode():
        for req in requests:
            context = tokenizer(req.prompt)["input_ids"]
            logps = []
            for choice in req.choices:
                whole = tokenizer(req.prompt + choice)["input_ids"]
                continuation = whole[len(context):]
                inp = torch.tensor([whole[:-1]], dtype=torch.long)
                logits = torch.log_softmax(model(inp).logits.float(), dim=-1)  # (1, T, V): every position
                cont = logits[0, -len(continuation):].gather(1, torch.tensor(continuation)[:, None])
                logps.append(float(cont.sum()))
            out.append(np.asarray(logps, dtype=np.float64))
    return out


def letter_batches(tokenizer, requests, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """The batches ``score(..., scoring="letter")`` feeds the model (same encode, order and collate)."""
    from calibtune.scoring import LetterScorer

    scorer = LetterScorer()
    encoded = scorer.encode(tokenizer, requests)
    order = sorted(range(len(encoded)), key=lambda i: -encoded[i].length)
    return [scorer.collate([encoded[i] for i in order[s : s + batch_size]]) for s in range(0, len(order), batch_size)]


def bare_forward(model, batches) -> None:
    with torch.inference_mode():
        for b in batches:
            model(b["input_ids"], attention_mask=b["attention_mask"], logits_to_keep=1)


def probs(logps: list[np.ndarray]) -> list[np.ndarray]:
    return [np.exp(lp - np.logaddexp.reduce(lp)) for lp in logps]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=16, help="questions in the warm-up run of each case")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--only", default="letter,cloze,naive,bare", help="subset of the rows to time")
    args = ap.parse_args()
    torch.set_num_threads(2)

    from calibtune.data import load_dataset
    from calibtune.models import load_model
    from calibtune.prompts import build_requests, get_template
    from calibtune.scoring import score

    ds = load_dataset("arc-easy:test", limit=args.limit, seed=0)
    template = get_template("blob")
    letter_req = build_requests(ds.items, template, "letter")
    cloze_req = build_requests(ds.items, template, "cloze")
    n = len(letter_req)
    only = args.only.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{n} ARC-Easy test questions, {sum(len(r.choices) for r in letter_req)} options, batch {args.batch_size}, "
          f"warm-up on {args.warmup} questions + best of {args.repeats}; load average at start {os.getloadavg()[0]:.2f}")

    rows = []
    for dtype in args.dtypes.split(","):
        model, tok = load_model("smollm2", dtype=dtype)
        batches = letter_batches(tok, letter_req, args.batch_size)
        w = args.warmup
        warm_batches = letter_batches(tok, letter_req[:w], args.batch_size)
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        padded = sum(b["input_ids"].numel() for b in batches)
        print(f"[{dtype}] letter batches: {len(batches)}, {tokens} prompt tokens, {padded} with padding")
        cases = {  # case -> function of (letter requests, cloze requests, letter batches)
            "letter": lambda L, C, B: score(model, tok, L, scoring="letter", batch_size=args.batch_size, progress=False),
            "cloze": lambda L, C, B: score(model, tok, C, scoring="cloze", batch_size=args.batch_size, progress=False),
            "naive": lambda L, C, B: naive_loop(model, tok, L),
            "bare": lambda L, C, B: bare_forward(model, B),
        }
        names = [c for c in cases if c in only]
        for name in names:  # warm-up
            cases[name](letter_req[:w], cloze_req[:w], warm_batches)
        results, times = {}, {name: [] for name in names}
        for rep in range(args.repeats):
            for name in names:
                t, results[name] = timed(lambda: cases[name](letter_req, cloze_req, batches))
                times[name].append(t)
                print(f"[{dtype}] run {rep + 1}: {name:6s} {t:7.2f} s  ({n / t:6.2f} q/s)  "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
        secs = {name: min(ts) for name, ts in times.items()}
        dp = float("nan")
        if "letter" in results and "naive" in results:
            dp = max(float(np.abs(a - b).max()) for a, b in zip(probs(results["letter"]), probs(results["naive"])))
            agree = np.mean([np.argmax(a) == np.argmax(b) for a, b in zip(results["letter"], results["naive"])])
            print(f"[{dtype}] letter vs naive: max |dp| = {dp:.2e}, same argmax on {agree:.1%} of questions")
        rows.append((dtype, secs, dp))
        del model

    print()
    print("| dtype | scoring | time (s) | questions/s | vs naive | vs bare forward |")
    print("|---|---|---|---|---|---|")
    for dtype, secs, _ in rows:
        for name, s in secs.items():
            vs_naive = f"{secs['naive'] / s:.2f}×" if "naive" in secs else "–"
            vs_bare = f"{secs['bare'] / s:.2f}×" if "bare" in secs else "–"
            print(f"| {dtype} | {name} | {s:.2f} | {n / s:.2f} | {vs_naive} | {vs_bare} |")
    print()
    for dtype, secs, dp in rows:
        if {"letter", "naive", "bare"} <= secs.keys():
            speedup = secs["naive"] / secs["letter"]
            overhead = secs["letter"] / secs["bare"] - 1
            print(f"{dtype}: letter = {speedup:.2f}× naive (goal ≥ 3×: {'met' if speedup >= 3 else 'NOT met'}); "
                  f"letter time = bare forward + {overhead:+.1%} (goal ≤ +10%: {'met' if overhead <= 0.10 else 'NOT met'}); "
                  f"max |dp| letter vs naive {dp:.1e}")


if __name__ == "__main__":
    main()
