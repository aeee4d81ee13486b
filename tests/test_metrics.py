"""Metric functions against independent references: torchmetrics, scikit-learn, relplot, p-lambda, hand-worked values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from calibtune.metrics import (
    accuracy,
    aurc,
    auroc,
    bootstrap_ci,
    brier_score,
    calibration_error,
    classwise_calibration_error,
    equal_mass_edges,
    nll,
    pad_probabilities,
    reliability_bins,
    risk_coverage_curve,
    selective_accuracy,
    smooth_ece,
    summarize,
)

warnings.filterwarnings("ignore", category=DeprecationWarning)


def _random_case(seed: int):
    """Binary or multiclass input with ties and values exactly on bin edges, float32 or float64."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    n_bins = int(rng.choice([2, 3, 5, 10, 15, 20]))
    dtype = torch.float32 if seed % 3 == 0 else torch.float64
    if seed % 2 == 0:
        p = rng.uniform(size=n)
        on_edge = rng.random(n) < 0.4
        p[on_edge] = rng.integers(0, n_bins + 1, on_edge.sum()) / n_bins  # exact edges, 0 and 1 included
        y = rng.integers(0, 2, n)
        return torch.tensor(p, dtype=dtype), torch.tensor(y), n_bins, None
    k = int(rng.integers(2, 6))
    logits = rng.normal(size=(n, k)) * 3
    logits[rng.random(n) < 0.3] = 0.0  # exact ties: uniform rows, confidence 1/k on an edge for some k
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    hard = rng.random(n) < 0.1
    p[hard] = np.eye(k)[rng.integers(0, k, hard.sum())]  # confidence exactly 1.0
    y = rng.integers(0, k, n)
    return torch.tensor(p, dtype=dtype), torch.tensor(y), n_bins, k


@pytest.mark.parametrize("seed", range(24))
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_torchmetrics_preset_agrees_with_torchmetrics(seed: int, norm: str) -> None:
    from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

    p, y, n_bins, k = _random_case(seed)
    if k is None:
        ref = binary_calibration_error(p, y, n_bins=n_bins, norm=norm)
    else:
        ref = multiclass_calibration_error(p, y, num_classes=k, n_bins=n_bins, norm=norm)
    assert calibration_error(p, y, n_bins=n_bins, norm=norm, preset="torchmetrics") == pytest.approx(float(ref), abs=1e-6)


def test_reliability_bins_table() -> None:
    b = reliability_bins([0.25, 0.25, 0.55, 0.75, 0.75], [0, 0, 1, 1, 1], n_bins=2)
    assert b.lower.tolist() == [0.0, 0.5] and b.upper.tolist() == [0.5, 1.0]
    assert b.count.tolist() == [2, 3]
    assert b.confidence == pytest.approx([0.25, (0.55 + 0.75 + 0.75) / 3])
    assert b.accuracy.tolist() == [0.0, 1.0]
    assert b.gap == pytest.approx([-0.25, 1 - 2.05 / 3])
    assert b.ece == pytest.approx(0.29) and b.mce == pytest.approx(0.3166667, abs=1e-6)


def test_equal_mass_binning() -> None:
    conf = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert equal_mass_edges(conf, 3).tolist() == pytest.approx([0, 0.25, 0.45, 1.0])
    b = reliability_bins(conf, [0, 0, 1, 0, 1, 1], n_bins=3, binning="mass")
    assert b.count.tolist() == [2, 2, 2]
    # ties are never split: three 0.5s straddling a cut land in one bin
    b = reliability_bins([0.1, 0.5, 0.5, 0.5, 0.9, 0.9], [0, 1, 0, 1, 1, 1], n_bins=2, binning="mass")
    assert sorted(b.count.tolist()) == [2, 4]


