"""Cloze scoring: calibtune vs lm-evaluation-harness 0.4.13, same items, prompt, model and batch size.

Both sides score the same log-likelihood requests: 200 ARC-Easy test questions (calibtune's seeded
subset, ``arc-easy:test`` limit 200 seed 0) in lm-eval's own ``arc_easy`` prompt (``Question: …\\nAnswer:``,
each option a continuation ``" " + text``), SmolLM2-135M-Instruct (calibtune's safetensors cache of the
embedded GGUF), fp32, batch 8, on the CPU. lm-eval runs in a throwaway venv that this script builds
(``--venv``; pinned lm_eval, torch, transformers and accelerate as in calibtune's venv), through its
own ``HFLM.loglikelihood``; calibtune through :func:`calibtune.scoring.score` with cloze scoring
(the prompt once, the options packed behind it).

Each side runs in its own fresh process, alternating, ``--repeats`` times; a process reports the
seconds of the scoring call alone (model load excluded) and its peak resident memory
(``ru_maxrss``, model load included). Per-option log-likelihoods of the two are compared.

    HF_HUB_OFFLINE=1 CALIBTUNE_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_lmeval.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

LMEVAL_DRIVER = r'''
import json, resource, sys, time
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

model_dir, requests_file, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
pairs = json.load(open(requests_file))
lm = HFLM(pretrained=model_dir, dtype="float32", batch_size=batch_size, device="cpu")
instances = [Instance(request_type="loglikelihood", doc={}, arguments=(c, x), idx=i) for i, (c, x) in enumerate(pairs)]
t0 = time.perf_counter()
out = lm.loglikelihood(instances, disable_tqdm=True)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "loglik": [ll for ll, _ in out],
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "threads": torch.get_num_threads()}))
'''

CALIBTUNE_DRIVER = r'''
import json, resource, sys, time
import torch
from calibtune.models import load_model
from calibtune.scoring import ScoringRequest, score

model_dir, requests_file, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
items = json.load(open(requests_file))
model, tok = load_model(model_dir, dtype="float32", device="cpu")
requests = [ScoringRequest(it["prompt"], it["choices"]) for it in items]
t0 = time.perf_counter()
out = score(model, tok, requests, scoring="cloze", normalize="sum", batch_size=batch_size, log_softmax=False,
            progress=False)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "loglik": [float(v) for row in out for v in row],
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "threads": torch.get_num_threads()}))
'''


def _pins() -> list[str]:
    """lm-eval 0.4.13 with calibtune's own torch, transformers and accelerate (the same kernels on both sides)."""
    torch = metadata.version("torch").split("+")[0]
    return ["lm_eval==0.4.13", f"torch=={torch}", f"transformers=={metadata.version('transformers')}",
            f"accelerate=={metadata.version('accelerate')}"]


def ensure_venv(venv: Path) -> Path:
    """The throwaway venv's python, built with the pinned packages unless it already has lm_eval."""
    python = venv / "bin" / "python"
    if python.is_file() and subprocess.run([python, "-c", "import lm_eval"], capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *_pins()], check=True)
    return python


def _run(python: Path, driver: str, model_dir: str, requests: Path, batch_size: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(driver)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        done = subprocess.run([python, fh.name, model_dir, str(requests), str(batch_size)], capture_output=True,
                              text=True, env=env)
    finally:
        os.unlink(fh.name)
    if done.returncode != 0:
        raise RuntimeError(f"{python} driver failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", type=Path, default=Path(tempfile.gettempdir()) / "calibtune-lmeval-0.4.13")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = ap.parse_args()

    from calibtune.data import load_dataset
    from calibtune.models import gguf_to_cache, resolve_model

    resolved = resolve_model("smollm2")
    model_dir = str(gguf_to_cache(resolved.location)) if resolved.kind == "gguf" else resolved.location
    items = load_dataset("arc-easy:test", limit=args.limit, seed=0).items
    reqs = [{"prompt": f"Question: {it.question}\nAnswer:", "choices": [" " + o for o in it.options]} for it in items]
    work = Path(tempfile.mkdtemp(prefix="bench-lmeval-"))
    pairs, grouped = work / "pairs.json", work / "items.json"
    pairs.write_text(json.dumps([[r["prompt"], c] for r in reqs for c in r["choices"]]))
    grouped.write_text(json.dumps(reqs))
    lmeval_python = ensure_venv(args.venv)

    runs: dict[str, list[dict]] = {"lm-eval": [], "calibtune": []}
    for _ in range(args.repeats):  # alternating fresh processes: background load hits both alike
        runs["lm-eval"].append(_run(lmeval_python, LMEVAL_DRIVER, model_dir, pairs, args.batch_size))
        runs["calibtune"].append(_run(Path(sys.executable), CALIBTUNE_DRIVER, model_dir, grouped, args.batch_size))
    a, b = runs["lm-eval"][0]["loglik"], runs["calibtune"][0]["loglik"]
    diff = max(abs(x - y) for x, y in zip(a, b, strict=True))
    sizes = [len(r["choices"]) for r in reqs]
    same, k = 0, 0
    for n in sizes:
        same += max(range(n), key=lambda j: a[k + j]) == max(range(n), key=lambda j: b[k + j])
        k += n
    best = {name: min(r["seconds"] for r in rs) for name, rs in runs.items()}
    peak = {name: max(r["maxrss_kb"] for r in rs) / 2**20 for name, rs in runs.items()}
    figures = {"items": len(reqs), "options": len(a), "batch_size": args.batch_size, "repeats": args.repeats,
               "seconds": {n: [round(r["seconds"], 2) for r in rs] for n, rs in runs.items()},
               "best_seconds": best, "speedup": best["lm-eval"] / best["calibtune"],
               "peak_gib": peak, "memory_ratio": peak["calibtune"] / peak["lm-eval"],
               "max_abs_loglik_diff": diff, "same_argmax": same / len(sizes),
               "threads": runs["calibtune"][0]["threads"], "load": os.getloadavg()}
    print(f"{len(reqs)} ARC-Easy questions, {len(a)} options, batch {args.batch_size}, best of {args.repeats}")
    print(f"lm-eval 0.4.13 loglikelihood: {best['lm-eval']:.2f} s, peak {peak['lm-eval']:.2f} GiB")
    print(f"calibtune cloze score:        {best['calibtune']:.2f} s, peak {peak['calibtune']:.2f} GiB")
    print(f"speed-up {figures['speedup']:.2f}x, memory {figures['memory_ratio']:.2f}x; max |d loglik| {diff:.2e}, "
          f"same argmax {figures['same_argmax']:.1%}; load average {figures['load']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
