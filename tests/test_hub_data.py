"""``hf:`` data specs with a field mapping, on data sets that ``datasets`` builds from local files or
reads back from ``save_to_disk`` (no hub is reachable here): the loader, ``calibtune eval --field``
and the ``fields:`` key of a training config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.data import DataError, load_dataset, parse_fields

datasets = pytest.importorskip("datasets")
runner = CliRunner()

# ARC's hub schema: a nested ``choices`` record of texts and labels, the gold as a label letter.
ROWS = [
    {"id": "q1", "question": "What is the capital of France?", "choices": {"text": ["Paris", "Berlin", "Rome"],
                                                                          "label": ["A", "B", "C"]}, "answerKey": "A"},
    {"id": "q2", "question": "Which is red?", "choices": {"text": ["water", "fire"], "label": ["A", "B"]},
     "answerKey": "B"},
    {"id": "q3", "question": "Which is a pet?", "choices": {"text": ["stone", "cat", "fish", "bird"],
                                                           "label": ["A", "B", "C", "D"]}, "answerKey": "B"},
]
FIELDS = {"question": "question", "options": "choices.text", "gold": "answerKey"}
FLAGS = ["--field", "question=question", "--field", "options=choices.text", "--field", "gold=answerKey"]


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory) -> Path:
    """A folder of split files, as a hub repository holds them (``load_dataset(folder)`` infers the splits)."""
    folder = tmp_path_factory.mktemp("hub-like")
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (folder / "train.jsonl").write_text("".join(json.dumps({**r, "id": f"t{r['id']}"}) + "\n" for r in ROWS[:2]))
    return folder


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory, data_folder: Path) -> Path:
    """The same splits written by ``DatasetDict.save_to_disk``."""
    folder = tmp_path_factory.mktemp("saved") / "arc-like"
    datasets.load_dataset(str(data_folder)).save_to_disk(str(folder))
    return folder


def _expected() -> list[tuple[str, str, tuple[str, ...], int]]:
    return [(r["id"], r["question"], tuple(r["choices"]["text"]), r["choices"]["label"].index(r["answerKey"]))
            for r in ROWS]


@pytest.mark.parametrize("which", ["data_folder", "saved_folder"])
def test_hf_spec_reads_local_and_saved_data_sets(which: str, request) -> None:
    folder = request.getfixturevalue(which)
    ds = load_dataset(f"hf:{folder}:test", fields=FIELDS)
    assert [(it.id, it.question, it.options, it.gold) for it in ds.items] == _expected()
    assert ds.name == f"hf:{folder}:test"
    assert [it.id for it in load_dataset(f"hf:{folder}:train", fields=FIELDS).items] == ["tq1", "tq2"]
    assert [it.id for it in load_dataset(f"hf:{folder}:test[1:]", fields=FIELDS).items] == ["q2", "q3"]


def test_hf_spec_errors_name_the_row_and_field(saved_folder: Path) -> None:
    with pytest.raises(DataError, match="--field question=COLUMN"):
        load_dataset(f"hf:{saved_folder}:test")
    with pytest.raises(DataError, match=r"hf:.*:test, field '\[0\]\.choices\.texts': missing"):
        load_dataset(f"hf:{saved_folder}:test", fields={**FIELDS, "options": "choices.texts"})
    with pytest.raises(DataError, match=r"no split 'dev'; the saved data set has train, test|no split 'dev'"):
        load_dataset(f"hf:{saved_folder}:dev", fields=FIELDS)


def test_parse_fields() -> None:
    assert parse_fields(["question=q", "options = A,B,C", "gold=label"]) == {"question": "q", "options": "A,B,C",
                                                                             "gold": "label"}
    for bad, message in ((["question"], "KEY=COLUMN"), (["question=a", "question=b"], "mapped twice"),
                         (["answer_key=x"], "unknown key")):
        with pytest.raises(DataError, match=message):
            parse_fields(bad)


def test_eval_cli_with_field_flags(tmp_path: Path, saved_folder: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "run"
    res = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", f"hf:{saved_folder}:test", *FLAGS,
                              "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(r["id"], r["label"], len(r["probs"])) for r in rows] == [(i, g, len(o)) for i, _, o, g in _expected()]
    assert json.loads((out / "metrics.json").read_text())["config"]["fields"] == FIELDS


def test_eval_cli_field_errors_come_before_the_model(tmp_path: Path, saved_folder: Path, tiny_model_dir: Path,
                                                     monkeypatch) -> None:
    from calibtune import models

    def never(*args, **kwargs):
        raise AssertionError("the model must not be loaded before the data is checked")

    monkeypatch.setattr(models, "load_model", never)
    missing_model = str(tiny_model_dir)
    res = runner.invoke(app, ["eval", "--model", missing_model, "--data", f"hf:{saved_folder}:test",
                              "--field", "question", "--out", str(tmp_path / "a"), "--no-progress"])
    assert res.exit_code == 2 and "expected KEY=COLUMN" in res.output
    res = runner.invoke(app, ["eval", "--model", missing_model, "--data", "arc-easy:test", *FLAGS,
                              "--out", str(tmp_path / "b"), "--no-progress"])
    assert res.exit_code == 2 and "no --data is one" in res.output
    res = runner.invoke(app, ["eval", "--model", missing_model, "--data", f"hf:{saved_folder}:test", "--field",
                              "question=nope", "--field", "options=choices.text", "--field", "gold=answerKey",
                              "--out", str(tmp_path / "c"), "--no-progress"])
    assert res.exit_code == 2 and "field '[0].nope': missing" in res.output


def test_train_config_fields_key(tmp_path: Path, saved_folder: Path, tiny_model_dir: Path) -> None:
    """``fields:`` in a training YAML maps the columns of hf: train and eval data."""
    from calibtune.training import load_train_config, run_training

    config = tmp_path / "train.yaml"
    config.write_text(
        f"model: {tiny_model_dir}\ntrain_data: hf:{saved_folder}:test\neval_data: hf:{saved_folder}:train\n"
        "eval_every: 1\nfields: {question: question, options: choices.text, gold: answerKey}\nlora: null\n"
        f"training: {{output_dir: {tmp_path / 'out'}, max_steps: 1, per_device_train_batch_size: 3, report_to: none}}\n")
    summary = run_training(load_train_config(config), progress=False)
    assert summary["steps"] == 1 and summary["curve"] and summary["curve"][-1]["heldout_accuracy"] in (0.0, 0.5, 1.0)