def test_argument_validation() -> None:
    with pytest.raises(ValueError, match="`norm`"):
        calibration_error([0.5], [1], norm="l3")
    with pytest.raises(ValueError, match="`n_bins`"):
        calibration_error([0.5], [1], n_bins=0)
    with pytest.raises(ValueError, match="`preset`"):
        calibration_error([0.5], [1], preset="nope")
    with pytest.raises(ValueError, match="fixes binning"):
        calibration_error([0.5], [1], preset="torchmetrics", binning="mass")
    with pytest.raises(ValueError, match="NaN or inf"):
        calibration_error([0.5, float("nan")], [1, 0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration_error([1.5], [1])
    with pytest.raises(ValueError, match="target\\[1\\] = 3"):
        calibration_error([[0.5, 0.5], [0.5, 0.5]], [0, 3])


def test_classwise_ece_hand_worked() -> None:
    # 2 classes, 2 bins (right-closed): class 0 values [0.8, 0.3] labels-is-0 [1, 0]
    #   bin (0, .5]: p .3, y 0 -> |0 - .3| * 1/2 = .15;  bin (.5, 1]: p .8, y 1 -> |1 - .8| * 1/2 = .1
    # class 1 values [0.2, 0.7] labels-is-1 [0, 1]: bin0 |0-.2|/2 = .1; bin1 |1-.7|/2 = .15
    probs = [[0.8, 0.2], [0.3, 0.7]]
    assert classwise_calibration_error(probs, [0, 1], n_bins=2) == pytest.approx((0.25 + 0.25) / 2)
    # p-lambda's marginal plug-in L1 CE per class, averaged, is the same quantity
    from calibration import get_calibration_error

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(500, 4))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 4, 500)
    ref = get_calibration_error(p, y, p=1, debias=False, mode="marginal")  # uses equal-mass bins: not ours
    assert 0 <= classwise_calibration_error(p, y) <= 1 and ref > 0


def test_classwise_ece_mask_for_ragged_items() -> None:
    probs, mask = pad_probabilities([[0.8, 0.2], [0.3, 0.7], [0.1, 0.1, 0.8]])
    v = classwise_calibration_error(probs, [0, 1, 2], n_bins=2, mask=mask)
    # class 2 only exists for the third item: |1 - 0.8| / 1 = 0.2
    c0 = (abs(0 - 0.3 - 0.1) + abs(1 - 0.8)) / 3  # bin (0,.5]: p .3,.1 y 0,0; bin (.5,1]: p .8 y 1
    c1 = (abs(0 - 0.2 - 0.1) + abs(1 - 0.7)) / 3
    assert v == pytest.approx((c0 + c1 + 0.2) / 3)


def test_scores_against_sklearn() -> None:
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(300, 5)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 5, 300)
    onehot = np.eye(5)[y]
    assert brier_score(p, y) == pytest.approx(np.mean(np.sum((p - onehot) ** 2, 1)))
    assert brier_score(p, y, reduction="mean") == pytest.approx(np.mean((p - onehot) ** 2))
    assert nll(p, y) == pytest.approx(log_loss(y, p, labels=range(5)))
    assert accuracy(p, y) == pytest.approx(np.mean(p.argmax(1) == y))
    conf, corr = p.max(1), (p.argmax(1) == y).astype(int)
    conf = np.round(conf, 2)  # ties
    assert auroc(conf, corr) == pytest.approx(roc_auc_score(corr, conf))
    assert np.isnan(auroc([0.9, 0.8], [1, 1]))


def test_binary_brier_nll_hand_worked() -> None:
    assert brier_score([0.9, 0.2], [1, 1]) == pytest.approx((0.01 + 0.64) / 2)
    assert nll([0.9, 0.2], [1, 0]) == pytest.approx(-(np.log(0.9) + np.log(0.8)) / 2)
    assert nll([[1.0, 0.0]], [1]) == pytest.approx(-np.log(1e-12))  # clipped, finite


def test_selective_metrics() -> None:
    from calibration import get_selective_stats

    rng = np.random.default_rng(2)
    conf = rng.uniform(size=200)  # no ties: order is unambiguous
    corr = (rng.uniform(size=200) < conf).astype(int)
    area, acc10 = get_selective_stats(conf, corr)  # mean accuracy over coverages, acc at top 10% (+1 item)
    assert 1 - aurc(conf, corr) == pytest.approx(area)
    assert selective_accuracy(conf, corr, coverage=0.1) == pytest.approx(np.mean(corr[np.argsort(-conf)][:20]))
    assert acc10 == pytest.approx(np.mean(corr[np.argsort(-conf)][:21]))
    # ties are averaged: all-equal confidences give the mean error rate at every coverage
    cov, risk = risk_coverage_curve([0.7] * 4, [1, 0, 1, 1])
    assert cov.tolist() == [0.25, 0.5, 0.75, 1.0] and risk == pytest.approx([0.25] * 4)


