"""A benchmark defined outside calibtune: one loader, registered with one call, loads like a built-in one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from calibtune.data import DATASETS, ENV_VAR, DataError, load_dataset, register_benchmark, unregister_benchmark
from calibtune.data.items import FieldMap, _parsed, _Parsed
from calibtune.data.readers import _jsonl_records

ROWS = [
    {"qid": "toy-1", "q": "Is water wet?", "A": "yes", "B": "no", "key": "A"},
    {"qid": "toy-2", "q": "Is fire cold?", "A": "yes", "B": "no", "key": "B"},
]
FIELDS = FieldMap(source="toybench", id="qid", question="q", options=("A", "B"), gold="key", gold_labels="AB")


def _load_toybench(root: Path, split: str, subsets: tuple[str, ...] | None) -> Iterator[_Parsed]:
    src = f"toybench/{split}.jsonl"
    return _parsed(_jsonl_records(root / src, src), FIELDS)


def _write(root: Path, rows: list[dict], *, extra: str = "") -> None:
    (root / "toybench").mkdir(exist_ok=True)
    (root / "toybench" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + extra)


@pytest.fixture
def toybench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``toybench:test`` (alias ``toy``) registered over a JSONL file in ``tmp_path``, the data dir; removed after."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    _write(tmp_path, ROWS)
    register_benchmark("toybench", splits=("test",), default_split="test", description="toy", aliases=("toy",))(
        _load_toybench
    )
    yield tmp_path
    unregister_benchmark("toybench")


def test_registered_benchmark_loads(toybench: Path) -> None:
    ds = load_dataset("toybench:test")
    assert ds.name == "toybench:test" and len(ds) == 2
    assert [(it.id, it.question, it.options, it.gold, it.source) for it in ds] == [
        ("toy-1", "Is water wet?", ("yes", "no"), 0, "toybench"),
        ("toy-2", "Is fire cold?", ("yes", "no"), 1, "toybench"),
    ]
    assert load_dataset("toy").items == ds.items  # alias and default split
    assert load_dataset("toybench:test[1:]").name == "toybench:test[1:]"


def test_registered_benchmark_is_a_valid_name(toybench: Path) -> None:
    assert list(DATASETS)[-1] == "toybench" and DATASETS["toybench"].description == "toy"
    with pytest.raises(DataError, match=r"unknown data set 'nosuch'.*valid: .*entity-questions:dev\|test, toybench:test"):
        load_dataset("nosuch:test")
    with pytest.raises(DataError, match=r"toybench has no split 'train'; valid: test"):
        load_dataset("toybench:train")


def test_bad_row_names_file_and_line(toybench: Path) -> None:
    _write(toybench, [*ROWS, {**ROWS[0], "qid": "toy-3", "key": "Z"}])
    with pytest.raises(DataError) as err:
        load_dataset("toybench:test")
    assert str(err.value) == "toybench/test.jsonl, line 3, field 'key': 'Z' is not one of the option labels A-B"
    assert (err.value.path, err.value.line, err.value.field) == ("toybench/test.jsonl", 3, "key")
    _write(toybench, ROWS, extra="{not json\n")
    with pytest.raises(DataError, match=r"^toybench/test.jsonl, line 3: invalid JSON"):
        load_dataset("toybench:test")
    assert len(load_dataset("toybench:test", skip_invalid=True)) == 2


def test_names_are_not_registered_twice(toybench: Path) -> None:
    for name, aliases in (("toybench", ()), ("toy", ()), ("arc-easy", ()), ("toy2", ("obqa",))):
        with pytest.raises(ValueError, match="already registered"):
            register_benchmark(name, splits=("test",), default_split="test", aliases=aliases)
    with pytest.raises(ValueError, match="default split 'dev'"):
        register_benchmark("toy3", splits=("test",), default_split="dev")
    assert "toy2" not in DATASETS and "toy3" not in DATASETS


def test_unregister_removes_name_and_aliases(tmp_path: Path) -> None:
    register_benchmark("toybench", splits=("test",), default_split="test", aliases=("toy",))(_load_toybench)
    unregister_benchmark("toybench")
    assert "toybench" not in DATASETS
    for spec in ("toybench:test", "toy:test"):
        with pytest.raises(DataError, match="unknown data set") as err:
            load_dataset(spec, data_dir=tmp_path)
        assert "toybench" not in str(err.value).split("valid: ")[1]
