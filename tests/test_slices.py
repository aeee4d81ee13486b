"""Slices of a split: ``[lo:hi]`` as Hugging Face ``datasets`` reads them (file order), and the
fixed pseudo-random partition under ``[lo:hi](shuffled)`` that round-1 experiments used."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from calibtune.data import DataError, load_dataset

DATA_DIR = Path(os.environ.get("CALIBTUNE_DATA_DIR") or Path(__file__).parents[1].parent / "shared" / "data")
requires_data = pytest.mark.skipif(not (DATA_DIR / "PROVENANCE.md").is_file(), reason=f"no shared data at {DATA_DIR}")
RESULTS = Path(__file__).parents[1] / "experiments" / "results"


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    """A generic JSONL file of 37 items (not a multiple of 100, so percentages round)."""
    path = tmp_path_factory.mktemp("slices") / "items.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "question": f"Q{i}?", "options": ["a", "b"], "answer": i % 2})
                            + "\n" for i in range(37)))
    return path


SPECS = ["[:10]", "[5:20]", "[30:]", "[-7:]", "[-20:-5]", "[:80%]", "[10%:35%]", "[-25%:]", "[3:500]", "[:-36]"]


@pytest.mark.parametrize("part", SPECS)
def test_file_order_slice_equals_datasets(rows_file: Path, part: str) -> None:
    """The same rows as ``datasets.load_dataset("json", ..., split="train" + part)``."""
    datasets = pytest.importorskip("datasets")
    theirs = datasets.load_dataset("json", data_files={"train": str(rows_file)}, split=f"train{part}")
    ours = load_dataset(f"{rows_file}{part}")
    assert [it.id for it in ours.items] == list(theirs["id"])
    assert ours.name == f"{rows_file}{part}"


def test_slice_is_rows_before_validation(tmp_path: Path) -> None:
    """Positions count rows of the file, so a bad row inside the slice is an error and one outside is not read."""
    lines = [{"id": f"r{i}", "question": f"Q{i}?", "options": ["a", "b"], "answer": 0} for i in range(6)]
    lines[4]["question"] = ""
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert [it.id for it in load_dataset(f"{path}[:4]").items] == ["r0", "r1", "r2", "r3"]
    with pytest.raises(DataError, match=r"bad\.jsonl, line 5, field 'question': empty"):
        load_dataset(f"{path}[2:]")
    skipped = load_dataset(f"{path}[2:]", skip_invalid=True)
    assert [it.id for it in skipped.items] == ["r2", "r3", "r5"] and skipped.n_skipped == 1


@pytest.mark.parametrize("spec, message", [
    ("x.jsonl[5:2]", "empty slice"),
    ("x.jsonl[1:50%]", "must be row numbers or both percentages"),
    ("x.jsonl[:150%]", r"\[-100%, 100%\]"),
    ("x.jsonl[0:10](random)", r"unknown slice mode \(random\); valid: \(shuffled\)"),
])
def test_bad_slices(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(spec)


def _old_partition(ids: list[str], lo: int | None, hi: int | None) -> list[str]:
    """The pre-change meaning of ``[lo:hi]``, written out independently: positions lo:hi of a seed-0
    permutation, chosen items in file order."""
    chosen = set(np.random.default_rng(0).permutation(len(ids))[lo:hi].tolist())
    return [x for i, x in enumerate(ids) if i in chosen]


@requires_data
@pytest.mark.parametrize("spec, lo, hi", [("winogrande:dev", 0, 500), ("winogrande:dev", 700, None),
                                          ("boolq:val", 1000, 1200), ("mmlu:val", None, 1000)])
def test_shuffled_is_the_old_partition(spec: str, lo: int | None, hi: int | None) -> None:
    whole = [it.id for it in load_dataset(spec, data_dir=DATA_DIR).items]
    part = f"[{'' if lo is None else lo}:{'' if hi is None else hi}]"
    shuffled = load_dataset(f"{spec}{part}(shuffled)", data_dir=DATA_DIR)
    assert [it.id for it in shuffled.items] == _old_partition(whole, lo, hi)
    assert shuffled.name == f"{spec}{part}(shuffled)"
    assert load_dataset(f"{spec}{part}(shuffled)", data_dir=DATA_DIR, seed=7).items == shuffled.items
    assert [it.id for it in load_dataset(f"{spec}{part}", data_dir=DATA_DIR).items] == whole[lo:hi]


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


@requires_data
@pytest.mark.parametrize("spec, limit, predictions", [
    ("winogrande:dev[700:](shuffled)", 300, "cogcalib/winogrande/seed0/base/winogrande_dev_700__.predictions.jsonl"),
    ("boolq:val[1200:](shuffled)", 300, "cogcalib/boolq/seed0/sft/boolq_val_1200__.predictions.jsonl"),
    ("mmlu:test[0:1000](shuffled)+medmcqa:dev[2000:3000](shuffled)+openbookqa:test", 300,
     "cft/mix/seed0/base/mmlu_test_0_1000__medmcqa_dev_2000_3000__openbookqa_test.predictions.jsonl"),
])
def test_configs_select_the_round_one_items(spec: str, limit: int, predictions: str) -> None:
    """The ``(shuffled)`` specs of the updated configs give exactly the items of the committed round-1 predictions."""
    path = RESULTS / predictions
    if not path.is_file():
        pytest.skip(f"{path} not present")
    assert [it.id for it in load_dataset(spec, data_dir=DATA_DIR, limit=limit, seed=0).items] == _ids(path)


@requires_data
def test_experiment_configs_use_the_explicit_partition() -> None:
    """Every sliced spec in the round-1 configs says ``(shuffled)``: a bare slice would now pick other items."""
    import re

    import yaml

    for name in ("cogcalib.yaml", "cft.yaml"):
        cfg = yaml.safe_load((RESULTS.parent / name).read_text())
        specs = [t[key] for t in cfg["tasks"] for key in ("train", "heldout")] + \
                [s for t in cfg["tasks"] for s in t.get("test", []) + t.get("ood", [])]
        for spec in specs:
            for part in spec.split("+"):
                assert not re.search(r"\]$", part), f"{name}: {part} has a file-order slice"
