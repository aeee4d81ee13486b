"""Build experiments/RESULTS.md (tables and figures) from the studies' summary.csv and predictions.

Usage: .venv/bin/python experiments/make_results.py
Round 2 (issue 10, experiments/results_round2.py) comes first, then open-ended QA (issue 13,
experiments/results_open_qa.py); round 1 follows, unchanged.
Reads experiments/results/{cogcalib,cogcalib_alpha,cft}/summary.csv (+ per-cell predictions) and experiments/results/ratio/.
Numbers are means over the seeds that finished; every cell's raw row stays in summary.csv.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from calibtune.io import atomic_write  # noqa: E402
from calibtune.metrics import reliability_bins  # noqa: E402
from calibtune.predictions import read_predictions  # noqa: E402
from calibtune.reports import reliability_grid, save_figure  # noqa: E402

import results_open_qa
import results_round2

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
FIGS = RESULTS / "figures"
METHOD_ORDER = ["base", "sft", "ts", "ls", "cols", "combls", "coecp"]
COGCALIB = ["cols", "combls", "coecp"]
CFT_ORDER = ["base", "ts", "ls", "cft", "rcft", "rcft-code", "cols"]


def read_rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def mean_by(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, dict[str, float]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r)
    out = {}
    for key, rs in groups.items():
        out[key] = {m: float(np.mean([float(r[m]) for r in rs])) for m in ("accuracy", "ece", "brier", "nll")}
        out[key]["seeds"] = len(rs)
    return out


def load_study(study: str) -> tuple[list[dict], dict[tuple, dict[str, float]]] | None:
    """A grid's summary rows and their means over seeds by (method, train_data, eval_data); None before it ran."""
    path = RESULTS / study / "summary.csv"
    if not path.exists():
        return None
    rows = read_rows(path)
    return rows, mean_by(rows, ("method", "train_data", "eval_data"))


def table_vs(means: dict, methods: list[str], train: str, eval_data: str, ref: str, label: str) -> list[str]:
    """Markdown rows of ``methods`` on one train → eval pair, with ECE and accuracy changes against ``ref``."""
    lines = [f"| method | accuracy | ECE | Brier | NLL | ΔECE vs {label} | Δacc vs {label} (pts) |",
             "|---|---|---|---|---|---|---|"]
    base = means.get((ref, train, eval_data))
    for m in methods:
        v = means.get((m, train, eval_data))
        if v is None:
            continue
        d_ece = pct_change(v["ece"], base["ece"]) if base else "–"
        d_acc = f"{100 * (v['accuracy'] - base['accuracy']):+.1f}" if base else "–"
        lines.append(f"| {m} | {v['accuracy']:.3f} | {v['ece']:.3f} | {v['brier']:.3f} | {v['nll']:.3f} | "
                     f"{d_ece} | {d_acc} |")
    return lines


def pct_change(x: float, ref: float) -> str:
    return "–" if ref == 0 else f"{100 * (x - ref) / ref:+.0f}%"


def task_table(means: dict, train: str, eval_data: str) -> list[str]:
    lines = ["| method | seeds | accuracy | ECE | Brier | NLL | ΔECE vs SFT | ΔECE vs TS | Δacc vs SFT (pts) |",
             "|---|---|---|---|---|---|---|---|---|"]
    sft = means.get(("sft", train, eval_data))
    ts = means.get(("ts", train, eval_data))
    for m in METHOD_ORDER:
        v = means.get((m, train, eval_data))
        if v is None:
            continue
        d_sft = pct_change(v["ece"], sft["ece"]) if sft else "–"
        d_ts = pct_change(v["ece"], ts["ece"]) if ts else "–"
        d_acc = f"{100 * (v['accuracy'] - sft['accuracy']):+.1f}" if sft else "–"
        lines.append(f"| {m} | {v['seeds']} | {v['accuracy']:.3f} | {v['ece']:.3f} | {v['brier']:.3f} | "
                     f"{v['nll']:.3f} | {d_sft} | {d_ts} | {d_acc} |")
    return lines


def cogcalib_section() -> list[str]:
    study = load_study("cogcalib")
    if study is None:
        return ["_The CogCalib study has not produced results yet._", ""]
    rows, means = study
    pairs = sorted({(r["train_data"], r["eval_data"]) for r in rows}, key=lambda p: (p[0], "mmlu" in p[1], p[1]))
    lines = []
    for train, ev in pairs:
        lines += [f"### train `{train}` → eval `{ev}`", ""] + task_table(means, train, ev) + [""]
    # average relative ECE change of each CogCalib variant vs SFT, in-domain only
    lines += ["### CogCalib vs SFT, averaged over in-domain test sets", "",
              "| method | mean ΔECE vs SFT | mean ΔECE vs TS | mean Δacc vs SFT (pts) | test sets |", "|---|---|---|---|---|"]
    in_domain = [(t, e) for t, e in pairs if "mmlu" not in e]
    for m in ["ls", *COGCALIB, "ts"]:
        d_sft, d_ts, d_acc = [], [], []
        for t, e in in_domain:
            v, s, ts = means.get((m, t, e)), means.get(("sft", t, e)), means.get(("ts", t, e))
            if v and s:
                d_sft.append((v["ece"] - s["ece"]) / s["ece"])
                d_acc.append(v["accuracy"] - s["accuracy"])
            if v and ts:
                d_ts.append((v["ece"] - ts["ece"]) / ts["ece"])
        if d_sft:
            lines.append(f"| {m} | {100 * np.mean(d_sft):+.1f}% | {100 * np.mean(d_ts):+.1f}% | "
                         f"{100 * np.mean(d_acc):+.2f} | {len(d_sft)} |")
    lines.append("")
    fig = diagrams("obqa", "openbookqa_test")
    if fig:
        lines += [f"![reliability diagrams, OpenBookQA test, seed 0]({fig})", ""]
    return lines


