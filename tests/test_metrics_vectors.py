"""Cross-library golden vectors A–I (anchors.md §4) × presets, plus the reference libraries themselves."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from calibtune.metrics import calibration_error, reliability_bins

warnings.filterwarnings("ignore", category=DeprecationWarning)

_rng = np.random.default_rng(0)
_P = _rng.uniform(size=20000)
_Y = (_rng.uniform(size=20000) < _P**1.3).astype(int)

VECTORS = {
    "A": ([0.25, 0.25, 0.55, 0.75, 0.75], [0, 0, 1, 1, 1], 2),
    "B": ([1.0, 1.0, 1.0, 1.0, 0.0], [0, 0, 1, 1, 1], 2),
    "C": ([0.95, 1.0], [1, 0], 10),
    "D": ([0.5, 0.5, 0.9, 0.1], [1, 1, 1, 0], 2),
    "E": ([0.2, 0.2, 0.4, 0.4, 0.6], [0, 1, 1, 1, 0], 5),
    "F": (_P, _Y, 15),
    "G": (np.round(_P, 1), _Y, 10),
    "H": ([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]], [0, 1, 2, 0], 3),
    # 4x3, three rows at confidence 1.0, gold labels only {0, 1}
    "I": ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.25, 0.25]], [0, 1, 1, 0], 10),
}

# anchors.md §4; None = no number there (checked against the library below); "error" = the library raises.
EXPECTED = {
    #      torchmetrics netcal   sklearn  p-lambda relplot
    "A": (0.290, 0.290, 0.290, 0.290, 0.290),
    "B": (0.600, 0.600, 0.600, 0.600, 0.600),
    "C": (0.525, 0.475, 0.475, 0.475, 0.525),
    "D": (0.300, 0.300, 0.250, 0.250, 0.300),
    "E": (0.480, 0.240, 0.480, 0.480, 0.240),
    "F": (0.064209, 0.064209, 0.064209, 0.064209, 0.064209),
    "G": (0.065390, 0.065390, 0.064590, 0.064590, 0.065390),
    "H": (0.2000, 0.2000, None, 0.2000, 0.2000),
    "I": (0.375, "error", None, 0.375, 0.375),
}
LIBS = ("torchmetrics", "netcal", "sklearn", "p-lambda", "relplot")


def _tol(name: str) -> float:
    return 5e-7 if name in ("F", "G") else 5e-4  # §4 quotes 6 decimals for F/G, 3-4 elsewhere


@pytest.mark.parametrize("vec", list(VECTORS))
@pytest.mark.parametrize("lib_i", range(len(LIBS)), ids=LIBS)
def test_preset_matches_anchor_table(vec: str, lib_i: int) -> None:
    preds, target, n_bins = VECTORS[vec]
    expected = EXPECTED[vec][lib_i]
    preset = LIBS[lib_i]
    if expected == "error":
        with pytest.raises(ValueError, match="binary auto-detection"):
            calibration_error(preds, target, n_bins=n_bins, preset=preset)
        return
    if expected is None:  # no §4 number (sklearn is binary-only): scikit-learn on the top-label reduction
        expected = _library_value(preset, preds, target, n_bins)
    assert calibration_error(preds, target, n_bins=n_bins, preset=preset) == pytest.approx(expected, abs=_tol(vec))


def _top_label(preds, target):
    p = np.asarray(preds, dtype=np.float64)
    t = np.asarray(target)
    if p.ndim == 1:
        return p, t
    return p.max(1), (p.argmax(1) == t).astype(int)


def _library_value(preset: str, preds, target, n_bins: int) -> float:
    p = np.asarray(preds, dtype=np.float64)
    t = np.asarray(target)
    if preset == "torchmetrics":
        import torch
        from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

        if p.ndim == 1:
            return float(binary_calibration_error(torch.tensor(p), torch.tensor(t), n_bins=n_bins))
        return float(multiclass_calibration_error(torch.tensor(p), torch.tensor(t), num_classes=p.shape[1], n_bins=n_bins))
    if preset == "sklearn":
        from sklearn.calibration import calibration_curve

        conf, corr = _top_label(p, t)
        prob_true, prob_pred = calibration_curve(corr, conf, n_bins=n_bins, strategy="uniform")
        bins = np.linspace(0, 1, n_bins + 1)
        counts = np.bincount(np.searchsorted(bins[1:-1], conf), minlength=n_bins)
        counts = counts[counts > 0]
        return float(np.sum(counts / len(conf) * np.abs(prob_true - prob_pred)))
    if preset == "p-lambda":
        from calibration import get_ece

        return float(get_ece(p, t.astype(int), num_bins=n_bins))
    if preset == "helm":
        from calibration import get_ece_em

        conf, corr = _top_label(p, t)  # HELM: max_prob vs exact_match
        return float(get_ece_em(conf, corr.astype(int), num_bins=n_bins))
    if preset == "relplot":
        from relplot.metrics import binnedECE

        conf, corr = _top_label(p, t)
        return float(binnedECE(conf, corr, nbins=n_bins))
    raise AssertionError(preset)


@pytest.mark.parametrize("vec", list(VECTORS))
@pytest.mark.parametrize("preset", ["torchmetrics", "sklearn", "p-lambda", "relplot", "helm"])
def test_preset_matches_library(vec: str, preset: str) -> None:
    preds, target, n_bins = VECTORS[vec]
    ours = calibration_error(preds, target, n_bins=n_bins, preset=preset)
    tol = 1e-6 if preset == "torchmetrics" else 1e-9  # torchmetrics reduces in float32
    assert ours == pytest.approx(_library_value(preset, preds, target, n_bins), abs=tol)


def test_helm_on_f_matches_anchor() -> None:
    # anchors.md §4: p-lambda get_ece_em(10) = netcal ECE(10, equal_intervals=False) = 0.0642094 on data F
    assert calibration_error(_P, _Y, preset="helm") == pytest.approx(0.0642094, abs=5e-8)


def test_calibtune_default_has_no_quirks() -> None:
    # C: 1.0 goes to the last real bin (Guo et al.); MCE there is the bin's gap, not 1.0 (torchmetrics #3510)
    assert calibration_error([0.95, 1.0], [1, 0], n_bins=10) == pytest.approx(0.475)
    assert calibration_error([0.95, 1.0], [1, 0], n_bins=10, norm="max") == pytest.approx(0.475)
    assert calibration_error([0.95, 1.0], [1, 0], n_bins=10, norm="max", preset="torchmetrics") == pytest.approx(1.0)
    # E: 0.6 sits exactly on the decimal edge 0.6 under both edge rules
    b = reliability_bins([0.2, 0.2, 0.4, 0.4, 0.6], [0, 1, 1, 1, 0], n_bins=5, edge="right")
    assert b.count.tolist() == [2, 2, 1, 0, 0]
    b = reliability_bins([0.2, 0.2, 0.4, 0.4, 0.6], [0, 1, 1, 1, 0], n_bins=5, edge="left")
    assert b.count.tolist() == [0, 2, 2, 1, 0]
    # confidence 0 is kept in the first bin (inspect_evals #2141 dropped it)
    b = reliability_bins([0.0, 1.0], [0, 1], n_bins=4)
    assert b.count.tolist() == [1, 0, 0, 1] and b.ece == 0.0


def test_docs_values_torchmetrics() -> None:
    # torchmetrics documentation values (anchors.md §3.1)
    p, t = [0.25, 0.25, 0.55, 0.75, 0.75], [0, 0, 1, 1, 1]
    assert calibration_error(p, t, n_bins=2, norm="l1") == pytest.approx(0.2900, abs=5e-5)
    assert calibration_error(p, t, n_bins=2, norm="l2") == pytest.approx(0.2918, abs=5e-5)
    assert calibration_error(p, t, n_bins=2, norm="max") == pytest.approx(0.3167, abs=5e-5)
    h, ht = VECTORS["H"][:2]
    assert calibration_error(h, ht, n_bins=3, norm="l2", preset="torchmetrics") == pytest.approx(0.2082, abs=5e-5)
    assert calibration_error(h, ht, n_bins=3, norm="max", preset="torchmetrics") == pytest.approx(0.2333, abs=5e-5)


def test_p_lambda_hand_computed_cases() -> None:
    # calibration/util_test.py of uncertainty-calibration
    assert calibration_error([0.6, 0.7, 0.8, 0.9], [0, 0, 1, 1], n_bins=2, preset="p-lambda") == pytest.approx(0.25)
    assert calibration_error([0.1, 0.7], [0, 1], n_bins=2, preset="helm") == pytest.approx(0.2)
