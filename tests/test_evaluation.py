"""The one evaluation path (calibtune.evaluation) against direct computations, and light imports."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.special import log_softmax

from calibtune.evaluation import curve_figures, predictions_rows, rows_metrics
from calibtune.metrics import METRICS, REPORT_METRICS, report_metrics, summarize
from calibtune.posthoc import TemperatureScaling

LOGPROBS = [np.log([0.7, 0.2, 0.1]), np.log([0.4, 0.6]), np.log([0.1, 0.1, 0.8]), np.log([0.5, 0.3, 0.2])]
ITEMS = [SimpleNamespace(id=f"q{i}", gold=g) for i, g in enumerate([0, 0, 2, 1])]


def test_predictions_rows_are_the_softmax_and_its_argmax():
    rows = predictions_rows("toy", "cloze", ITEMS, [lp + 3.0 for lp in LOGPROBS])  # unnormalised scores too
    assert [r["pred"] for r in rows] == [0, 1, 2, 0]
    assert [r["correct"] for r in rows] == [1, 0, 1, 0]
    assert rows[1]["probs"] == pytest.approx([0.4, 0.6])
    assert [r["confidence"] for r in rows] == pytest.approx([0.7, 0.6, 0.8, 0.5])


def test_rows_metrics_is_summarize_over_padded_probabilities():
    rows = predictions_rows("toy", "cloze", ITEMS, LOGPROBS)
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.6, 0.0], [0.1, 0.1, 0.8], [0.5, 0.3, 0.2]])
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 1]], dtype=bool)
    direct = summarize(probs, np.array([0, 0, 2, 1]), mask=mask, n_bins=5)
    got = rows_metrics(rows, n_bins=5)
    assert got["accuracy"] == 0.5 and got["ece"] == pytest.approx(direct["ece"])
    assert got["nll"] == pytest.approx(-np.mean(np.log([0.7, 0.4, 0.8, 0.3])))


def test_curve_figures_by_hand():
    rows = predictions_rows("toy", "cloze", ITEMS, LOGPROBS)
    known = {"q0": True, "q1": True, "q2": False}  # q3 has no label: in neither group
    f = curve_figures(rows, known=known, n_bins=10, prefix="h")
    # bins of width 0.1, (lo, hi]: 0.5, 0.6, 0.7, 0.8 each alone; |conf - correct| averaged
    assert f["h_ece"] == pytest.approx((0.3 + 0.6 + 0.2 + 0.5) / 4)
    assert f["h_accuracy"] == 0.5 and f["h_confidence"] == pytest.approx(0.65)
    assert f["h_nll"] == pytest.approx(-np.mean(np.log([0.7, 0.4, 0.8, 0.3])))
    assert (f["h_known_n"], f["h_known_accuracy"], f["h_known_confidence"]) == (2, 0.5, pytest.approx(0.65))
    assert (f["h_unknown_n"], f["h_unknown_accuracy"], f["h_unknown_confidence"]) == (1, 1.0, pytest.approx(0.8))


def test_curve_figures_of_generated_answers_have_no_nll():
    rows = [{"id": "a", "confidence": 0.9, "correct": 1}, {"id": "b", "confidence": 0.3, "correct": 1}]
    f = curve_figures(rows, n_bins=10)
    assert "heldout_nll" not in f and f["heldout_ece"] == pytest.approx((0.1 + 0.7) / 2)


def test_transform_log_is_log_softmax_of_the_scaled_scores():
    ts = TemperatureScaling().fit(LOGPROBS, [it.gold for it in ITEMS])
    for lp, got in zip(LOGPROBS, ts.transform_log(LOGPROBS)):
        assert got == pytest.approx(log_softmax(lp / ts.temperature_), abs=1e-12)
    assert [np.exp(g) for g in ts.transform_log(LOGPROBS)][1] == pytest.approx(ts.transform(LOGPROBS)[1])
    with pytest.raises(RuntimeError, match="not fitted"):
        TemperatureScaling().transform_log(LOGPROBS)


def test_report_metrics_are_registered_and_confidence_tables_drop_class_metrics():
    assert set(REPORT_METRICS) <= set(METRICS)
    assert report_metrics() == list(REPORT_METRICS)
    assert report_metrics(class_probs=False) == [m for m in REPORT_METRICS if m != "classwise_ece"]


def test_importing_the_grid_and_training_does_not_load_matplotlib():
    code = "import sys, calibtune.grid, calibtune.training, calibtune.evaluation; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
