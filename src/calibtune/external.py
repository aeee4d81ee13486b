"""Option scores written by other tools, read as calibtune option distributions.

Two formats besides calibtune's own predictions (:mod:`calibtune.predictions`):

* **lm-evaluation-harness samples** (``lm_eval ... --log_samples``: ``samples_<task>_<time>.jsonl``)
  of a multiple-choice task: per document, the log-likelihood of every choice. The option
  distribution is the softmax of the scores that lm-eval's own metric takes the argmax of
  (lm-eval 0.4.13, ``ConfigurableTask.process_results``):

  - ``acc``: the log-likelihoods themselves;
  - ``acc_norm``: divided by each choice's length in characters (``len(choice)``, without the
    target delimiter that precedes it in the request);
  - ``acc_bytes``: divided by its length in UTF-8 bytes;
  - ``acc_mutual_info``: minus the choice's unconditional log-likelihood (present in the file only
    when the task computed ``acc_mutual_info``).

  Where a record carries lm-eval's own 0/1 value of that metric, the argmax here must agree with it,
  or the file is refused (naming the line): the normalisation was misread (e.g. the delimiter).
* **per-option log-likelihoods**, one JSON object per line:
  ``{"id": "q1", "loglikelihoods": [-4.1, -2.3, -7.0], "label": 1}``; the option distribution is
  their softmax.

:func:`read_option_scores` reads any of the three (calibtune predictions give their ``logprobs``)
and :func:`read_scored` gives :class:`~calibtune.predictions.Predictions` for the metrics.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .metrics import pad_probabilities
from .predictions import Predictions, PredictionsError, jsonl_records, read_predictions

__all__ = ["LM_EVAL_METRICS", "OptionScores", "detect_format", "read_option_scores", "read_scored"]

LmEvalMetric = Literal["acc", "acc_norm", "acc_bytes", "acc_mutual_info"]
LM_EVAL_METRICS: tuple[str, ...] = ("acc", "acc_norm", "acc_bytes", "acc_mutual_info")
Format = Literal["lm-eval", "loglikelihoods", "predictions"]
DEFAULT_DELIMITER = " "  # lm-eval's default target_delimiter


@dataclass(frozen=True)
class OptionScores:
    """Per item the scores of its options (softmax = the option distribution) and the gold index."""

    path: str
    format: str
    normalization: str  # lm-eval metric the scores follow, or "none"
    ids: tuple[str, ...]
    scores: tuple[np.ndarray, ...]
    labels: np.ndarray

    @property
    def n(self) -> int:
        return len(self.labels)

    def probabilities(self) -> list[np.ndarray]:
        """Softmax of each item's scores (float64)."""
        return [np.exp(s - np.logaddexp.reduce(s)) for s in self.scores]

    def to_predictions(self) -> Predictions:
        """The option distributions as zero-padded ``probs`` with a ``mask`` of real options."""
        probs, mask = pad_probabilities(self.probabilities())
        return Predictions(self.path, probs=probs, mask=mask, labels=self.labels)


def _first_record(path: Path) -> dict[str, Any] | None:
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            if line.strip():
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    return None
                return rec if isinstance(rec, dict) else None
    return None


def detect_format(path: str | Path) -> Format:
    """Which of the three formats ``path`` holds, from its first record (CSV is always predictions)."""
    p = Path(path)
    if not p.is_file():
        raise PredictionsError(f"{p}: no such file" if not p.exists() else f"{p}: is a folder, not a predictions file")
    if p.suffix.lower() == ".csv":
        return "predictions"
    rec = _first_record(p) or {}
    if "doc_id" in rec and ("filtered_resps" in rec or "resps" in rec):
        return "lm-eval"
    if "loglikelihoods" in rec:
        return "loglikelihoods"
    return "predictions"


def _finite(value: Any, where: str, field: str) -> float:
    """A finite float from a number or lm-eval's stringified number."""
    try:
        x = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise PredictionsError(f"{where}: field '{field}' = {value!r} is not a number") from None
    if not math.isfinite(x):
        raise PredictionsError(f"{where}: field '{field}' is {value!r}; NaN and inf are not allowed")
    return x


