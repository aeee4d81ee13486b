"""Calibration of free-form short answers: greedy answers, three kinds of confidence, correctness, judge.

For each question the model answers greedily (:func:`calibtune.generation.generate_answers`: stop at a
newline, an end-of-sequence token or ``max_new_tokens``) after a k-shot prompt
(:mod:`calibtune.open_prompts`). Each answer gets these confidences:

* ``seq_prob``: the product of the generated tokens' probabilities (terminator included), and
  ``seq_prob_mean``: their per-token geometric mean, :math:`\\exp(\\frac1T\\sum_t \\log p_t)`;
* ``ptrue`` (Kadavath et al. 2022): the model is shown the question and its answer and asked whether
  the answer is correct; :math:`P(\\text{True}) / (P(\\text{True}) + P(\\text{False}))` from the
  likelihoods of the two continuations (cloze scoring: for single-token words exactly the ratio of
  the next-token probabilities);
* ``verbalized``: the model is asked for a confidence from 0 to 100 and its greedy reply is parsed by
  :func:`parse_verbalized`; a reply with no number (``missing``) or a number outside [0, 100]
  (``out_of_range``) has no confidence, is counted and reported, and is left out of that kind's
  metrics only.

Correctness: ``em`` (SQuAD-normalised exact match against every alias), ``f1`` (best token F1 over the
aliases ``>= f1_threshold``), and with a judge model ``judge`` (a local causal LM asked the yes/no
question :data:`calibtune.open_prompts.JUDGE_PROMPT`; correct iff P(Yes) > 0.5). One of them is the
``correctness`` the calibration metrics use; the accuracy under every criterion is reported.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .answers import exact_match, token_f1
from .data import Dataset, OpenItem, exemplar_pool, load_dataset
from .generation import Generation, generate_answers
from .metrics import reliability_bins, report_metrics, summarize
from .open_prompts import (
    JUDGE_PROMPT,
    PTRUE_PROMPT,
    VERBALIZED_PROMPT,
    QATemplate,
    exemplar_seed,
    get_qa_template,
    judge_prompt,
    pick_exemplars,
)
from .io import atomic_write, write_jsonl
from .scoring import ScoringRequest, score

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .evaluate import EvalConfig

__all__ = [
    "CONFIDENCE_KINDS",
    "CONFIDENCE_METHODS",
    "CORRECTNESS",
    "answer_questions",
    "check_open_config",
    "evaluate_open",
    "is_open",
    "judge_p_yes",
    "open_metrics",
    "open_rows",
    "parse_verbalized",
    "ptrue_confidence",
    "sequence_confidences",
    "verbalized_confidence",
]

CONFIDENCE_METHODS = ("ptrue", "verbalized")  # the extra kinds to compute; seq_prob(_mean) come with every answer
CONFIDENCE_KINDS = ("seq_prob", "seq_prob_mean", "ptrue", "verbalized")
CORRECTNESS = ("em", "f1", "judge")
REPORT_COLUMNS = ("data", "confidence", "n", *report_metrics(class_probs=False), "n_unparsed")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_verbalized(reply: str) -> tuple[float | None, str]:
    """A reply to the 0–100 question → ``(confidence in [0, 1] or None, status)``.

    The first number in the reply is read as a percentage (``"80"``, ``"80%"``, ``"about 80.5 %"``,
    ``"0.8"`` is 0.8 %); status ``ok``, ``out_of_range`` (below 0 or above 100) or ``missing`` (no number).

    Example:
        >>> parse_verbalized(" about 80 %"), parse_verbalized("150"), parse_verbalized("no idea")
        ((0.8, 'ok'), (None, 'out_of_range'), (None, 'missing'))
    """
    match = _NUMBER.search(reply)
    if match is None:
        return None, "missing"
    value = float(match.group())
    if not 0.0 <= value <= 100.0:
        return None, "out_of_range"
    return value / 100.0, "ok"


def answer_questions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    template: QATemplate,
    items: Sequence[OpenItem],
    *,
    shots: int = 0,
    pool: Sequence[OpenItem] | None = None,
    seed: int = 0,
    max_new_tokens: int = 16,
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[list[str], list[Generation]]:
    """The prompts and the greedy answers to ``items`` (``shots`` seeded exemplars per item from ``pool``)."""
    if shots and not pool:
        raise ValueError(f"{shots}-shot prompts need an exemplar pool")
    prompts = [template.prompt(it, pick_exemplars(it, pool, shots, exemplar_seed(seed, it.id)) if shots else ())
               for it in items]
    return prompts, generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size, progress=progress, desc="answering")


def sequence_confidences(generation: Generation) -> dict[str, float]:
    """``seq_prob`` (product of token probabilities) and ``seq_prob_mean`` (their geometric mean)."""
    return {"seq_prob": math.exp(generation.logprob), "seq_prob_mean": math.exp(generation.mean_logprob)}


def _two_way(model, tokenizer, requests: list[ScoringRequest], batch_size: int, progress: bool) -> list[float]:
    """P(first continuation) / (P(first) + P(second)) per request, from the continuations' likelihoods."""
    logprobs = score(model, tokenizer, requests, scoring="cloze", normalize="sum", batch_size=batch_size,
                     progress=progress)
    return [float(np.exp(lp[0])) for lp in logprobs]