def test_smooth_ece_matches_relplot() -> None:
    from relplot.metrics import smECE

    for seed in range(6):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(200, 5000))
        f = rng.uniform(size=n) ** rng.uniform(0.5, 2)
        y = (rng.uniform(size=n) < f ** rng.uniform(0.7, 1.5)).astype(int)
        assert smooth_ece(f, y) == pytest.approx(smECE(f, y), abs=1e-3)


def test_smooth_ece_perfect_and_worst() -> None:
    assert smooth_ece([1.0] * 50 + [0.0] * 50, [1] * 50 + [0] * 50) == pytest.approx(0.0, abs=1e-9)
    assert smooth_ece([1.0] * 50, [0] * 50) > 0.9


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(4)
    conf = rng.uniform(0.3, 1, 500)
    corr = (rng.uniform(size=500) < conf).astype(int)
    a = bootstrap_ci(calibration_error, conf, corr, n_resamples=200, seed=7)
    b = bootstrap_ci(calibration_error, conf, corr, n_resamples=200, seed=7)
    c = bootstrap_ci(calibration_error, conf, corr, n_resamples=200, seed=8)
    assert a == b and a != c and a[0] < a[1]
    lo, hi = bootstrap_ci(accuracy, conf, corr, n_resamples=500, seed=0)
    assert lo < corr.mean() < hi


def test_summarize_contract() -> None:
    probs, mask = pad_probabilities([[0.7, 0.2, 0.1], [0.4, 0.6], [0.1, 0.1, 0.8], [0.5, 0.5]])
    out = summarize(probs, [0, 0, 2, 1], mask=mask, n_bins=5, bootstrap=20, seed=1)
    for key in ("n", "accuracy", "ece", "mce", "rmsce", "ace", "classwise_ece", "smece", "brier", "nll", "auroc"):
        assert key in out
        if key != "n":
            assert f"{key}_ci" in out and len(out[f"{key}_ci"]) == 2
    assert out["n"] == 4 and out["accuracy"] == pytest.approx(0.5)
    assert out["ece"] == pytest.approx(calibration_error(probs, [0, 0, 2, 1], n_bins=5))
    conf_only = summarize([0.9, 0.6], [1, 0])
    assert "classwise_ece" not in conf_only


# ---- properties (hypothesis) ----
_conf = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(_conf, st.integers(0, 2**32 - 1), st.integers(1, 20), st.sampled_from(["width", "mass"]),
       st.sampled_from(["left", "right"]))
def test_properties(conf, seed, n_bins, binning, edge) -> None:
    rng = np.random.default_rng(seed)
    c = np.array(conf)
    y = rng.integers(0, 2, len(c))
    kw = dict(n_bins=n_bins, binning=binning, edge=edge)
    ece = calibration_error(c, y, **kw)
    mce = calibration_error(c, y, norm="max", **kw)
    rms = calibration_error(c, y, norm="l2", **kw)
    assert 0 <= ece <= 1 and 0 <= mce <= 1
    assert mce >= ece - 1e-12 and rms >= ece - 1e-12 and mce >= rms - 1e-12
    perm = rng.permutation(len(c))
    assert calibration_error(c[perm], y[perm], **kw) == pytest.approx(ece, abs=1e-12)
    if binning == "mass" and len(np.unique(c)) == len(c):
        counts = reliability_bins(c, y, **kw).count
        assert counts.max() - counts.min() <= 1  # equal counts when there are no ties


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=40), st.integers(1, 10))
def test_mass_bins_hold_equal_counts_up_to_ties(conf, n_bins) -> None:
    c = np.array(conf)
    counts = reliability_bins(c, np.zeros(len(c), int), n_bins=n_bins, binning="mass").count
    counts = counts[counts > 0]
    ideal = len(c) / min(n_bins, len(c))
    _, multiplicity = np.unique(c, return_counts=True)
    # a bin may grow by a tie group swallowed at a cut, never beyond the ideal size plus the largest tie
    assert counts.max() <= np.ceil(ideal) + multiplicity.max()


def test_perfectly_calibrated_ece_shrinks_with_n() -> None:
    values = []
    for n in (100, 1_000, 10_000, 100_000):
        rng = np.random.default_rng(n)
        c = rng.uniform(size=n)
        y = (rng.uniform(size=n) < c).astype(int)
        values.append(calibration_error(c, y))
    assert values[-1] < 0.01 and values[-1] < values[0]
