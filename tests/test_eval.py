"""`calibtune eval` end to end: on a tiny random model (fast) and on the embedded SmolLM2 with real questions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.predictions import read_predictions

runner = CliRunner()
DATA_DIR = os.environ.get("CALIBTUNE_DATA_DIR", str(Path(__file__).parents[2] / "shared" / "data"))


def _write_items(path: Path) -> Path:
    rows = [
        {"id": "a", "question": "What is the capital of France?", "options": ["Paris", "Berlin", "Rome"], "answer": 0},
        {"id": "b", "question": "Which is red?", "options": ["fire", "water"], "answer": 0},
        {"id": "c", "question": "Which is a pet?", "options": ["stone", "cat", "fish", "bird"], "answer": 1},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_writes_all_outputs(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _write_items(tmp_path / "items.jsonl")
    out = tmp_path / "run"
    res = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--scoring", "cloze",
                              "--scoring", "letter", "--out", str(out), "--no-progress", "--bootstrap", "10"])
    assert res.exit_code == 0, res.output
    for name in ("predictions.jsonl", "metrics.json", "reliability.png", "reliability.svg", "report.md"):
        assert (out / name).stat().st_size > 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["scoring"] for r in rows} == {"cloze", "letter"}
    for r in rows:
        assert set(r) >= {"id", "probs", "label", "pred", "confidence", "correct"}
        assert r["confidence"] == max(r["probs"]) and r["correct"] == int(r["pred"] == r["label"])
    report = json.loads((out / "metrics.json").read_text())
    assert report["config"]["model"] == str(tiny_model_dir) and "transformers" in report["versions"]
    assert len(report["results"]) == 2
    assert read_predictions(out / "predictions.jsonl").n == 6  # readable by `calibtune metrics`
    assert "| data |" in (out / "report.md").read_text()
    # a second run into the same folder is refused, then allowed with --overwrite
    again = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out),
                                "--no-progress"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    again = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out),
                                "--no-progress", "--overwrite"])
    assert again.exit_code == 0, again.output


def test_eval_bad_data_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "options": ["a", "b"], "answer": 0}\n{"question": "q2", "options": ["a"], "answer": 0}\n')
    res = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(bad), "--out", str(tmp_path / "o"),
                              "--no-progress"])
    assert res.exit_code == 2
    msg = " ".join(res.output.split())
    assert "bad.jsonl" in msg and "line 2" in msg and "options" in msg
    assert not (tmp_path / "o" / "predictions.jsonl").exists()


@pytest.mark.slow
def test_embedded_model_on_20_real_questions(tmp_path: Path, smollm2) -> None:
    """The real SmolLM2-135M-Instruct on 20 ARC-Easy test questions: cloze well above chance (~0.26)."""
    out = tmp_path / "smol"
    res = runner.invoke(app, ["eval", "--model", "smollm2", "--data", "arc-easy:test", "--limit", "20",
                              "--scoring", "cloze", "--scoring", "letter", "--data-dir", DATA_DIR,
                              "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    results = json.loads((out / "metrics.json").read_text())["results"]
    cloze = results["arc-easy:test · cloze"]
    assert cloze["n"] == 20 and cloze["accuracy"] >= 0.5
    assert 0 <= cloze["ece"] <= 1 and results["arc-easy:test · letter"]["n"] == 20


def test_eval_with_temperature_scaling_fitted_on_held_out_data(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _write_items(tmp_path / "items.jsonl")
    held = _write_items(tmp_path / "held.jsonl")
    out = tmp_path / "ts"
    res = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--scoring", "cloze",
                              "--temperature-data", str(held), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "metrics.json").read_text())
    ts_key = next(k for k in report["results"] if k.endswith("cloze+ts"))
    assert report["results"][ts_key]["temperature"] == report["temperatures"]["cloze"] > 0
    same = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--temperature-data",
                               str(data), "--out", str(tmp_path / "bad"), "--no-progress"])
    assert same.exit_code == 2 and "held-out" in same.output