def ptrue_confidence(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, template: QATemplate,
                     items: Sequence[OpenItem], answers: Sequence[str], *, batch_size: int = 8,
                     progress: bool = True) -> list[float]:
    """P(True) of each answer: the model's probability that its own answer is correct."""
    requests = [ScoringRequest(*template.ptrue(it, a)) for it, a in zip(items, answers)]
    return _two_way(model, tokenizer, requests, batch_size, progress)


def verbalized_confidence(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, template: QATemplate,
                          items: Sequence[OpenItem], answers: Sequence[str], *, max_new_tokens: int = 8,
                          batch_size: int = 8, progress: bool = True) -> list[tuple[str, float | None, str]]:
    """Per answer, ``(reply, parsed confidence or None, status)`` of the 0–100 question."""
    prompts = [template.verbalized(it, a) for it, a in zip(items, answers)]
    replies = generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               progress=progress, desc="verbalized confidence")
    return [(g.text, *parse_verbalized(g.text)) for g in replies]


def judge_p_yes(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, items: Sequence[OpenItem],
                answers: Sequence[str], *, batch_size: int = 8, progress: bool = True) -> list[float]:
    """The judge's P(Yes) / (P(Yes) + P(No)) that each answer means one of the gold aliases."""
    requests = [ScoringRequest(judge_prompt(it, a), (" Yes", " No")) for it, a in zip(items, answers)]
    return _two_way(model, tokenizer, requests, batch_size, progress)


def open_rows(
    dataset: str,
    items: Sequence[OpenItem],
    generations: Sequence[Generation],
    *,
    ptrue: Sequence[float] | None = None,
    verbalized: Sequence[tuple[str, float | None, str]] | None = None,
    judge: Sequence[float] | None = None,
    f1_threshold: float = 0.5,
    correctness: str = "em",
) -> list[dict[str, Any]]:
    """One predictions record per item. ``confidence``/``correct`` are the sequence probability and the
    chosen correctness, so the file is readable by ``calibtune metrics``; every other kind is kept beside."""
    if correctness not in CORRECTNESS:
        raise ValueError(f"correctness must be one of {CORRECTNESS}, got {correctness!r}")
    if correctness == "judge" and judge is None:
        raise ValueError("correctness 'judge' needs a judge model")
    rows = []
    for i, (item, gen) in enumerate(zip(items, generations)):
        f1 = token_f1(gen.text, item.answers)
        row: dict[str, Any] = {
            "dataset": dataset, "id": item.id, "question": item.question, "answers": list(item.answers),
            "answer": gen.text, "stop": gen.stop, "n_tokens": len(gen.token_ids), "logprob": gen.logprob,
            "em": int(exact_match(gen.text, item.answers)), "f1": f1, "f1_correct": int(f1 >= f1_threshold),
        }
        confidences = sequence_confidences(gen)
        if ptrue is not None:
            confidences["ptrue"] = ptrue[i]
        if verbalized is not None:
            reply, value, status = verbalized[i]
            confidences["verbalized"] = value
            row.update(verbalized_reply=reply, verbalized_status=status)
        if judge is not None:
            row.update(judge_p_yes=judge[i], judge=int(judge[i] > 0.5))
        row["confidences"] = confidences
        row["correct"] = row["f1_correct" if correctness == "f1" else correctness]
        row["confidence"] = confidences["seq_prob"]
        rows.append(row)
    return rows


