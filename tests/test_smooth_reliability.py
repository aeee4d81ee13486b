"""Smooth reliability diagrams: kernel regression at the smooth-ECE bandwidth with a bootstrap band,
checked against a direct computation and relplot, and drawn beside the binned diagram."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.metrics import smooth_ece, smooth_reliability

runner = CliRunner()


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overconfident predictions: accuracy is confidence squared."""
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.3, 1.0, n)
    return f, (rng.uniform(size=n) < f ** 2).astype(int)


def _direct(t: np.ndarray, f: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    """Nadaraya–Watson with the Gaussian reflected at 0 and 1, every pair evaluated exactly."""
    d = t[:, None]
    k = (np.exp(-0.5 * ((d - f) / sigma) ** 2) + np.exp(-0.5 * ((d + f) / sigma) ** 2)
         + np.exp(-0.5 * ((d - (2 - f)) / sigma) ** 2))
    return (k @ y) / k.sum(1)


def test_curve_is_the_kernel_regression_at_the_smece_bandwidth() -> None:
    f, y = _data(500)
    curve = smooth_reliability(f, y, n_resamples=0)
    value, sigma = smooth_ece(f, y, return_sigma=True)
    assert curve.sigma == sigma and curve.smece == value and curve.n == 500
    np.testing.assert_allclose(curve.accuracy, _direct(curve.t, f, y, sigma), atol=1e-5)
    assert curve.lower is None and curve.upper is None
    assert np.trapezoid(curve.density, curve.t) == pytest.approx(1.0, abs=0.01)
    fixed = smooth_reliability(f, y, sigma=0.05, n_resamples=0)
    np.testing.assert_allclose(fixed.accuracy, _direct(fixed.t, f, y, 0.05), atol=1e-5)


def test_curve_agrees_with_relplot() -> None:
    relplot = pytest.importorskip("relplot")
    from relplot.estimators import KernelSmoother
    from relplot.kernels import ReflectedGaussianKernel

    f, y = _data(2000, seed=1)
    curve = smooth_reliability(f, y, n_resamples=0)
    from relplot.metrics import smECE

    assert curve.sigma == pytest.approx(smECE(f, y, return_width=True)[1], abs=2e-3)
    theirs = KernelSmoother(ReflectedGaussianKernel(curve.sigma)).fit(f[:, None], y).predict(curve.t[:, None])
    dense = curve.t >= 0.3  # relplot adds 1e-4 to the density, which moves the curve where there are no items
    np.testing.assert_allclose(curve.accuracy[dense], np.ravel(theirs)[dense], atol=5e-3)


def test_bootstrap_band_is_the_resampled_regression() -> None:
    f, y = _data(300, seed=2)
    curve = smooth_reliability(f, y, n_resamples=40, seed=7, level=0.9)
    picks = np.random.default_rng(7).integers(0, 300, size=(40, 300))
    resampled = np.stack([_direct(curve.t, f[p], y[p], curve.sigma) for p in picks], axis=1)
    lo, hi = np.quantile(resampled, [0.05, 0.95], axis=1)
    np.testing.assert_allclose(curve.lower, lo, atol=1e-5)
    np.testing.assert_allclose(curve.upper, hi, atol=1e-5)
    assert (curve.lower <= curve.accuracy + 1e-9).mean() > 0.9 and (curve.accuracy <= curve.upper + 1e-9).mean() > 0.9
    wide = smooth_reliability(*_data(200, seed=3), sigma=0.1, n_resamples=100)
    narrow = smooth_reliability(*_data(3200, seed=3), sigma=0.1, n_resamples=100)
    dense = wide.t >= 0.4
    ratio = np.median((narrow.upper - narrow.lower)[dense]) / np.median((wide.upper - wide.lower)[dense])
    assert 0.15 < ratio < 0.4  # about 1/sqrt(16) = 0.25: the band shrinks like 1/sqrt(n)


def test_calibrated_data_give_the_diagonal() -> None:
    rng = np.random.default_rng(4)
    f = rng.uniform(0, 1, 20000)
    y = (rng.uniform(size=f.size) < f).astype(int)
    assert smooth_reliability(f, y, n_resamples=0).smece < 0.02
    curve = smooth_reliability(f, y, sigma=0.05, n_resamples=0)  # the automatic bandwidth is tiny here
    inner = (curve.t > 0.1) & (curve.t < 0.9)
    np.testing.assert_allclose(curve.accuracy[inner], curve.t[inner], atol=0.04)


def test_probabilities_input_is_top_label() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.2, 0.2, 0.6], [0.9, 0.05, 0.05]])
    labels = np.array([0, 0, 2, 1])
    a = smooth_reliability(probs, labels, sigma=0.2, n_resamples=0)
    b = smooth_reliability(probs.max(1), (probs.argmax(1) == labels).astype(int), sigma=0.2, n_resamples=0)
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    with pytest.raises(ValueError, match="level"):
        smooth_reliability(probs, labels, level=1.5)


def test_metrics_plot_draws_both_diagrams(tmp_path: Path) -> None:
    import matplotlib.image

    f, y = _data(200)
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"confidence": float(c), "correct": int(k)}) + "\n" for c, k in zip(f, y)))
    res = runner.invoke(app, ["metrics", str(path), "--plot", str(tmp_path / "fig.png")])
    assert res.exit_code == 0, res.output
    height, width = matplotlib.image.imread(tmp_path / "fig.png").shape[:2]
    assert width > 1.6 * height  # binned and smooth side by side (one diagram alone is taller than wide)
    assert "smECE" in (tmp_path / "fig.svg").read_text() and "bootstrap band" in (tmp_path / "fig.svg").read_text()
