"""One device story (calibtune.devices): device and dtype `auto` say what they chose, a missing device is an
error, `--batch-size auto` halves on out-of-memory, cloze falls back to unpacked rows when the attention
implementation takes no 4D mask; and the flags of eval, probe, train and compare."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from calibtune import devices
from calibtune.cli import app
from calibtune.data import MCItem
from calibtune.devices import (
    check_attention,
    parse_batch_size,
    resolve_device,
    resolve_dtype,
    with_batch_backoff,
)
from calibtune.distributed import score_sharded
from calibtune.models import load_model
from calibtune.prompts import build_requests, get_template
from calibtune.scoring import ClozeScorer, LetterScorer, score

OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 139.81 GiB total capacity)"


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch) -> None:
    monkeypatch.setattr(devices, "_said", set())  # notices are said once per process


def _no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def _requests(n: int, scoring: str):
    words = ["Paris", "Berlin", "Rome", "cat", "dog", "fish", "red", "blue", "water", "fire"]
    items = [MCItem(id=f"i{i}", question=f"Which {' '.join(words[: 1 + i % 5])} {i}?",
                    options=tuple(words[(i + j) % 10] for j in range(2 + i % 3)), gold=i % 2) for i in range(n)]
    return build_requests(items, get_template("blob"), scoring)


# ------------------------------------------------------------------ device and dtype


def test_auto_device_says_what_it_chose(monkeypatch, caplog) -> None:
    _no_gpu(monkeypatch)
    with caplog.at_level(logging.INFO, logger="calibtune"):
        assert resolve_device("auto") == "cpu"
    assert "device auto: cpu (no CUDA or MPS device visible)" in caplog.text
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    with caplog.at_level(logging.INFO, logger="calibtune"):
        assert resolve_device("auto") == "cuda"
    assert "device auto: cuda (NVIDIA H200)" in caplog.text


@pytest.mark.parametrize(("device", "message"), [
    ("cuda", "no CUDA device is visible"), ("cuda:1", "no CUDA device is visible"),
    ("mps", "MPS is not available"), ("gpu7", "not a device name"), ("meta", "runs on cpu, cuda or mps"),
])
def test_a_missing_device_is_an_error_never_the_cpu(monkeypatch, device: str, message: str) -> None:
    _no_gpu(monkeypatch)
    with pytest.raises(ValueError, match=message):
        resolve_device(device)


def test_a_gpu_index_beyond_the_visible_ones_is_an_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize(("native", "expected"), [(True, "bfloat16"), (False, "float32"), (None, "float32")])
def test_auto_dtype_on_the_cpu_follows_its_bf16_instructions(monkeypatch, caplog, native, expected) -> None:
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.INFO, logger="calibtune"):
        assert resolve_dtype("auto", "cpu") == expected
    assert f"dtype auto: {expected}" in caplog.text and "avx512_bf16" in caplog.text


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_auto_dtype_on_a_gpu_follows_its_bf16_support(monkeypatch, bf16: bool, expected: str) -> None:
    calls = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: calls.append(
        including_emulation) or bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a GPU")
    assert resolve_dtype("auto", "cuda:0") == expected
    assert calls == [False]  # native bf16, not emulated


def test_explicit_dtypes_pass_and_unknown_ones_fail() -> None:
    assert resolve_dtype("float16", "cpu") == "float16"
    with pytest.raises(ValueError, match="fp8"):
        resolve_dtype("fp8", "cpu")


def test_flash_attention_is_refused_before_a_model_loads() -> None:
    with pytest.raises(ValueError, match="needs a CUDA device"):
        check_attention("flash_attention_2", "cpu", "bfloat16")
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        check_attention("flash_attention_2", "cuda:0", "float32")
    for ok in (None, "sdpa", "eager"):
        check_attention(ok, "cpu", "float32")


# ------------------------------------------------------------------ batch size auto


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("16", 16), (3, 3)])
def test_batch_size_values(value, expected) -> None:
    assert parse_batch_size(value) == expected


@pytest.mark.parametrize("value", ["0", "-2", "big", 0, True, 2.5, None])
def test_bad_batch_sizes_name_the_flag(value) -> None:
    with pytest.raises(ValueError, match="--batch-size must be a positive integer or 'auto'"):
        parse_batch_size(value)


def test_backoff_halves_on_out_of_memory_and_says_so(caplog) -> None:
    tried: list[int] = []

    def run(size: int) -> int:
        tried.append(size)
        if size > 5:
            raise torch.OutOfMemoryError(OOM)
        return 10 * size

    with caplog.at_level(logging.INFO, logger="calibtune"):
        assert with_batch_backoff(run, 20, where="cuda:0") == (50, 5)
    assert tried == [20, 10, 5]
    assert "batch size 20 ran out of memory on cuda:0; trying 10" in caplog.text
    assert "batch size auto: 5 on cuda:0" in caplog.text


def test_backoff_lets_other_errors_through_and_gives_up_at_one() -> None:
    tried: list[int] = []

    def broken(size: int) -> int:
        tried.append(size)
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        with_batch_backoff(broken, 16)
    assert tried == [16]

    def never_fits(size: int) -> int:
        tried.append(size)
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB")

    tried.clear()
    with pytest.raises(RuntimeError, match="can't allocate"):
        with_batch_backoff(never_fits, 4)
    assert tried == [4, 2, 1]


def test_auto_batch_size_backs_off_inside_scoring(tiny, monkeypatch) -> None:
    model, tok = tiny
    requests = _requests(12, "letter")
    reference = score(model, tok, requests, scoring="letter", batch_size=3, progress=False)
    forward, rows = LetterScorer.forward, []

    def fits_three(self, model, batch, *args, **kwargs):  # a device that holds 3 rows at most
        rows.append(int(batch["input_ids"].shape[0]))
        if rows[-1] > 3:
            raise torch.OutOfMemoryError(OOM)
        return forward(self, model, batch, *args, **kwargs)

    monkeypatch.setattr(LetterScorer, "forward", fits_three)
    got = score_sharded(model, tok, requests, scoring="letter", batch_size="auto", progress=False)
    assert rows[:2] == [12, 6] and set(rows[2:]) == {3} and len(rows) == 2 + 4
    for a, b in zip(reference, got):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ attention implementation


def test_cloze_falls_back_to_unpacked_rows_with_a_notice(tiny_model_dir: Path, two_d_attention: str,
                                                        caplog) -> None:
    sdpa, tok = load_model(str(tiny_model_dir))
    flash_like, _ = load_model(str(tiny_model_dir), attn_implementation=two_d_attention)  # takes no 4D mask
    assert flash_like.config._attn_implementation == two_d_attention
    requests = _requests(6, "cloze")
    with pytest.raises(ValueError, match="4D mask"):  # what packing would do with it
        scorer = ClozeScorer()
        scorer.forward(flash_like, scorer.collate(scorer.encode(tok, requests)))
    reference = score_sharded(sdpa, tok, requests, scoring="cloze", progress=False)
    with caplog.at_level(logging.INFO, logger="calibtune"):
        first = score_sharded(flash_like, tok, requests, scoring="cloze", progress=False)
        score_sharded(flash_like, tok, requests, scoring="cloze", progress=False)
    for a, b in zip(reference, first):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    said = [r.getMessage() for r in caplog.records if "unpacked" in r.getMessage()]
    assert said == [f"cloze: attention implementation {two_d_attention!r} cannot take the packed 4D mask; "
                    "scoring one row per option (unpacked)"]  # one line, once


def test_scorer_fits_a_sliding_window_model(tiny, caplog) -> None:
    model, tok = tiny
    encoded = ClozeScorer().encode(tok, _requests(4, "cloze"))
    assert devices.fit_scorer_to_model(ClozeScorer(), model, encoded).share_prompt is True
    assert devices.fit_scorer_to_model(LetterScorer(), model, encoded) == LetterScorer()
    longest = max(len(e.context_ids) + max(len(o) for o in e.option_ids) for e in encoded)
    model.config.sliding_window = longest - 1
    try:
        with caplog.at_level(logging.INFO, logger="calibtune"):
            assert devices.fit_scorer_to_model(ClozeScorer(), model, encoded).share_prompt is False
    finally:
        model.config.sliding_window = None
    assert f"sliding window ({longest - 1})" in caplog.text


# ------------------------------------------------------------------ the flags


@pytest.mark.parametrize("command", ["eval", "probe", "train", "compare"])
def test_every_command_has_the_device_flags(command: str) -> None:
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    for flag in ("--device", "--dtype", "--attn-implementation", "--batch-size", "auto", "flash_attention_2"):
        assert flag in res.output, (command, flag)


@pytest.mark.parametrize(("flags", "message"), [
    (["--device", "cuda"], "no CUDA device is visible"),
    (["--batch-size", "0"], "--batch-size must be a positive integer or 'auto'"),
    (["--attn-implementation", "flash_attention_2", "--device", "cpu"], "needs a CUDA device"),
])
def test_eval_refuses_what_the_machine_cannot_do(tmp_path: Path, tiny_model_dir: Path, monkeypatch, flags,
                                                 message) -> None:
    _no_gpu(monkeypatch)
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "Which is red?", "options": ["fire", "water"], "answer": 0}))
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out",
                                   str(tmp_path / "out"), "--no-progress", *flags])
    assert res.exit_code == 2 and message in " ".join(res.output.split())
    assert not (tmp_path / "out").exists()


def test_eval_auto_dtype_is_recorded(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    _no_gpu(monkeypatch)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "Which is red?", "options": ["fire", "water"], "answer": 0}))
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out",
                                   str(tmp_path / "out"), "--no-progress", "--dtype", "auto", "--device", "auto",
                                   "--batch-size", "auto"])
    assert res.exit_code == 0, res.output
    assert "dtype auto: float32" in res.output and "batch size auto: 1" in res.output
    config = json.loads((tmp_path / "out" / "metrics.json").read_text())["config"]
    assert (config["dtype"], config["device"], config["batch_size"]) == ("float32", "cpu", "auto")
