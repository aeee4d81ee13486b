"""`calibtune compare` cell keys: a hash of what determines a cell; a changed config re-runs exactly the stale cells."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from calibtune import compare
from calibtune.grid import CompareConfig, cell_keys, run_compare


def _grid(tmp_path: Path, model: Path, **over) -> CompareConfig:
    data = tmp_path / "items.jsonl"
    if not data.exists():
        rows = [{"id": f"i{i}", "question": f"Which {w}?", "options": [w, "cat", "dog"], "answer": 0}
                for i, w in enumerate(["Paris", "Rome", "red", "blue", "fish", "Berlin"])]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = {"name": "toy", "train": str(data), "heldout": str(data), "test": [str(data)], **over.pop("task", {})}
    raw = {"name": "g", "model": str(model), "out": str(tmp_path / "out"),
           "train": {"lora": {"r": 2, "alpha": 4}, "training": {"max_steps": 1, "learning_rate": 0.01}},
           "tasks": [task], "methods": [{"name": "base"}, {"name": "sft", "objective": "ce"},
                                        {"name": "ts", "temperature_of": "sft"}], **over}
    return CompareConfig.model_validate(raw)


def _changed(a: dict, b: dict) -> set[str]:
    return {method for (_, method, _), key in a.items() if b[("toy", method, 0)] != key}


def test_the_key_changes_with_what_determines_the_cell_and_only_that(tmp_path: Path, tiny_model_dir: Path) -> None:
    keys = cell_keys(_grid(tmp_path, tiny_model_dir))
    assert len(set(keys.values())) == 3 and all(len(k) == 16 for k in keys.values())
    assert cell_keys(_grid(tmp_path, tiny_model_dir)) == keys  # deterministic
    # where and how fast, or a default written out: no cell is stale
    same = _grid(tmp_path, tiny_model_dir, name="other", out=str(tmp_path / "elsewhere"), batch_size=2, n_bins=15,
                 device="cpu", baselines=["sft"])
    assert _changed(keys, cell_keys(same)) == set()
    # training settings: the trained cell and the temperature scaling of its model, not the base model
    lr = _grid(tmp_path, tiny_model_dir, train={"lora": {"r": 2, "alpha": 4},
                                                "training": {"max_steps": 1, "learning_rate": 0.02}})
    assert _changed(keys, cell_keys(lr)) == {"sft", "ts"}
    method = _grid(tmp_path, tiny_model_dir, methods=[{"name": "base"}, {"name": "sft", "objective": "ls"},
                                                      {"name": "ts", "temperature_of": "sft"}])
    assert _changed(keys, cell_keys(method)) == {"sft", "ts"}
    # model, scoring, data limits, and the data's content: every cell
    other_model = tmp_path / "model-copy"
    shutil.copytree(tiny_model_dir, other_model)
    for grid in (_grid(tmp_path, other_model), _grid(tmp_path, tiny_model_dir, scoring="letter"),
                 _grid(tmp_path, tiny_model_dir, task={"test_limit": 4}), _grid(tmp_path, tiny_model_dir, dtype="bfloat16")):
        assert _changed(keys, cell_keys(grid)) == {"base", "sft", "ts"}
    data = tmp_path / "items.jsonl"
    data.write_text(data.read_text().replace("Which Paris?", "Which Lisbon?"))  # edited in place, same path
    assert _changed(keys, cell_keys(_grid(tmp_path, tiny_model_dir))) == {"base", "sft", "ts"}


def test_a_stale_cell_runs_again_and_the_old_one_is_kept_aside(tmp_path: Path, tiny_model_dir: Path,
                                                                monkeypatch) -> None:
    methods = [{"name": "base"}]
    run_compare(_grid(tmp_path, tiny_model_dir, methods=methods), progress=False)
    cell = tmp_path / "out" / "toy" / "seed0" / "base"
    old = json.loads((cell / "cell.json").read_text())
    assert old["results"][0]["n"] == 6

    stale = _grid(tmp_path, tiny_model_dir, methods=methods, task={"test_limit": 4})
    real_run_cell = compare.run_cell

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the re-run dies: the old cell.json must not stay beside half-new files

    monkeypatch.setattr("calibtune.grid.compare.run_cell", killed)
    with pytest.raises(KeyboardInterrupt):
        run_compare(stale, progress=False)
    assert not (cell / "cell.json").exists()  # unfinished now, so the next run computes it
    kept = tmp_path / "out" / ".stale" / "toy" / "seed0" / f"base.{old['key']}"
    assert json.loads((kept / "cell.json").read_text()) == old  # the stale results are moved, never deleted

    monkeypatch.setattr("calibtune.grid.compare.run_cell", real_run_cell)
    run_compare(stale, progress=False)
    new = json.loads((cell / "cell.json").read_text())
    assert new["results"][0]["n"] == 4 and new["key"] == cell_keys(stale)[("toy", "base", 0)] != old["key"]
    rows = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert len(rows) == 2 and ",4," in rows[1]  # the summary holds the new cell only (.stale is not a task)


def test_adopt_legacy_cells_writes_the_current_key(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    grid = _grid(tmp_path, tiny_model_dir, methods=[{"name": "base"}])
    cell = tmp_path / "out" / "toy" / "seed0" / "base"
    cell.mkdir(parents=True)
    (cell / "cell.json").write_text(json.dumps({"task": "toy", "method": "base", "seed": 0, "train_data": "x",
                                                "results": []}))
    with pytest.raises(ValueError, match="1 cell\\(s\\) were written before cell keys"):
        run_compare(grid, progress=False)
    assert compare.adopt_legacy_cells(grid) == [cell / "cell.json"]
    assert json.loads((cell / "cell.json").read_text())["key"] == cell_keys(grid)[("toy", "base", 0)]
    assert compare.adopt_legacy_cells(grid) == []  # a one-off: adopted cells have keys now

    def boom(*args, **kwargs):
        raise AssertionError("an adopted cell was recomputed")

    monkeypatch.setattr("calibtune.grid.compare.run_cell", boom)
    run_compare(grid, progress=False)