def open_metrics(rows: Sequence[dict[str, Any]], *, n_bins: int = 15, bootstrap: int = 0,
                 seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per confidence kind present in ``rows``: the metric battery of the confidence against ``correct``.

    Verbalized confidence counts only parsed replies; ``n_unparsed`` (with ``n_missing`` and
    ``n_out_of_range``) says how many were left out. Each entry also has the accuracy under every
    correctness criterion on the same items (``accuracy_em``, ``accuracy_f1``, ``accuracy_judge``).
    """
    out = {}
    for kind in CONFIDENCE_KINDS:
        if kind not in rows[0]["confidences"]:
            continue
        used = [r for r in rows if r["confidences"][kind] is not None]
        entry: dict[str, Any] = {"confidence": kind}
        if used:
            conf = np.array([r["confidences"][kind] for r in used], dtype=np.float64)
            entry.update(summarize(conf, np.array([r["correct"] for r in used]), n_bins=n_bins,
                                   bootstrap=bootstrap, seed=seed))
        else:
            entry["n"] = 0
        for name, key in (("em", "em"), ("f1", "f1_correct"), ("judge", "judge")):
            if used and key in used[0]:
                entry[f"accuracy_{name}"] = float(np.mean([r[key] for r in used]))
        if kind == "verbalized":
            statuses = [r["verbalized_status"] for r in rows]
            entry.update(n_unparsed=len(rows) - len(used), n_missing=statuses.count("missing"),
                         n_out_of_range=statuses.count("out_of_range"))
        out[kind] = entry
    return out


def is_open(datasets: Sequence[Dataset]) -> bool:
    """Whether the data sets hold open questions; mixing them with multiple choice in one run is an error."""
    kinds = {isinstance(it, OpenItem) for ds in datasets for it in ds.items}
    if len(kinds) > 1:
        names = ", ".join(ds.name for ds in datasets)
        raise ValueError(f"{names}: mixes multiple-choice and open questions; evaluate them in separate runs")
    return kinds == {True}


def _pool(ds: Dataset, cfg: EvalConfig) -> tuple[Sequence[OpenItem] | None, str | None]:
    """The exemplar pool: another split of the data set, or the whole data set (an item is never its own)."""
    if not cfg.shots:
        return None, None
    pool = exemplar_pool(ds.name, data_dir=cfg.data_dir)
    if pool is None:
        spec = ds.name.split("[", 1)[0]
        pool = load_dataset(spec, data_dir=cfg.data_dir)
    return pool.items, pool.name


def check_open_config(cfg: EvalConfig) -> None:
    """Refuse settings that do not apply to open questions, before any model is loaded."""
    if cfg.temperature_data:
        raise ValueError("--temperature-data applies to multiple-choice data only, not to open questions")
    bad = [c for c in cfg.confidence if c not in CONFIDENCE_METHODS]
    if bad:
        raise ValueError(f"--confidence must be among {CONFIDENCE_METHODS}, got {bad}")
    if cfg.correctness not in CORRECTNESS:
        raise ValueError(f"--correctness must be one of {CORRECTNESS}, got {cfg.correctness!r}")
    if cfg.correctness == "judge" and not cfg.judge:
        raise ValueError("--correctness judge needs --judge MODEL")
    if not 0.0 < cfg.f1_threshold <= 1.0:
        raise ValueError(f"--f1-threshold must be in (0, 1], got {cfg.f1_threshold}")
    if cfg.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {cfg.max_new_tokens}")
    if cfg.qa_template not in ("qa", "chat"):
        get_qa_template(cfg.qa_template)  # a bad template file
    if cfg.batch_size == "auto":
        raise ValueError("--batch-size auto sizes option scoring; short-answer generation needs a number")
    if cfg.judge:
        from .models import resolve_model

        resolve_model(cfg.judge)


def evaluate_open(cfg: EvalConfig, out: Path, datasets: Sequence[Dataset]) -> dict[str, Any]:
    """``calibtune eval`` on short-answer data sets: writes predictions, metrics, diagrams and the report."""
    from .devices import parse_batch_size
    from .evaluate import package_versions
    from .models import load_model
    from .reports import markdown_table, reliability_grid

    check_open_config(cfg)
    pools = {ds.name: _pool(ds, cfg) for ds in datasets}
    t0 = time.perf_counter()
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, adapter=cfg.adapter,
                                  trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation)
    judge_model = None
    if cfg.judge:
        judge_model = ((model, tokenizer) if cfg.judge == cfg.model and not cfg.adapter else
                       load_model(cfg.judge, dtype=cfg.dtype, device=cfg.device,
                                  trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation))
    load_seconds = time.perf_counter() - t0
    template = get_qa_template(cfg.qa_template, tokenizer)
    common = dict(batch_size=parse_batch_size(cfg.batch_size), progress=cfg.progress)
    all_rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    example_prompts: dict[str, str] = {}
    panels = []
    for ds in datasets:
        t1 = time.perf_counter()
        items = list(ds.items)
        pool, pool_name = pools[ds.name]
        prompts, gens = answer_questions(model, tokenizer, template, items, shots=cfg.shots, pool=pool,
                                         seed=cfg.seed, max_new_tokens=cfg.max_new_tokens, **common)
        example_prompts.setdefault(ds.name, prompts[0])
        answers = [g.text for g in gens]
        ptrue = (ptrue_confidence(model, tokenizer, template, items, answers, **common)
                 if "ptrue" in cfg.confidence else None)
        verbal = (verbalized_confidence(model, tokenizer, template, items, answers, **common)
                  if "verbalized" in cfg.confidence else None)
        judge = judge_p_yes(*judge_model, items, answers, **common) if judge_model else None
        seconds = time.perf_counter() - t1
        rows = open_rows(ds.name, items, gens, ptrue=ptrue, verbalized=verbal, judge=judge,
                         f1_threshold=cfg.f1_threshold, correctness=cfg.correctness)
        all_rows.extend(rows)
        stops = {s: sum(r["stop"] == s for r in rows) for s in ("newline", "eos", "max_tokens")}
        for kind, m in open_metrics(rows, n_bins=cfg.n_bins, bootstrap=cfg.bootstrap, seed=cfg.seed).items():
            key = f"{ds.name} · {kind}"
            m.update({"data": ds.name, "scoring": "generate", "correctness": cfg.correctness,
                      "exemplar_pool": pool_name, "stops": stops})
            if kind == "seq_prob":  # per data set, once
                m.update(seconds=round(seconds, 2), items_per_second=round(len(rows) / seconds, 3) if seconds else None,
                         n_skipped=ds.n_skipped)
            results[key] = m
            if m["n"]:
                conf = [r["confidences"][kind] for r in rows if r["confidences"][kind] is not None]
                correct = [r["correct"] for r in rows if r["confidences"][kind] is not None]
                panels.append((key, reliability_bins(np.array(conf), np.array(correct), n_bins=cfg.n_bins), m["ece"]))
    write_jsonl(out / "predictions.jsonl", all_rows)
    follow_up = {"ptrue": PTRUE_PROMPT, "verbalized": VERBALIZED_PROMPT, **({"judge": JUDGE_PROMPT} if cfg.judge else {})}
    report = {"config": dataclasses.asdict(cfg), "versions": package_versions(), "task": "open",
              "correctness": {"primary": cfg.correctness, "f1_threshold": cfg.f1_threshold,
                              "judge": cfg.judge, "judge_rule": "correct iff P(Yes) > 0.5"},
              "prompts": follow_up, "answer_prompt_example": example_prompts,
              "model_load_seconds": round(load_seconds, 2), "results": results}
    with atomic_write(out / "metrics.json") as fh:
        json.dump(report, fh, indent=2)
    if panels:
        reliability_grid(panels, out / "reliability.png")
    _write_report(cfg, out, report, markdown_table)
    return report


def _write_report(cfg: EvalConfig, out: Path, report: dict[str, Any], markdown_table) -> None:
    rows = list(report["results"].values())
    accuracy = [{"data": r["data"], **{f"accuracy_{c}": r.get(f"accuracy_{c}") for c in CORRECTNESS},
                 **{f"stop_{k}": v for k, v in r["stops"].items()}}
                for r in rows if r["confidence"] == "seq_prob"]
    prompt_text = "\n\n".join(f"{name}:\n\n```\n{text}\n```" for name, text in report["prompts"].items())
    md = (f"# Calibration report (open questions): `{cfg.model}`\n\n"
          f"Template `{cfg.qa_template}`, {cfg.shots}-shot, seed {cfg.seed}, greedy answers of at most "
          f"{cfg.max_new_tokens} tokens (stop at a newline or end of sequence), dtype {cfg.dtype}. "
          f"Correctness for calibration: `{cfg.correctness}` (em: SQuAD-normalised exact match with any alias; "
          f"f1: best token F1 >= {cfg.f1_threshold}"
          + (f"; judge: `{cfg.judge}`, correct iff P(Yes) > 0.5" if cfg.judge else "") + "). "
          f"{cfg.n_bins} equal-width bins.\n\n"
          "## Calibration per confidence kind\n\n" + markdown_table(rows, REPORT_COLUMNS) +
          "\n`n_unparsed`: verbalized replies without a number in [0, 100], left out of that row "
          "(`predictions.jsonl` keeps each reply and its status).\n\n"
          "## Accuracy and stop reasons\n\n" +
          markdown_table(accuracy, ["data", *(f"accuracy_{c}" for c in CORRECTNESS), "stop_newline", "stop_eos",
                                    "stop_max_tokens"]) +
          ("\n![reliability diagrams](reliability.png)\n" if (out / "reliability.png").exists() else "") +
          f"\n## Prompts\n\n{prompt_text}\n\n"
          "Per-item answers, every confidence and correctness: `predictions.jsonl` (`confidence`/`correct` "
          "are the sequence probability and the chosen correctness, readable by `calibtune metrics`).\n")
    with atomic_write(out / "report.md") as fh:
        fh.write(md)
