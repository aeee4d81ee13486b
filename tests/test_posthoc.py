"""Temperature scaling: a real fit (gradient reaches T), known optimum, ragged rows, no fit on test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from calibtune.posthoc import TemperatureScaling


def test_recovers_the_generating_temperature() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 4)) * 2
    p = np.exp(z / 2.5) / np.exp(z / 2.5).sum(1, keepdims=True)  # labels drawn at temperature 2.5
    y = np.array([rng.choice(4, p=row) for row in p])
    ts = TemperatureScaling().fit(z, y)
    assert ts.temperature_ == pytest.approx(2.5, rel=0.08)
    assert ts.nll_after_ < ts.nll_before_


def test_optimum_matches_a_grid_search() -> None:
    z = np.array([[3.0, 0.0, -1.0], [2.0, 1.0, 0.0], [0.5, 0.0, 0.4], [4.0, -2.0, 0.0]])
    y = np.array([1, 0, 2, 0])
    grid = np.linspace(0.05, 20, 40000)
    nll = [torch.nn.functional.cross_entropy(torch.tensor(z / t), torch.tensor(y)).item() for t in grid]
    best = grid[int(np.argmin(nll))]
    assert TemperatureScaling().fit(z, y).temperature_ == pytest.approx(best, rel=1e-3)


def test_ragged_rows_and_transform() -> None:
    logits = [[2.0, 0.0], [1.0, 0.0, -1.0], [0.0, 3.0, 0.0, 0.0]]
    ts = TemperatureScaling().fit(logits, [1, 0, 1])
    out = ts.transform(logits)
    assert [len(r) for r in out] == [2, 3, 4]
    for row, z in zip(out, logits):
        expected = np.exp(np.array(z) / ts.temperature_)
        assert row == pytest.approx(expected / expected.sum())


def test_unfitted_and_bad_input() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        TemperatureScaling().transform([[0.0, 1.0]])
    with pytest.raises(ValueError, match="as many labels"):
        TemperatureScaling().fit([[0.0, 1.0]], [0, 1])