def diagrams(task: str, eval_slug: str, study: str = "cogcalib", methods: list[str] = METHOD_ORDER) -> str | None:
    panels = []
    for m in methods:
        f = RESULTS / study / task / "seed0" / m / f"{eval_slug}.predictions.jsonl"
        if f.exists():
            p = read_predictions(f)
            x, y = p.arrays()
            bins = reliability_bins(x, y, n_bins=15)
            panels.append((m, bins, bins.ece))
    if not panels:
        return None
    out = FIGS / f"reliability_{study}_{task}_{eval_slug}.png"
    reliability_grid(panels, out)
    out.with_suffix(".svg").unlink(missing_ok=True)
    return str(out.relative_to(ROOT))


def cft_section() -> list[str]:
    study = load_study("cft")
    if study is None:
        return ["_The CFT/RCFT study has not produced results yet._", ""]
    rows, means = study
    lines = []
    for train, ev in sorted({(r["train_data"], r["eval_data"]) for r in rows}, key=lambda p: "arc" in p[1]):
        lines += [f"### train `{train}` → eval `{ev}`", "", *table_vs(means, CFT_ORDER, train, ev, "base", "untouched")]
        slug = next((f.name.removesuffix(".predictions.jsonl")
                     for f in (RESULTS / "cft" / "mix" / "seed0" / "base").glob("*.predictions.jsonl")
                     if ("arc" in f.name) == ("arc" in ev)), None)
        fig = diagrams("mix", slug, "cft", CFT_ORDER) if slug else None
        lines += [""] + ([f"![reliability diagrams, {ev}]({fig})", ""] if fig else [])
    return lines


def alpha_section() -> list[str]:
    """The held-out regulariser-strength grid: OpenBookQA dev only, so it selects α without touching a test set."""
    study = load_study("cogcalib_alpha")
    if study is None:
        return ["_The held-out α grid (`make experiments-alpha`) has not run yet._", ""]
    rows, means = study
    lines = []
    for train, ev in sorted({(r["train_data"], r["eval_data"]) for r in rows}):
        methods = sorted({m for m, t, e in means if (t, e) == (train, ev)}, key=lambda m: (m != "sft", m))
        lines += table_vs(means, methods, train, ev, "sft", "SFT") + [""]
    return lines


def ratio_section() -> list[str]:
    path = RESULTS / "ratio" / "summary.csv"
    if not path.exists():
        return ["_The ratio study has not produced results yet._", ""]
    rows = read_rows(path)
    lines = ["| unknown:known | accuracy | ECE | Brier | NLL |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['train_data'].split('=')[-1]} | {float(r['accuracy']):.3f} | {float(r['ece']):.3f} | "
                     f"{float(r['brier']):.3f} | {float(r['nll']):.3f} |")
    curves = json.loads((RESULTS / "ratio" / "curves.json").read_text())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, group in zip(axes, ("known", "unknown")):
        for name, curve in curves["curves"].items():
            steps = [c["step"] for c in curve]
            conf = [c.get(f"heldout_{group}_confidence", np.nan) for c in curve]
            acc = [c.get(f"heldout_{group}_accuracy", np.nan) for c in curve]
            line, = ax.plot(steps, conf, label=f"{name} confidence")
            ax.plot(steps, acc, "--", color=line.get_color(), alpha=0.7)
        ax.set_title(f"held-out items the base model {'knows' if group == 'known' else 'does not know'}")
        ax.set_xlabel("training step")
    axes[0].set_ylabel("confidence (solid) / accuracy (dashed)")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    out = FIGS / "ratio_curves.png"
    save_figure(fig, out)
    out.with_suffix(".svg").unlink(missing_ok=True)
    lines += ["", f"Held-out OpenBookQA dev items: {curves['heldout_n']} "
                  f"({curves['heldout_known']} known to the base model).", "",
              f"![confidence and accuracy over training, known vs unknown]({out.relative_to(ROOT)})", ""]
    return lines


def main() -> None:
    FIGS.mkdir(parents=True, exist_ok=True)
    intro = (ROOT / "RESULTS.intro.md").read_text() if (ROOT / "RESULTS.intro.md").exists() else ""
    lines = [*results_round2.section(), "---", "", *results_open_qa.section(), "---", "",
             "*Round 1 below, kept as it was: tasks at chance for the 135M model, one epoch of training.*", "",
             intro, "## Methods on four tasks (in-domain) and OpenBookQA → MMLU (out of domain)", "",
             *cogcalib_section(),
             "## CogCalib regulariser strength on held-out data (OpenBookQA dev, seed 0)", "", *alpha_section(),
             "## Ratio study: unknown:known in the training set (OpenBookQA, SFT)", "",
             *ratio_section(), "## CFT and RCFT on the aligned model (issue 5)", "", *cft_section()]
    with atomic_write(ROOT / "RESULTS.md") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {ROOT / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
