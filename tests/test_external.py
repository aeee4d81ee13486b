"""Other tools' outputs in: lm-eval ``--log_samples`` files (a genuine lm-eval 0.4.13 run, tests/data/lm_eval),
per-option log-likelihood files, and ``calibtune calibrate fit/apply`` on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.external import detect_format, read_option_scores, read_scored
from calibtune.posthoc import TemperatureScaling, load_calibrator
from calibtune.predictions import PredictionsError

runner = CliRunner()
DATA = Path(__file__).parent / "data" / "lm_eval"
RUN = "2026-12-01T22-12-09.814445"
SAMPLES = DATA / f"samples_arc_easy_local_{RUN}.jsonl"  # lm-eval's arc_easy task: acc, acc_norm
SAMPLES_PMI = DATA / f"samples_arc_easy_local_pmi_{RUN}.jsonl"  # + acc_bytes, acc_mutual_info
RESULTS = json.loads((DATA / f"results_{RUN}.json").read_text())["results"]


def _raw(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _direct_scores(rec: dict, metric: str) -> np.ndarray:
    """lm-eval 0.4.13's rule written out from the record's doc: choices = doc["choices"]["text"]."""
    choices = rec["doc"]["choices"]["text"]
    k = len(choices)
    lls = np.array([float(r[0]) for r in rec["filtered_resps"]])
    if metric == "acc":
        return lls[:k]
    if metric == "acc_norm":
        return lls[:k] / np.array([len(c) for c in choices])
    if metric == "acc_bytes":
        return lls[:k] / np.array([len(c.encode()) for c in choices])
    return lls[:k] - lls[k:]


def _ece_by_hand(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE, equal-width bins (lo, hi], confidence 0 in the first bin."""
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        sel = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if sel.any():
            total += sel.sum() / len(conf) * abs(conf[sel].mean() - correct[sel].mean())
    return float(total)


@pytest.mark.parametrize("path, metrics", [(SAMPLES, ["acc", "acc_norm"]),
                                           (SAMPLES_PMI, ["acc", "acc_norm", "acc_bytes", "acc_mutual_info"])])
def test_lm_eval_samples_give_lm_eval_accuracy(path: Path, metrics: list[str]) -> None:
    """Accuracy under each normalisation equals lm-eval's own aggregate for that run, and every item's
    correctness equals the 0/1 value lm-eval logged for it."""
    task = path.name.removeprefix("samples_").removesuffix(f"_{RUN}.jsonl")
    raw = _raw(path)
    assert detect_format(path) == "lm-eval"
    for metric in metrics:
        scores = read_option_scores(path, lm_eval_metric=metric)
        correct = np.array([int(np.argmax(s) == y) for s, y in zip(scores.scores, scores.labels)])
        assert correct.mean() == pytest.approx(RESULTS[task][f"{metric},none"], abs=1e-12)
        assert correct.tolist() == [int(r[metric]) for r in raw]
        for s, rec in zip(scores.scores, raw):
            np.testing.assert_allclose(s, _direct_scores(rec, metric), rtol=0, atol=1e-12)
        assert scores.labels.tolist() == [int(r["target"]) for r in raw]
        assert {len(s) for s in scores.scores} == {3, 4, 5}  # ragged items are kept as they are


