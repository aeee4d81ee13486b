"""Do the probe's known labels mean something? Accuracy of known vs unknown items on a prompt the probe never used.

For each task of a grid config (default ``experiments/study.yaml``) the training set is probed with the
grid's own probe settings (a cache hit once the grid has run), then scored once more, 0-shot and with
a fresh 2-shot exemplar set drawn with a seed the probe does not use, in the grid's scoring. A valid
label splits the items into a group the model gets right on the new prompt and one it does not.
Per task and prompt: n, accuracy of known and of unknown items with 95 % bootstrap intervals (1,000
resamples), and the chance rule's expected false-known rate for the task's K.

Run: ``make probe-validation`` (= ``python experiments/probe_validation.py``).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from calibtune.grid import load_compare_config
from calibtune.data import exemplar_pool, load_dataset
from calibtune.metrics import bootstrap_ci
from calibtune.predictions import atomic_write
from calibtune.probing import ProbeConfig, false_known_rate, run_probe
from calibtune.prompts import build_requests, get_template
from calibtune.scoring import score

OUT = Path(__file__).parent / "results" / "probe_validation"
FRESH_SEED = 1000  # the probe draws its exemplar sets from seeds derived from the grid seed; this one is new
COLUMNS = ["task", "prompt", "n", "known_n", "known_accuracy", "known_lo", "known_hi", "unknown_n",
           "unknown_accuracy", "unknown_lo", "unknown_hi", "gap", "n_options", "false_known_rate"]


def _mean_ci(x: np.ndarray) -> tuple[float, float, float]:
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    lo, hi = bootstrap_ci(lambda a: float(np.mean(a)), x, n_resamples=1000, seed=0)
    return float(np.mean(x)), float(lo), float(hi)


def validate(config: str) -> list[dict]:
    from calibtune.models import load_model

    cfg = load_compare_config(config)
    settings = cfg.probe
    model = tok = None
    rows = []
    for task in cfg.tasks:
        seed = task.data_seed if task.data_seed is not None else task.seeds[0]
        result = run_probe(ProbeConfig(model=cfg.model, data=task.train, limit=task.train_limit, seed=seed,
                                       scoring=cfg.scoring, normalize=settings.normalize or cfg.normalize,
                                       template=cfg.template, n_prompts=settings.n_prompts, shots=settings.shots,
                                       known_rule=settings.known_rule, false_known=settings.false_known,
                                       exemplars=settings.exemplars, progress=False))
        known = {r.id: r.known for r in result.records}
        ds = load_dataset(task.train, limit=task.train_limit, seed=seed)
        pool = exemplar_pool(ds.name) or ds
        if model is None:
            model, tok = load_model(cfg.model, dtype=cfg.dtype)
        template = get_template(cfg.template, tok)
        k = int(np.median([len(it.options) for it in ds.items]))
        for name, shots in (("0-shot", 0), (f"2-shot, exemplar seed {FRESH_SEED}", 2)):
            reqs = build_requests(ds.items, template, cfg.scoring, shots=shots, pool=pool.items, seed=FRESH_SEED,
                                  exemplars="shared")
            logprobs = score(model, tok, reqs, scoring=cfg.scoring, normalize=cfg.normalize, progress=False)
            right = np.array([int(np.argmax(lp) == it.gold) for lp, it in zip(logprobs, ds.items)])
            is_known = np.array([known[it.id] for it in ds.items])
            ka, klo, khi = _mean_ci(right[is_known])
            ua, ulo, uhi = _mean_ci(right[~is_known])
            rows.append({"task": task.name, "prompt": name, "n": len(right), "known_n": int(is_known.sum()),
                         "known_accuracy": round(ka, 4), "known_lo": round(klo, 4), "known_hi": round(khi, 4),
                         "unknown_n": int((~is_known).sum()), "unknown_accuracy": round(ua, 4),
                         "unknown_lo": round(ulo, 4), "unknown_hi": round(uhi, 4), "gap": round(ka - ua, 4),
                         "n_options": k, "false_known_rate": round(false_known_rate(settings.n_prompts, k,
                                                                                    settings.known_rule,
                                                                                    settings.false_known), 4)})
    return rows


def write(rows: list[dict], config: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with atomic_write(OUT / "probe_validation.csv") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    lines = ["# Probe validation", "",
             f"Training sets of `{config}` probed with its probe settings; accuracy on prompts the probe did not use,",
             "known vs unknown items, 95 % bootstrap intervals. Rebuilt by `make probe-validation`.", "",
             "| task | prompt | n | known n | known acc [95 % CI] | unknown n | unknown acc [95 % CI] | gap | K | false-known rate |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['prompt']} | {r['n']} | {r['known_n']} | {r['known_accuracy']:.3f} "
                     f"[{r['known_lo']:.3f}, {r['known_hi']:.3f}] | {r['unknown_n']} | {r['unknown_accuracy']:.3f} "
                     f"[{r['unknown_lo']:.3f}, {r['unknown_hi']:.3f}] | {r['gap']:+.3f} | {r['n_options']} | "
                     f"{r['false_known_rate']:.4f} |")
    with atomic_write(OUT / "probe_validation.md") as fh:
        fh.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="experiments/study.yaml")
    args = parser.parse_args(argv)
    write(validate(args.config), args.config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
