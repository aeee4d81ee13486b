"""The CogCalib ratio study on the embedded model: a fixed training-set size, unknown:known = 5:0 ... 0:5.

Known/unknown come from probing the base model (``calibtune probe`` settings of experiments/cogcalib.yaml,
scored with the per-token mean cloze the model is trained and evaluated with) on a pool of OpenBookQA
train items; each ratio trains plain SFT (CE, LoRA) on a seeded sample with
that mix, evaluates on OpenBookQA test, and records, every few steps, mean confidence and accuracy on
held-out OpenBookQA dev items split by the base model's knowledge of them.

Usage: .venv/bin/python experiments/ratio_study.py [--size 150] [--pool 800] [--seed 0]
Writes experiments/results/ratio/{summary.csv, curves.json, <ratio>/*.predictions.jsonl}; finished
ratios are kept (re-running continues). The sampled training files go to runs/ratio (not in git).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from calibtune.grid import SUMMARY_COLUMNS, evaluate_sets, load_compare_config
from calibtune.data import load_dataset
from calibtune.models import load_model
from calibtune.predictions import atomic_write
from calibtune.probing import ProbeConfig, run_probe
from calibtune.training import TrainConfig, run_training

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "ratio"
WORK = ROOT.parent / "runs" / "ratio"


def probe_known(cfg, spec: str, limit: int, seed: int) -> dict[str, bool]:
    pc = ProbeConfig(model=cfg.model, data=spec, limit=limit, seed=seed, scoring=cfg.scoring, normalize=cfg.normalize,
                     template=cfg.template,
                     n_prompts=cfg.probe.n_prompts, shots=cfg.probe.shots, known_rule=cfg.probe.known_rule,
                     progress=False)
    return {r.id: bool(r.known) for r in run_probe(pc).records}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=150)
    ap.add_argument("--pool", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=4)
    args = ap.parse_args()
    cfg = load_compare_config(ROOT / "cogcalib.yaml")
    OUT.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    pool = load_dataset("openbookqa:train", limit=args.pool, seed=args.seed)
    known = probe_known(cfg, "openbookqa:train", args.pool, args.seed)
    heldout_known = probe_known(cfg, "openbookqa:dev", 100, args.seed)
    by_id = {it.id: it for it in pool.items}
    known_ids = sorted(i for i in by_id if known[i])
    unknown_ids = sorted(i for i in by_id if not known[i])
    rng = np.random.default_rng(args.seed)
    rows, curves = [], {}
    for n_unknown in range(5, -1, -1):
        u, k = n_unknown, 5 - n_unknown
        name = f"u{u}k{k}"
        cell = OUT / name
        done = cell / "cell.json"
        n_u = args.size * u // 5
        n_k = args.size - n_u
        if n_u > len(unknown_ids) or n_k > len(known_ids):
            raise SystemExit(f"pool too small for {name}: {len(unknown_ids)} unknown, {len(known_ids)} known")
        chosen = list(rng.choice(unknown_ids, n_u, replace=False)) + list(rng.choice(known_ids, n_k, replace=False))
        if not done.exists():
            train_file = WORK / f"train_{name}.jsonl"
            with atomic_write(train_file) as fh:
                for i in sorted(chosen):
                    it = by_id[i]
                    fh.write(json.dumps({"id": it.id, "question": it.question, "options": list(it.options),
                                         "answer": it.gold}) + "\n")
            dev_known_file = WORK / "dev_probe.jsonl"
            run_probe(ProbeConfig(model=cfg.model, data="openbookqa:dev", limit=100, seed=args.seed,
                                  scoring=cfg.scoring, normalize=cfg.normalize, template=cfg.template,
                                  n_prompts=cfg.probe.n_prompts,
                                  shots=cfg.probe.shots, known_rule=cfg.probe.known_rule, out=str(dev_known_file),
                                  progress=False))
            tc = TrainConfig.model_validate({
                **cfg.train, "model": cfg.model, "train_data": str(train_file), "eval_data": "openbookqa:dev",
                "eval_limit": 100, "seed": args.seed, "template": cfg.template, "scoring": cfg.scoring,
                "normalize": cfg.normalize, "objective": "ce", "probe": str(dev_known_file),
                "eval_every": args.eval_every,
                "training": {**cfg.train["training"], "output_dir": str(WORK / name)}})
            summary = run_training(tc, progress=False)
            model, tok = load_model(cfg.model, dtype=cfg.dtype, adapter=str(WORK / name))
            results = evaluate_sets(cfg, model, tok, [("openbookqa:test", 300)], args.seed, cell)
            record = {"ratio": name, "unknown": n_u, "known": n_k, "ids": sorted(chosen), "results": results,
                      "curve": summary["curve"], "train_loss": summary["train"].get("train_loss")}
            with atomic_write(done) as fh:
                json.dump(record, fh, indent=1)
        record = json.loads(done.read_text())
        curves[name] = record["curve"]
        for r in record["results"]:
            rows.append({"method": f"sft-{name}", "train_data": f"openbookqa:train unknown:known={u}:{k}",
                         "eval_data": r["eval_data"], "seed": args.seed,
                         **{c: r[c] for c in SUMMARY_COLUMNS[4:]}, "smece": r["smece"]})
    with atomic_write(OUT / "summary.csv") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS + ["smece"])
        writer.writeheader()
        writer.writerows(rows)
    with atomic_write(OUT / "curves.json") as fh:
        json.dump({"heldout_known": sum(heldout_known.values()), "heldout_n": len(heldout_known), "curves": curves},
                  fh, indent=1)
    print(f"wrote {OUT / 'summary.csv'}")


if __name__ == "__main__":
    main()
