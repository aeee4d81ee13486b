"""`calibtune compare`: a small grid on the tiny model; finished cells are never recomputed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from calibtune.grid import SUMMARY_COLUMNS, load_compare_config, run_compare


def _files(tmp_path: Path) -> tuple[Path, Path]:
    words = ["Paris", "Berlin", "Rome", "cat", "dog", "fish", "red", "blue"]
    rows = [{"id": f"i{i}", "question": f"Which {words[i % 8]}?", "options": [words[(i + j) % 8] for j in range(3)],
             "answer": i % 3} for i in range(12)]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, tmp_path / "out"


def _config(tmp_path: Path, model_dir: Path) -> Path:
    data, out = _files(tmp_path)
    cfg = {
        "name": "tiny", "model": str(model_dir), "out": str(out), "probe": {"n_prompts": 2, "shots": 0},
        "train": {"eval_every": 3, "lora": {"r": 2, "alpha": 4},
                  "training": {"per_device_train_batch_size": 4, "max_steps": 3, "learning_rate": 0.01}},
        "tasks": [{"name": "toy", "train": f"{data}", "heldout": f"{data}", "test": [f"{data}"], "seeds": [0]}],
        "methods": [{"name": "base"}, {"name": "sft", "objective": "ce"}, {"name": "ts", "temperature_of": "sft"},
                    {"name": "cols", "objective": "cogcalib", "objective_params": {"alpha": 0.1},
                     "known_source": "nll", "refit_every": 1},
                    {"name": "rcft", "objective": "rcft", "sft_target": "question+answer"}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_grid_runs_and_resumes_without_recomputing(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    cfg = load_compare_config(_config(tmp_path, tiny_model_dir))
    summary = run_compare(cfg, progress=False)
    with summary.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[: len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS
    assert sorted(r["method"] for r in rows) == ["base", "cols", "rcft", "sft", "ts"]
    ts = next(r for r in rows if r["method"] == "ts")
    assert float(ts["temperature"]) > 0
    trained = json.loads((Path(cfg.out) / "toy" / "seed0" / "rcft" / "adapter" / "training_summary.json").read_text())
    assert trained["config"]["sft_target"] == "question+answer" and len(trained["e_steps"]) == 1
    for method in ("sft", "cols"):  # every trained cell's curve splits the held-out items by their own probe
        cell = Path(cfg.out) / "toy" / "seed0" / method
        held_out = [json.loads(line) for line in (cell / "heldout_probe.jsonl").read_text().splitlines()]
        curve = json.loads((cell / "adapter" / "training_summary.json").read_text())["curve"]
        n_known = sum(r["known"] for r in held_out)
        assert curve and all(c.get("heldout_known_n", 0) == n_known for c in curve)
        assert all(c.get("heldout_unknown_n", 0) == len(held_out) - n_known for c in curve)
    for method in ("base", "sft", "ts", "cols", "rcft"):
        assert list((Path(cfg.out) / "toy" / "seed0" / method).glob("*.predictions.jsonl"))

    def boom(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr("calibtune.grid.compare.run_cell", boom)
    assert run_compare(cfg, progress=False) == summary


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nout: o\ntasks: []\nmethods: [{name: a, objektive: ce}]\n")
    with pytest.raises(ValueError, match="methods.0.objektive"):
        load_compare_config(bad)
    bad.write_text("name: x\nout: o\ntasks: []\nmethods: [{name: a, objective: rcft, sft_target: question}]\n")
    with pytest.raises(ValueError, match="methods.0.sft_target"):
        load_compare_config(bad)


def test_sigkill_mid_grid_then_restart_finishes_the_same_cells(tmp_path: Path, tiny_model_dir: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    def launch(cfg_path: Path) -> subprocess.Popen:
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        return subprocess.Popen([sys.executable, "-m", "calibtune.cli", "compare", "--config", str(cfg_path),
                                 "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    (tmp_path / "ref").mkdir()
    reference = load_compare_config(_config(tmp_path / "ref", tiny_model_dir))
    run_compare(reference, progress=False)
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    cfg_path = _config(killed_dir, tiny_model_dir)
    cfg = load_compare_config(cfg_path)
    proc = launch(cfg_path)
    cells = Path(cfg.out)
    deadline = time.time() + 300
    while not list(cells.glob("*/seed*/*/cell.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in cells.glob("*/seed*/*/cell.json")}
    assert 1 <= len(finished) < 4, "the kill must land mid-grid"
    proc = launch(cfg_path)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    ref_cells = {p.relative_to(reference.out) for p in Path(reference.out).glob("*/seed*/*/cell.json")}
    got_cells = {p.relative_to(cells) for p in cells.glob("*/seed*/*/cell.json")}
    assert got_cells == ref_cells
    with (Path(reference.out) / "summary.csv").open() as fh:
        ref_rows = {(r["method"], Path(r["eval_data"]).name): r for r in csv.DictReader(fh)}
    with (cells / "summary.csv").open() as fh:
        got_rows = {(r["method"], Path(r["eval_data"]).name): r for r in csv.DictReader(fh)}
    assert set(got_rows) == set(ref_rows)
    for key, row in got_rows.items():
        for col in ("n", "accuracy", "ece", "brier", "nll"):
            assert float(row[col]) == pytest.approx(float(ref_rows[key][col]), abs=1e-6), (key, col)


def test_config_n_bins_reaches_the_report(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    """`n_bins` of the experiment YAML is the report's binning too (it used to stop at the summary)."""
    from typer.testing import CliRunner

    from calibtune.cli import app

    cfg_path = _config(tmp_path, tiny_model_dir)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg_path.write_text(yaml.safe_dump({**cfg, "n_bins": 7}))
    seen = {}
    monkeypatch.setattr("calibtune.grid.compare.run_compare", lambda cfg, **kw: tmp_path / "summary.csv")
    monkeypatch.setattr("calibtune.grid.report.write_report",
                        lambda root, **kw: seen.update(kw) or (root / "report.md", root / "report.html"))
    result = CliRunner().invoke(app, ["compare", "--config", str(cfg_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert seen["n_bins"] == 7


def test_rescore_scores_trained_cells_again_from_their_adapters_without_training(
        tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    """fp32 throughout, so the kept model and the reloaded adapter give the same numbers; nothing trains."""
    from calibtune.grid import rescore

    path = _config(tmp_path, tiny_model_dir)
    raw = yaml.safe_load(path.read_text())
    raw["methods"] = raw["methods"][:2]
    raw["train"]["early_stopping"] = True
    path.write_text(yaml.safe_dump(raw))
    cfg = load_compare_config(path)
    run_compare(cfg, progress=False)
    cell = Path(cfg.out) / "toy" / "seed0"
    before = {m: json.loads((cell / m / "cell.json").read_text()) for m in ("base", "sft")}
    assert "results_early_stop" in before["sft"]

    def boom(*args, **kwargs):
        raise AssertionError("rescore trained a model")

    monkeypatch.setattr("calibtune.training.run_training", boom)
    rescore(cfg, progress=False)
    after = {m: json.loads((cell / m / "cell.json").read_text()) for m in ("base", "sft")}
    assert after["base"] == before["base"]  # untrained cells are not touched
    assert after["sft"]["rescored"] > 0 and after["sft"]["key"] == before["sft"]["key"]
    for part in ("results", "results_early_stop"):
        for old, new in zip(before["sft"][part], after["sft"][part], strict=True):
            assert new["eval_data"] == old["eval_data"]
            assert new["ece"] == pytest.approx(old["ece"], abs=1e-6) and new["nll"] == pytest.approx(old["nll"], abs=1e-6)

    record = after["sft"] | {"key": "0" * 16}
    (cell / "sft" / "cell.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="stale or legacy"):
        rescore(cfg, progress=False)
