"""Adding a metric or a loss is one registration: the name tables and everything built on them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from calibtune import evaluate, open_eval
from calibtune.metrics import CONTRACT_KEYS, METRICS, MetricSpec, accuracy, register_metric, summarize
from calibtune.objectives import OBJECTIVES, Objective, get_objective, per_sample_nll, register_objective

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
LABELS = np.array([0, 1, 1, 2])


def error_rate(preds, target) -> float:
    return 1.0 - accuracy(preds, target)


@pytest.fixture
def toy_metric():
    spec = register_metric("toy_error", error_rate, higher_is_better=False, display="toy error")
    try:
        yield spec
    finally:
        del METRICS["toy_error"]


def test_builtin_table_is_the_summary_battery():
    s = summarize(PROBS, LABELS, n_bins=5)
    assert [k for k in s if k in METRICS] == list(METRICS)
    assert set(CONTRACT_KEYS) <= set(s)
    assert {k for k, spec in METRICS.items() if spec.higher_is_better} == {"accuracy", "auroc", "selective_accuracy_10"}
    assert METRICS["classwise_ece"].class_probs_only and "classwise_ece" not in summarize(PROBS.max(1), [1, 1, 0, 1])


def test_summary_columns_of_the_reports_are_registered_metrics():
    other = {"data", "scoring", "confidence", "n", "seconds", "n_unparsed"}
    for columns in (evaluate.REPORT_COLUMNS, open_eval.REPORT_COLUMNS):
        assert set(columns) - other <= set(METRICS)


def test_a_registered_metric_reaches_the_table_and_every_summary(toy_metric):
    assert METRICS["toy_error"] is toy_metric and isinstance(toy_metric, MetricSpec)
    assert list(METRICS)[-1] == "toy_error"
    s = summarize(PROBS, LABELS, n_bins=5, bootstrap=20)
    assert s["toy_error"] == pytest.approx(1 - s["accuracy"])
    assert s["toy_error_ci"] == pytest.approx([1 - s["accuracy_ci"][1], 1 - s["accuracy_ci"][0]])
    rows = [{"confidences": {"seq_prob": c}, "correct": y} for c, y in [(0.9, 1), (0.8, 0), (0.4, 0), (0.7, 1)]]
    assert open_eval.open_metrics(rows, n_bins=5)["seq_prob"]["toy_error"] == pytest.approx(0.5)


def test_register_metric_refuses_a_taken_name(toy_metric):
    with pytest.raises(ValueError, match="already registered"):
        register_metric("toy_error", error_rate, higher_is_better=False, display="again")
    with pytest.raises(ValueError, match="already registered"):
        register_metric("ece", error_rate, higher_is_better=False, display="ECE")


def test_metric_table_is_clean_after_the_toy():
    assert "toy_error" not in METRICS and "toy_error" not in summarize(PROBS, LABELS)


def double_ce(scores: torch.Tensor, labels: torch.Tensor, *, weight: float = 2.0) -> torch.Tensor:
    return weight * per_sample_nll(scores, labels)


@dataclass(frozen=True)
class DoubleCEConfig(Objective):
    """A toy loss: ``weight`` times the cross-entropy."""

    name = "toy-double-ce"
    loss_fn = staticmethod(double_ce)

    weight: float = 2.0


@pytest.fixture
def toy_objective():
    cls = register_objective(DoubleCEConfig)
    try:
        yield cls
    finally:
        del OBJECTIVES["toy-double-ce"]


def test_a_registered_objective_is_built_by_name(toy_objective):
    assert toy_objective is DoubleCEConfig and OBJECTIVES["toy-double-ce"] is DoubleCEConfig
    obj = get_objective("toy-double-ce", weight=3.0)
    assert obj == DoubleCEConfig(weight=3.0)
    scores, labels = torch.tensor([[2.0, 0.0, -torch.inf], [0.0, 1.0, 0.5]]), torch.tensor([0, 2])
    torch.testing.assert_close(obj(scores, labels), 3.0 * get_objective("ce")(scores, labels))
    with pytest.raises(ValueError, match="Unknown parameter"):
        get_objective("toy-double-ce", gamma=1.0)


def test_register_objective_refuses_a_taken_name_or_a_non_objective(toy_objective):
    with pytest.raises(ValueError, match="already registered"):
        register_objective(DoubleCEConfig)
    with pytest.raises(ValueError, match="Objective subclass"):
        register_objective(dict)


def test_objective_table_is_clean_after_the_toy():
    assert "toy-double-ce" not in OBJECTIVES
    with pytest.raises(ValueError, match="Expected objective"):
        get_objective("toy-double-ce")
