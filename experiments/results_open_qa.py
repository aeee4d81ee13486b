"""The open-ended QA part of experiments/RESULTS.md (issue 13), from ``experiments/results/open_qa``.

Every number comes from the files ``experiments/open_qa_study.py`` wrote: the SliCK probe counts, each cell's
test predictions (``eval-end``, ``eval-best``, ``eval``) and held-out curve. Intervals are 95 % bootstraps over
seeds and items, paired (each resample draws the seeds with replacement and, within each, the same test items
for every model compared), shifted by the bootstrap's own bias as in round 2 (:func:`results_round2._ci`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from calibtune.metrics import auroc, calibration_error
from results_round2 import N_RESAMPLES, _ci

EXPERIMENTS = Path(__file__).resolve().parent
RESULTS = EXPERIMENTS / "results" / "open_qa"
KINDS = ("seq_prob", "seq_prob_mean", "ptrue", "verbalized")
CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
EVAL_DIRS = {"base": "eval", "end": "eval-end", "best": "eval-best"}


def _cells(task: str) -> list[dict]:
    return [json.loads(p.read_text()) | {"dir": p.parent} for p in sorted((RESULTS / task).glob("seed*/*/cell.json"))]


def _rows(cell: dict, model: str) -> dict[str, dict]:
    """Test predictions of one evaluated model of a cell, by item id."""
    path = cell["dir"] / EVAL_DIRS[model] / "predictions.jsonl"
    return {r["id"]: r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip())}


def _arrays(rows: dict[str, dict], ids: list[str], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Confidence of ``kind`` (NaN where unparsed) and correctness, in ``ids`` order."""
    conf = np.array([np.nan if rows[i]["confidences"].get(kind) is None else rows[i]["confidences"][kind]
                     for i in ids], dtype=float)
    return conf, np.array([float(rows[i]["correct"]) for i in ids])


def _ece(conf: np.ndarray, correct: np.ndarray) -> float:
    ok = ~np.isnan(conf)
    return float(calibration_error(conf[ok], correct[ok], n_bins=15)) if ok.any() else float("nan")


def _groups(task: str) -> dict[tuple[str, str, str], dict[int, dict[str, dict]]]:
    """(mix, method, model) → seed → test predictions; the base model (seed-free) is repeated for every seed."""
    cells = _cells(task)
    seeds = sorted({c["seed"] for c in cells if c["mix"] is not None})
    out: dict[tuple[str, str, str], dict[int, dict[str, dict]]] = defaultdict(dict)
    for c in cells:
        for model in c["models"]:
            key = (c["mix"] or "—", c["method"], model)
            for s in (seeds or [c["seed"]]) if c["mix"] is None else [c["seed"]]:
                out[key][s] = _rows(c, model)
    return out


def _bootstrap(per_seed: list[dict[int, tuple[np.ndarray, np.ndarray]]], stat, rng_seed: int = 0):
    """Point and draws of ``stat`` averaged over the seeds the groups share; items resampled, paired."""
    seeds = sorted(set.intersection(*(set(g) for g in per_seed)))
    n = len(next(iter(per_seed[0].values()))[0])
    rng = np.random.default_rng(rng_seed)

    def value(seed_pick, item_pick) -> float:
        return float(np.mean([stat(*[(g[s][0][idx], g[s][1][idx]) for g in per_seed])
                              for s, idx in zip(seed_pick, item_pick)]))

    point = value(seeds, [np.arange(n)] * len(seeds))
    draws = [value(rng.choice(seeds, len(seeds)), rng.integers(0, n, (len(seeds), n))) for _ in range(N_RESAMPLES)]
    return point, _ci(draws, point), len(seeds)


def probe_table(task: str) -> list[str]:
    """SliCK categories of the training pool, held-out and test items, overall and per relation."""
    path = RESULTS / task / "probe_counts.json"
    if not path.exists():
        return ["*Not probed yet.*"]
    table = json.loads(path.read_text())
    lines = ["| items | group | " + " | ".join(CATEGORIES) + " | known (any right) |",
             "|---|---|" + "---|" * (len(CATEGORIES) + 1)]
    for split, groups in table.items():
        for group, counts in groups.items():
            total = sum(counts.get(c, 0) for c in CATEGORIES)
            lines.append(f"| {split} | {group} | " + " | ".join(str(counts.get(c, 0)) for c in CATEGORIES) +
                         f" | {counts['known']} of {total} ({counts['known'] / total:.0%}) |")
    return lines