def _lm_eval_delimiter(path: Path, task: str | None) -> str:
    """The task's ``target_delimiter`` from the ``results_<time>.json`` lm-eval wrote beside the samples."""
    m = re.fullmatch(r"samples_(?P<task>.+)_(?P<time>[^_]+)\.jsonl", path.name)
    if not m:
        return DEFAULT_DELIMITER
    results = path.with_name(f"results_{m['time']}.json")
    try:
        configs = json.loads(results.read_text(encoding="utf-8"))["configs"]
        return str(configs[task or m["task"]]["target_delimiter"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_DELIMITER


def _lm_eval_arguments(rec: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """``(context, continuation)`` per request: 0.4.x dicts ``{"gen_args_0": {"arg_0": ..., "arg_1": ...}}``
    or the older list of pairs."""
    args = rec.get("arguments")
    if isinstance(args, dict):
        pairs = [(a.get("arg_0"), a.get("arg_1")) if isinstance(a, dict) else (None, None) for a in args.values()]
    elif isinstance(args, list):
        pairs = [tuple(a) if isinstance(a, (list, tuple)) and len(a) == 2 else (None, None) for a in args]
    else:
        raise PredictionsError(f"{where}: field 'arguments' missing or not a list/object of (context, continuation)")
    for k, (ctx, cont) in enumerate(pairs):
        if not isinstance(ctx, str) or not isinstance(cont, str):
            raise PredictionsError(f"{where}: field 'arguments' entry {k} is not a (context, continuation) pair "
                                   "of texts: not a multiple-choice loglikelihood task")
    return pairs


def _lm_eval_item(rec: dict[str, Any], where: str, metric: str, delimiter: str) -> tuple[str, np.ndarray, int]:
    """``(id, scores, gold)`` of one lm-eval sample."""
    pairs = _lm_eval_arguments(rec, where)
    resps = rec.get("filtered_resps", rec.get("resps"))
    if not isinstance(resps, list) or len(resps) != len(pairs):
        raise PredictionsError(f"{where}: field 'filtered_resps' must hold one (loglikelihood, is_greedy) per "
                               f"request ({len(pairs)}), got {resps!r:.80}")
    lls = []
    for k, r in enumerate(resps):
        while isinstance(r, list) and len(r) == 1 and isinstance(r[0], list):  # unfiltered resps nest once more
            r = r[0]
        if not isinstance(r, (list, tuple)) or not r:
            raise PredictionsError(f"{where}: field 'filtered_resps[{k}]' is not a (loglikelihood, is_greedy) pair")
        lls.append(_finite(r[0], where, f"filtered_resps[{k}]"))
    k = len(pairs)
    with_unconditional = (k % 2 == 0 and "acc_mutual_info" in (rec.get("metrics") or [])
                          and all(ctx == "" for ctx, _ in pairs[k // 2:]))
    if with_unconditional:
        k //= 2
    if k < 2:
        raise PredictionsError(f"{where}: {k} choice(s); a multiple-choice item needs at least 2")
    conts = [cont for _, cont in pairs[:k]]
    choices = [c[len(delimiter):] if delimiter and c.startswith(delimiter) else c for c in conts]
    ll = np.array(lls[:k])
    if metric == "acc":
        scores = ll
    elif metric in ("acc_norm", "acc_bytes"):
        lengths = np.array([float(len(c) if metric == "acc_norm" else len(c.encode("utf-8"))) for c in choices])
        if (lengths == 0).any():
            raise PredictionsError(f"{where}: choice {int(np.argmin(lengths))} is empty; {metric} divides by its length")
        scores = ll / lengths
    elif metric == "acc_mutual_info":
        if not with_unconditional:
            raise PredictionsError(f"{where}: no unconditional log-likelihoods (the task did not compute "
                                   "acc_mutual_info); use acc, acc_norm or acc_bytes")
        scores = ll - np.array(lls[k:])
    else:
        raise ValueError(f"Expected an lm-eval metric in {LM_EVAL_METRICS}, got {metric!r}")
    gold = _lm_eval_gold(rec.get("target"), choices, where)
    recorded = rec.get(metric)
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool):
        ours = float(int(np.argmax(scores)) == gold)
        if ours != float(recorded):
            raise PredictionsError(f"{where}: field '{metric}': lm-eval recorded {recorded}, but the {metric} "
                                   f"scores read here give {ours} (doc_id {rec.get('doc_id')}); was the task's "
                                   f"target_delimiter {delimiter!r}?")
    return str(rec.get("doc_id")), scores, gold


def _lm_eval_gold(target: Any, choices: Sequence[str], where: str) -> int:
    """lm-eval's gold: an index (int or digit string) or the text of a choice; several golds are refused."""
    if isinstance(target, str) and re.fullmatch(r"\s*\d+\s*", target):
        target = int(target)
    if isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < len(choices):
            raise PredictionsError(f"{where}: field 'target' = {target} is out of range for {len(choices)} choices")
        return target
    if isinstance(target, str) and target in choices:
        return list(choices).index(target)
    raise PredictionsError(f"{where}: field 'target' = {target!r} is neither a choice index nor one choice's text "
                           "(tasks with several correct choices are not supported)")


def _read_lm_eval(path: Path, metric: str) -> OptionScores:
    if metric not in LM_EVAL_METRICS:
        raise ValueError(f"--lm-eval-metric must be one of {', '.join(LM_EVAL_METRICS)}, got {metric!r}")
    ids, scores, labels = [], [], []
    delimiter: str | None = None
    seen: dict[tuple[Any, Any], str] = {}
    for where, rec in jsonl_records(path):
        if "doc_id" not in rec:
            raise PredictionsError(f"{where}: missing field 'doc_id' (not an lm-eval samples line)")
        key = (rec["doc_id"], rec.get("filter"))
        if key in seen:
            raise PredictionsError(f"{where}: doc_id {rec['doc_id']} (filter {rec.get('filter')!r}) repeats "
                                   f"{seen[key]}; pass one task's samples file")
        seen[key] = where
        if delimiter is None:
            delimiter = _lm_eval_delimiter(path, None)
        doc_id, s, gold = _lm_eval_item(rec, where, metric, delimiter)
        ids.append(doc_id)
        scores.append(s)
        labels.append(gold)
    if not ids:
        raise PredictionsError(f"{path}: empty file, no samples")
    return OptionScores(str(path), "lm-eval", metric, tuple(ids), tuple(scores), np.array(labels, dtype=np.int64))


def _read_loglikelihoods(path: Path) -> OptionScores:
    ids, scores, labels = [], [], []
    for where, rec in jsonl_records(path):
        values = rec.get("loglikelihoods")
        if not isinstance(values, list) or len(values) < 2:
            raise PredictionsError(f"{where}: field 'loglikelihoods' must be a list of at least 2 numbers, "
                                   f"got {values!r:.80}")
        s = np.array([_finite(v, where, f"loglikelihoods[{j}]") for j, v in enumerate(values)])
        label = rec.get("label")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(s):
            raise PredictionsError(f"{where}: field 'label' must be an integer in [0, {len(s)}), got {label!r}")
        ids.append(str(rec.get("id", len(ids))))
        scores.append(s)
        labels.append(label)
    if not ids:
        raise PredictionsError(f"{path}: empty file, no items")
    return OptionScores(str(path), "loglikelihoods", "none", tuple(ids), tuple(scores), np.array(labels, dtype=np.int64))


def _read_calibtune(path: Path, group: str | None) -> OptionScores:
    """calibtune predictions with options: their ``logprobs`` (or the log of ``probs``)."""
    if path.suffix.lower() == ".csv":
        preds = read_predictions(path)
        if preds.probs is None:
            raise PredictionsError(f"{path}: confidence/correct rows carry no option scores; "
                                   "temperature scaling needs per-option probabilities or log-likelihoods")
        rows = [{"probs": p[m].tolist(), "label": int(y)} for p, m, y in zip(preds.probs, preds.mask, preds.labels)]
        records: list[tuple[str, dict[str, Any]]] = [(f"{path}, row {i + 2}", r) for i, r in enumerate(rows)]
    else:
        read_predictions(path)  # validates every line (probabilities, labels) with its own messages
        records = list(jsonl_records(path))
    groups = list(dict.fromkeys(_group_of(r) for _, r in records))
    if group is not None:
        records = [(w, r) for w, r in records if _group_of(r) == group]
        if not records:
            raise PredictionsError(f"{path}: no rows of group {group!r}; groups: {', '.join(map(repr, groups))}")
    elif len(groups) > 1:
        raise PredictionsError(f"{path}: {len(groups)} groups (dataset · scoring): {', '.join(map(repr, groups))}; "
                               "choose one with --group")
    ids, scores, labels = [], [], []
    for where, rec in records:
        if "probs" not in rec:
            raise PredictionsError(f"{where}: confidence/correct rows carry no option scores; temperature scaling "
                                   "needs per-option probabilities or log-likelihoods")
        if isinstance(rec.get("logprobs"), list) and len(rec["logprobs"]) == len(rec["probs"]):
            s = np.array([_finite(v, where, f"logprobs[{j}]") for j, v in enumerate(rec["logprobs"])])
        else:
            s = np.log(np.clip(np.array(rec["probs"], dtype=np.float64), 1e-300, 1.0))
        ids.append(str(rec.get("id", len(ids))))
        scores.append(s)
        labels.append(int(rec["label"]))
    return OptionScores(str(path), "predictions", "none", tuple(ids), tuple(scores), np.array(labels, dtype=np.int64))


def _group_of(rec: dict[str, Any]) -> str:
    return " · ".join(str(rec[k]) for k in ("dataset", "scoring") if k in rec)


def read_option_scores(path: str | Path, *, lm_eval_metric: str = "acc", group: str | None = None) -> OptionScores:
    """Per-item option scores from an lm-eval samples file, a per-option log-likelihood file or calibtune
    predictions (``group`` picks one ``dataset · scoring`` of a predictions file that has several)."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "lm-eval":
        return _read_lm_eval(p, lm_eval_metric)
    if fmt == "loglikelihoods":
        return _read_loglikelihoods(p)
    return _read_calibtune(p, group)


def read_scored(path: str | Path, *, lm_eval_metric: str = "acc") -> Predictions:
    """What ``calibtune metrics`` measures: calibtune predictions as they are, other formats as option distributions."""
    p = Path(path)
    if detect_format(p) == "predictions":
        return read_predictions(p)
    return read_option_scores(p, lm_eval_metric=lm_eval_metric).to_predictions()
