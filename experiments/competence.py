"""Competence map: how far above chance each embedded model is on every labelled multiple-choice set.

For each model and data set, 500 seeded items of the default (labelled) split are scored once with
cloze (per-option summed token log-likelihoods, from which the ``sum``, per-token ``mean`` and
per-character ``char`` normalisations follow) and once with letter scoring, 0-shot, ``blob``
template, fp32. Per cell: accuracy with a 95 % bootstrap interval, chance (mean 1/K), the margin
above chance, ECE (15 equal-width bins), AUROC. Raw option scores are cached per (model, data set)
under ``experiments/results/competence/raw/`` so the table is rebuilt without a model.

Run: ``make competence`` (= ``python experiments/competence.py``); ``--models smollm2`` to restrict.
A data set is *competent* for a model when some cloze normalisation is ≥ 15 points above both chance
and the majority-position baseline, with the whole interval above them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from calibtune.data import DATASETS, load_dataset
from calibtune.metrics import accuracy, bootstrap_ci, pad_probabilities, summarize
from calibtune.predictions import atomic_write
from calibtune.prompts import build_requests, get_template
from calibtune.scoring import make_scorer, score

OUT = Path(__file__).parent / "results" / "competence"
MODELS = ("smollm2", "gemma3-270m")
LIMIT = 500
NORMALIZATIONS = ("sum", "mean", "char")
COMPETENT_MARGIN = 0.15
COLUMNS = ["model", "data", "scoring", "n", "chance", "majority", "accuracy", "accuracy_lo", "accuracy_hi", "margin",
           "ece", "auroc", "competent"]


def mc_sets() -> list[str]:
    """Every labelled multiple-choice data set of the registry, at its default split."""
    return [f"{name}:{info.default_split}" for name, info in DATASETS.items() if info.kind == "mc"]


def _raw_path(model_name: str, spec: str) -> Path:
    return OUT / "raw" / f"{model_name}__{spec.replace(':', '_').replace('/', '_')}.json"


def raw_scores(model_name: str, spec: str, *, model_cache: dict) -> dict:
    """Option scores of ``LIMIT`` seeded items (cached): cloze sums, token and character counts, letter logits."""
    path = _raw_path(model_name, spec)
    if path.is_file():
        return json.loads(path.read_text())
    from calibtune.models import load_model

    if model_name not in model_cache:
        model_cache.clear()
        model_cache[model_name] = load_model(model_name, dtype="float32")
    model, tok = model_cache[model_name]
    ds = load_dataset(spec, limit=LIMIT, seed=0)
    template = get_template("blob", tok)
    t0 = time.perf_counter()
    cloze_reqs = build_requests(ds.items, template, "cloze")
    sums = score(model, tok, cloze_reqs, scoring="cloze", normalize="sum", log_softmax=False, progress=False)
    tokens = [[len(o) for o in e.option_ids] for e in make_scorer("cloze").encode(tok, cloze_reqs)]
    cloze_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    letter = score(model, tok, build_requests(ds.items, template, "letter"), scoring="letter", log_softmax=False,
                   progress=False)
    rec = {"model": model_name, "data": ds.name, "ids": [it.id for it in ds.items], "gold": [it.gold for it in ds.items],
           "cloze_sum": [s.tolist() for s in sums], "tokens": tokens,
           "chars": [[len(c) for c in r.choices] for r in cloze_reqs], "letter": [s.tolist() for s in letter],
           "seconds": {"cloze": round(cloze_seconds, 1), "letter": round(time.perf_counter() - t0, 1)}}
    with atomic_write(path) as fh:
        json.dump(rec, fh)
    return rec


def _row(model: str, data: str, scoring: str, scores: list[np.ndarray], gold: list[int]) -> dict:
    probs = [np.exp(s - np.logaddexp.reduce(s)) for s in scores]
    p, mask = pad_probabilities(probs)
    m = summarize(p, np.array(gold), mask=mask, n_bins=15)
    chance = float(np.mean([1 / len(s) for s in scores]))
    majority = float(np.bincount(gold).max() / len(gold))  # always answering the most frequent option position
    floor = max(chance, majority)
    lo, hi = bootstrap_ci(accuracy, p, np.array(gold), n_resamples=1000, seed=0)
    return {"model": model, "data": data, "scoring": scoring, "n": m["n"], "chance": round(chance, 4),
            "majority": round(majority, 4), "accuracy": round(m["accuracy"], 4), "accuracy_lo": round(lo, 4),
            "accuracy_hi": round(hi, 4), "margin": round(m["accuracy"] - floor, 4), "ece": round(m["ece"], 4),
            "auroc": None if m["auroc"] is None else round(m["auroc"], 4),
            "competent": bool(scoring.startswith("cloze") and m["accuracy"] - floor >= COMPETENT_MARGIN and lo > floor)}


def rows_of(rec: dict) -> list[dict]:
    """The table rows (cloze sum/mean/char, letter) of one cached record."""
    sums = [np.array(s) for s in rec["cloze_sum"]]
    norm = {"sum": sums, "mean": [s / np.array(t) for s, t in zip(sums, rec["tokens"])],
            "char": [s / np.array(c) for s, c in zip(sums, rec["chars"])]}
    rows = [_row(rec["model"], rec["data"], f"cloze-{n}", norm[n], rec["gold"]) for n in NORMALIZATIONS]
    rows.append(_row(rec["model"], rec["data"], "letter", [np.array(s) for s in rec["letter"]], rec["gold"]))
    return rows


def write_table(rows: list[dict]) -> None:
    with atomic_write(OUT / "competence.csv") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    lines = ["# Competence map", "",
             f"{LIMIT} seeded items per set (default labelled split), 0-shot, `blob` template, fp32. Accuracy with its",
             "95 % bootstrap interval (1,000 resamples); chance = mean 1/K; majority = always answering the most frequent",
             "gold position (PubMedQA's yes/no/maybe, BoolQ's true/false are not balanced); margin = accuracy − max(chance,",
             f"majority); ECE with 15 equal-width bins. **Bold**: competent (a cloze margin ≥ {COMPETENT_MARGIN:.2f} with the",
             "whole interval above max(chance, majority)).",
             "Rebuilt by `make competence` (`python experiments/competence.py`).", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        lines += [f"## {model}", "", "| data | chance | majority | " + " | ".join(
            f"{s} acc [95 % CI] · ECE · AUROC" for s in ("cloze-sum", "cloze-mean", "cloze-char", "letter")) + " |",
                  "|---|---|---|" + "---|" * 4]
        for data in dict.fromkeys(r["data"] for r in rows if r["model"] == model):
            cells = {r["scoring"]: r for r in rows if r["model"] == model and r["data"] == data}
            first = next(iter(cells.values()))

            def fmt(r: dict) -> str:
                text = (f"{r['accuracy']:.3f} [{r['accuracy_lo']:.3f}, {r['accuracy_hi']:.3f}] · {r['ece']:.3f} · "
                        f"{'–' if r['auroc'] is None else format(r['auroc'], '.3f')}")
                return f"**{text}**" if r["competent"] else text

            lines.append(f"| {data} | {first['chance']:.3f} | {first['majority']:.3f} | " + " | ".join(fmt(cells[s]) for s in
                                                                 ("cloze-sum", "cloze-mean", "cloze-char", "letter")) + " |")
        lines.append("")
    with atomic_write(OUT / "competence.md") as fh:
        fh.write("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--data", nargs="+", default=None, help="data specs (default: every labelled MC set)")
    parser.add_argument("--cached-only", action="store_true", help="rebuild the tables from the cached scores only")
    args = parser.parse_args(argv)
    specs = args.data or mc_sets()
    cache: dict = {}
    rows = []
    for model in args.models:
        for spec in specs:
            if args.cached_only and not _raw_path(model, spec).is_file():
                continue
            rec = raw_scores(model, spec, model_cache=cache)
            rows += rows_of(rec)
            print(f"{model} {rec['data']}: {rec['seconds']}", file=sys.stderr, flush=True)
            write_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