def method_table(task: str, groups: dict, test_known: dict[str, bool]) -> list[str]:
    """Per (mix, method, model): accuracy, the ECE of each confidence kind, AUROC, accuracy on known/unknown."""
    lines = ["| training mix | method | model | seeds | EM accuracy | ECE seq. prob. | ECE seq. mean | ECE P(True) | "
             "ECE verbalized (unparsed) | AUROC seq. prob. | acc. known / unknown test items | confidence known / "
             "unknown |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (mix, method, model), per_seed in groups.items():
        ids = sorted(next(iter(per_seed.values())))
        known = np.array([test_known.get(i) is True for i in ids])
        unknown = np.array([test_known.get(i) is False for i in ids])
        arr = {k: {s: _arrays(r, ids, k) for s, r in per_seed.items()} for k in KINDS if k in
               next(iter(next(iter(per_seed.values())).values()))["confidences"]}
        acc, acc_ci, n_seeds = _bootstrap([arr["seq_prob"]], lambda a: a[1].mean())
        cells = [f"{acc:.3f} [{acc_ci[0]:.3f}, {acc_ci[1]:.3f}]"]
        for kind in ("seq_prob", "seq_prob_mean", "ptrue"):
            if kind not in arr:
                cells.append("—")
                continue
            e, ci, _ = _bootstrap([arr[kind]], lambda a: _ece(*a))
            cells.append(f"{e:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if kind == "seq_prob" else f"{e:.3f}")
        if "verbalized" in arr:
            unparsed = np.mean([np.isnan(c).sum() for c, _ in arr["verbalized"].values()])
            cells.append(f"{np.mean([_ece(*a) for a in arr['verbalized'].values()]):.3f} ({unparsed:.0f})")
        else:
            cells.append("—")
        cells.append(f"{np.mean([auroc(c, y) for c, y in arr['seq_prob'].values()]):.3f}")
        by = [(np.mean([y[m].mean() for _, y in arr["seq_prob"].values()]),
               np.mean([c[m].mean() for c, _ in arr["seq_prob"].values()])) for m in (known, unknown)]
        cells += [f"{by[0][0]:.3f} / {by[1][0]:.3f}", f"{by[0][1]:.3f} / {by[1][1]:.3f}"]
        lines.append(f"| {mix} | {method} | {model} | {n_seeds} | " + " | ".join(cells) + " |")
    return lines


def _paired(groups: dict, a: tuple, b: tuple, stat) -> tuple[float, tuple[float, float], int] | None:
    """``stat(a) − stat(b)`` over the seeds both have, with its paired interval."""
    if a not in groups or b not in groups:
        return None
    ids = sorted(next(iter(groups[a].values())))
    ga = {s: _arrays(r, ids, "seq_prob") for s, r in groups[a].items()}
    gb = {s: _arrays(r, ids, "seq_prob") for s, r in groups[b].items()}
    return _bootstrap([ga, gb], lambda x, y: stat(x) - stat(y))


def slick_finding(groups: dict, mixes: list[str]) -> list[str]:
    """SliCK: fitting Unknown items lowers test accuracy (more hallucination), most once training converged."""
    if len(mixes) < 2:
        return []
    known_mix, unknown_mix = mixes[0], mixes[-1]
    lines = []
    for model in ("end", "best"):
        d = _paired(groups, (unknown_mix, "sft", model), (known_mix, "sft", model), lambda a: a[1].mean())
        if d:
            lines.append(f"- SFT, {'final' if model == 'end' else 'early-stopped'} model: EM accuracy with "
                         f"`{unknown_mix}` minus `{known_mix}` training items: {100 * d[0]:+.1f} points "
                         f"[{100 * d[1][0]:+.1f}, {100 * d[1][1]:+.1f}] ({d[2]} seeds).")
    for mix in (known_mix, unknown_mix):
        d = _paired(groups, (mix, "sft", "end"), (mix, "sft", "best"), lambda a: a[1].mean())
        if d:
            lines.append(f"- SFT on `{mix}`: final minus early-stopped EM accuracy {100 * d[0]:+.1f} points "
                         f"[{100 * d[1][0]:+.1f}, {100 * d[1][1]:+.1f}].")
    if lines:
        main = _paired(groups, (unknown_mix, "sft", "end"), (known_mix, "sft", "end"), lambda a: a[1].mean())
        verdict = ("reproduced" if main[1][1] < 0 else "not seen (interval includes 0)" if main[1][0] <= 0
                   else "refuted (Unknown items helped)")
        lines.append(f"- Verdict on SliCK's finding (Unknown training items raise hallucination at convergence): "
                     f"**{verdict}**.")
    return lines


def cogcalib_vs_sft(groups: dict, methods: list[str]) -> list[str]:
    """ΔECE (sequence probability) and Δaccuracy of each CogCalib variant vs SFT on the same training mix."""
    lines = []
    for mix, method, model in groups:
        if method in ("sft", "base", "base-4shot") or mix == "—":
            continue
        ref = (mix, "sft", model)
        de = _paired(groups, (mix, method, model), ref, lambda a: _ece(*a))
        da = _paired(groups, (mix, method, model), ref, lambda a: a[1].mean())
        if de and da:
            sft_ece = _bootstrap([{s: _arrays(r, sorted(r), "seq_prob") for s, r in groups[ref].items()}],
                                 lambda a: _ece(*a))[0]
            lines.append(f"- {method} vs SFT (`{mix}`, {'final' if model == 'end' else 'early-stopped'}): ΔECE "
                         f"{de[0]:+.3f} [{de[1][0]:+.3f}, {de[1][1]:+.3f}] ({100 * de[0] / sft_ece:+.0f} % of SFT's "
                         f"{sft_ece:.3f}), Δaccuracy {100 * da[0]:+.1f} points [{100 * da[1][0]:+.1f}, "
                         f"{100 * da[1][1]:+.1f}].")
    return lines


def curve_table(task: str) -> list[str]:
    """Held-out curve (mean over seeds) of each trained method: EM accuracy / ECE / confidence by step."""
    curves: dict[tuple[str, str], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for c in _cells(task):
        path = c["dir"] / "curve.json"
        if c["mix"] is None or not path.exists():
            continue
        for point in json.loads(path.read_text()):
            curves[(c["mix"], c["method"])][point["step"]].append(point)
    if not curves:
        return []
    lines = ["| training mix | method | step | EM accuracy | ECE | confidence | known acc / conf | unknown acc / conf |",
             "|---|---|---|---|---|---|---|---|"]

    def mean(points: list[dict], key: str) -> str:
        vals = [p[key] for p in points if p.get(key) is not None]
        return f"{np.mean(vals):.3f}" if vals else "—"

    for (mix, method), steps in curves.items():
        for step, points in sorted(steps.items()):
            lines.append(f"| {mix} | {method} | {step} | {mean(points, 'heldout_accuracy')} | "
                         f"{mean(points, 'heldout_ece')} | {mean(points, 'heldout_confidence')} | "
                         f"{mean(points, 'heldout_known_accuracy')} / {mean(points, 'heldout_known_confidence')} | "
                         f"{mean(points, 'heldout_unknown_accuracy')} / {mean(points, 'heldout_unknown_confidence')} |")
    return lines


def section() -> list[str]:
    """The open-QA part of the results page."""
    cfg = yaml.safe_load((EXPERIMENTS / "open_qa.yaml").read_text())
    train = cfg["train"]["training"]
    out = ["# Open-ended QA (issue 13): SliCK's known/unknown split, SFT vs CogCalib on free-form answers", "",
           f"Command: `make experiments-open-qa`. SmolLM2-135M-Instruct, LoRA r {cfg['train']['lora']['r']}, "
           f"{train['num_train_epochs']} epochs at batch {train['per_device_train_batch_size']}, lr "
           f"{train['learning_rate']}, token-level objectives on the answer tokens, 0-shot `Q: … A:` prompts; "
           f"held-out curve every {cfg['train']['eval_every']} steps (greedy answers). SliCK probe: "
           f"{cfg['probe']['n_prompts']} prompts × {cfg['probe']['shots']} exemplars, greedy + "
           f"{cfg['probe']['n_samples']} samples; Unknown = never right. Test: greedy answers, normalised exact "
           "match against every alias; the test items' known/unknown split is the base model's probe.", ""]
    for task in cfg["tasks"]:
        name = task["name"]
        mixes = [m["name"] for m in cfg["mixes"]]
        out += [f"## {name}", "", f"Pool `{task['pool']}` (limit {task.get('pool_limit')}), held-out "
                f"`{task['heldout']}`, test `{task['test']}`, {task['train_size']} training items per cell.", "",
                "SliCK categories (probe of the base model):", "", *probe_table(name), ""]
        groups = _groups(name)
        if not groups:
            out += ["*No cell finished yet.*", ""]
            continue
        test_probe = RESULTS / name / "test_probe.jsonl"
        test_known = {r["id"]: bool(r["known"]) for r in
                      (json.loads(line) for line in test_probe.read_text().splitlines() if line.strip())}
        out += ["Test set, per model (`end`: end of training, `best`: best held-out EM step):", "",
                *method_table(name, groups, test_known), ""]
        out += ["SliCK's finding:", "", *(slick_finding(groups, mixes) or ["*Needs both mixes.*"]), ""]
        out += ["CogCalib vs SFT:", "", *(cogcalib_vs_sft(groups, [m["name"] for m in cfg["methods"]]) or
                                          ["*No CogCalib cell yet.*"]), ""]
        out += ["Held-out curves (mean over seeds):", "", *curve_table(name), ""]
    return out