@pytest.mark.parametrize("metric", ["acc", "acc_norm"])
def test_metrics_cli_on_lm_eval_samples(metric: str) -> None:
    """`calibtune metrics` on the samples: lm-eval's accuracy, and an ECE equal to a direct computation."""
    res = runner.invoke(app, ["metrics", str(SAMPLES), "--lm-eval-metric", metric, "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["n"] == 40 and doc["accuracy"] == pytest.approx(RESULTS["arc_easy_local"][f"{metric},none"])
    probs = [np.exp(s - np.logaddexp.reduce(s)) for s in (_direct_scores(r, metric) for r in _raw(SAMPLES))]
    labels = np.array([int(r["target"]) for r in _raw(SAMPLES)])
    conf = np.array([p.max() for p in probs])
    correct = np.array([int(np.argmax(p) == y) for p, y in zip(probs, labels)])
    assert doc["ece"] == pytest.approx(_ece_by_hand(conf, correct), abs=1e-12)
    # torchmetrics on the same distributions, under its own binning convention
    torch = pytest.importorskip("torch")
    from torchmetrics.functional.classification import multiclass_calibration_error

    padded = np.zeros((40, 5))
    for i, p in enumerate(probs):
        padded[i, : len(p)] = p
    tm = float(multiclass_calibration_error(torch.tensor(padded), torch.tensor(labels), num_classes=5, n_bins=15))
    res = runner.invoke(app, ["metrics", str(SAMPLES), "--lm-eval-metric", metric, "--format", "json",
                              "--preset", "torchmetrics"])
    assert json.loads(res.stdout)["ece"] == pytest.approx(tm, abs=1e-6)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_lm_eval_samples_that_disagree_with_lm_eval_are_refused(tmp_path: Path) -> None:
    rows = _raw(SAMPLES)
    rows[3]["acc_norm"] = 1.0 - rows[3]["acc_norm"]
    bad = _write(tmp_path / "samples_x.jsonl", rows)
    with pytest.raises(PredictionsError, match=r"samples_x\.jsonl, line 4: field 'acc_norm': lm-eval recorded"):
        read_option_scores(bad, lm_eval_metric="acc_norm")
    with pytest.raises(PredictionsError, match="no unconditional log-likelihoods"):
        read_option_scores(SAMPLES, lm_eval_metric="acc_mutual_info")
    rows = _raw(SAMPLES)
    rows[1]["target"] = [0, 1]
    with pytest.raises(PredictionsError, match=r"line 2: field 'target' = \[0, 1\].*several correct"):
        read_option_scores(_write(tmp_path / "multi.jsonl", rows))
    rows = _raw(SAMPLES)
    rows[2]["filtered_resps"][1] = ["nan", "False"]
    with pytest.raises(PredictionsError, match=r"line 3: field 'filtered_resps\[1\]' is 'nan'"):
        read_option_scores(_write(tmp_path / "nan.jsonl", rows))
    rows = _raw(SAMPLES)
    rows[5]["doc_id"] = rows[4]["doc_id"]
    with pytest.raises(PredictionsError, match=r"line 6: doc_id 4 .* repeats"):
        read_option_scores(_write(tmp_path / "dup.jsonl", rows))


def test_loglikelihood_files(tmp_path: Path) -> None:
    path = _write(tmp_path / "ll.jsonl", [{"id": "a", "loglikelihoods": [-1.0, -2.0, -0.5], "label": 2},
                                          {"id": "b", "loglikelihoods": [-3.0, -1.0], "label": 0}])
    assert detect_format(path) == "loglikelihoods"
    preds = read_scored(path)
    e = np.exp([-1.0, -2.0, -0.5])
    np.testing.assert_allclose(preds.probs[0], e / e.sum())
    np.testing.assert_allclose(preds.probs[1, :2], [1 / (1 + np.e ** 2), np.e ** 2 / (1 + np.e ** 2)])
    assert preds.mask.tolist() == [[True, True, True], [True, True, False]] and preds.labels.tolist() == [2, 0]
    bad = _write(tmp_path / "bad.jsonl", [{"loglikelihoods": [-1.0, -2.0], "label": 2}])
    res = runner.invoke(app, ["metrics", str(bad)])
    assert res.exit_code == 2 and "bad.jsonl, line 1: field 'label' must be an integer in [0, 2)" in res.output


def test_calibrate_fit_and_apply(tmp_path: Path) -> None:
    cal = tmp_path / "cal.json"
    res = runner.invoke(app, ["calibrate", "fit", str(SAMPLES), "--lm-eval-metric", "acc_norm", "--out", str(cal)])
    assert res.exit_code == 0, res.output
    ts, doc = load_calibrator(cal)
    scores = [_direct_scores(r, "acc_norm") for r in _raw(SAMPLES)]
    labels = [int(r["target"]) for r in _raw(SAMPLES)]
    assert ts.temperature_ == pytest.approx(TemperatureScaling().fit(scores, labels).temperature_, rel=1e-9)
    assert doc["normalization"] == "acc_norm" and doc["n"] == 40 and doc["input_format"] == "lm-eval"

    out = tmp_path / "calibrated.jsonl"
    res = runner.invoke(app, ["calibrate", "apply", str(cal), str(SAMPLES_PMI), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = _raw(out)
    for row, rec in zip(rows, _raw(SAMPLES_PMI)):
        z = _direct_scores(rec, "acc_norm") / ts.temperature_
        np.testing.assert_allclose(row["probs"], np.exp(z - np.logaddexp.reduce(z)), rtol=1e-12)
        assert row["label"] == int(rec["target"]) and row["confidence"] == max(row["probs"])
    assert runner.invoke(app, ["metrics", str(out), "--format", "json"]).exit_code == 0

    # a temperature fitted on per-character scores does not apply to raw log-likelihoods
    res = runner.invoke(app, ["calibrate", "apply", str(cal), str(SAMPLES_PMI), "--lm-eval-metric", "acc",
                              "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "fitted on acc_norm scores" in res.output
    # nor is an existing output overwritten without --overwrite
    res = runner.invoke(app, ["calibrate", "apply", str(cal), str(SAMPLES), "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_calibrate_on_calibtune_predictions(tmp_path: Path) -> None:
    """Fitted on the ``logprobs`` of calibtune predictions; a file with two groups needs ``--group``."""
    rng = np.random.default_rng(0)
    rows = []
    for dataset in ("a:dev", "b:test"):
        for i in range(30):
            lp = rng.normal(size=3) * 4
            lp = lp - np.logaddexp.reduce(lp)
            rows.append({"dataset": dataset, "scoring": "cloze", "id": f"{dataset}{i}", "probs": np.exp(lp).tolist(),
                         "label": int(rng.integers(3)), "logprobs": lp.tolist()})
    path = _write(tmp_path / "predictions.jsonl", rows)
    cal = tmp_path / "cal.json"
    res = runner.invoke(app, ["calibrate", "fit", str(path), "--out", str(cal)])
    assert res.exit_code == 2 and "choose one with --group" in res.output
    res = runner.invoke(app, ["calibrate", "fit", str(path), "--group", "a:dev · cloze", "--out", str(cal)])
    assert res.exit_code == 0, res.output
    dev = [r for r in rows if r["dataset"] == "a:dev"]
    expected = TemperatureScaling().fit([r["logprobs"] for r in dev], [r["label"] for r in dev]).temperature_
    assert load_calibrator(cal)[0].temperature_ == pytest.approx(expected, rel=1e-9)
    out = tmp_path / "b.jsonl"
    res = runner.invoke(app, ["calibrate", "apply", str(cal), str(path), "--group", "b:test · cloze", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert [r["id"] for r in _raw(out)] == [r["id"] for r in rows if r["dataset"] == "b:test"]


def test_bad_calibrator_files(tmp_path: Path) -> None:
    for content, message in (("{", "not valid JSON"), ('{"format": "x"}', "not a calibtune calibrator"),
                             ('{"format": "calibtune-calibrator/1", "calibrator": "temperature", "temperature": -1}',
                              "field 'temperature' = -1 is not a positive number")):
        path = tmp_path / "cal.json"
        path.write_text(content)
        with pytest.raises(ValueError, match=message):
            load_calibrator(path)
