"""`calibtune metrics`: output contract and clear errors (exit code 2) for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.metrics import calibration_error

runner = CliRunner()
EXAMPLE = Path(__file__).parents[1] / "examples" / "predictions.jsonl"


def _run(*args: str):
    return runner.invoke(app, list(args))


def test_json_contract_and_plot(tmp_path: Path) -> None:
    res = _run("metrics", str(EXAMPLE), "--format", "json", "--bootstrap", "30", "--plot", str(tmp_path / "r.png"))
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    for key in ("n", "accuracy", "ece", "mce", "rmsce", "ace", "classwise_ece", "smece", "brier", "nll", "auroc"):
        assert key in data
    assert data["n"] == 400 and len(data["ece_ci"]) == 2
    assert (tmp_path / "r.png").stat().st_size > 1000 and (tmp_path / "r.svg").exists()


def test_flags_reach_the_metric(tmp_path: Path) -> None:
    f = tmp_path / "c.jsonl"
    f.write_text('{"confidence": 0.95, "correct": 1}\n{"confidence": 1.0, "correct": 0}\n')
    res = _run("metrics", str(f), "--format", "json", "--preset", "torchmetrics", "--n-bins", "10", "--norm", "max")
    data = json.loads(res.stdout)
    assert data["calibration_error"] == pytest.approx(1.0) and data["edge"] == "left"
    res = _run("metrics", str(f), "--format", "json", "--n-bins", "10", "--binning", "mass")
    assert json.loads(res.stdout)["ece"] == pytest.approx(calibration_error([0.95, 1.0], [1, 0], n_bins=10, binning="mass"))


def test_csv_input(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("id,label,p0,p1,p2\na,0,0.7,0.2,0.1\nb,2,0.2,0.5,0.3\n")
    data = json.loads(_run("metrics", str(f), "--format", "json").stdout)
    assert data["n"] == 2 and data["accuracy"] == pytest.approx(0.5)
    g = tmp_path / "c.csv"
    g.write_text("confidence,correct\n0.9,1\n0.6,0\n")
    assert json.loads(_run("metrics", str(g), "--format", "json").stdout)["n"] == 2


@pytest.mark.parametrize(
    ("content", "suffix", "needle"),
    [
        ('{"probs": [0.5, 0.4], "label": 0}\n', ".jsonl", "line 1: field 'probs' sums to 0.9"),
        ('{"probs": [0.5, 0.5], "label": 0}\n{"probs": [NaN, 0.5], "label": 0}\n', ".jsonl", "line 2: field 'probs[0]'"),
        ('{"probs": [0.5, 0.5], "label": 2}\n', ".jsonl", "line 1: field 'label' must be an integer in [0, 2)"),
        ('{"confidence": 0.5}\n', ".jsonl", "line 1: missing field 'correct'"),
        ('{"label": 1}\n', ".jsonl", "line 1: missing field 'probs'"),
        ('{"confidence": Infinity, "correct": 1}\n', ".jsonl", "field 'confidence' is inf"),
        ('{"confidence": 0.5, "correct": 1}\n{oops\n', ".jsonl", "line 2: not valid JSON"),
        ('{"confidence": 0.5, "correct": 2}\n', ".jsonl", "field 'correct' must be 0 or 1"),
        ('{"confidence": 0.5, "correct": 1}\n{"probs": [0.5, 0.5], "label": 1}\n', ".jsonl", "do not mix"),
        ("", ".jsonl", "empty file"),
        ("label,p0,p1\n0,0.5,0.5\n1,0.5\n", ".csv", "line 3: 2 fields, but the header has 3"),
        ("confidence,correct\n0.5,x\n", ".csv", "line 2: field 'correct'"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path: Path, content: str, suffix: str, needle: str) -> None:
    f = tmp_path / f"bad{suffix}"
    f.write_text(content)
    res = _run("metrics", str(f))
    assert res.exit_code == 2
    msg = " ".join(res.output.split())
    assert needle in msg and f.name in msg


def test_missing_file() -> None:
    res = _run("metrics", "/nonexistent/preds.jsonl")
    assert res.exit_code == 2 and "no such file" in res.output


def test_atomic_write_leaves_nothing_on_failure_and_normal_permissions(tmp_path: Path) -> None:
    from calibtune.predictions import atomic_write

    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as fh:
        fh.write("whole")
    assert target.read_text() == "whole"
    assert target.stat().st_mode & 0o044  # readable by group/others like any file the user writes
