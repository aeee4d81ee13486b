"""The flags of `calibtune eval` and `calibtune probe` are the fields of their settings (calibtune.settings)."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import get_args

import pytest
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.cli.flags import flags_from
from calibtune.cli.run import eval_cmd, probe_cmd
from calibtune.settings import EvalConfig, ProbeConfig

runner = CliRunner()


def _plain(value):
    value = getattr(value, "value", value)
    return [_plain(v) for v in value] if isinstance(value, list) else value


@pytest.mark.parametrize(("command", "config", "own", "changed"), [
    (eval_cmd, EvalConfig, {"field"}, {}),
    (probe_cmd, ProbeConfig, set(), {"out": ..., "overwrite": False}),
])
def test_every_setting_is_a_flag_with_its_default_and_help(command, config, own, changed) -> None:
    params = inspect.signature(command).parameters
    fields = {f.name: f for f in dataclasses.fields(config) if "help" in f.metadata}
    assert set(params) == set(fields) | own
    for name, f in fields.items():
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else ...)
        expected = changed.get(name, default)
        got = _plain(params[name].default)
        assert (int(got) if name == "batch_size" else got) == expected, name
        assert get_args(params[name].annotation)[1].help == f.metadata["help"], name


def test_flag_values_reach_the_settings_as_plain_values(tmp_path: Path, monkeypatch) -> None:
    seen = {}

    def fake_evaluate(cfg):
        seen["cfg"] = cfg
        return {"results": {}, "model_load_seconds": 0}

    monkeypatch.setattr("calibtune.evaluate.evaluate", fake_evaluate)
    res = runner.invoke(app, ["eval", "--data", "arc-easy:test", "--out", str(tmp_path / "o"), "--scoring", "letter",
                              "--scoring", "cloze", "--batch-size", "auto", "--dtype", "bfloat16", "--exemplars",
                              "per-item", "--attn-implementation", "eager", "--limit", "7", "--no-progress"])
    assert res.exit_code == 0, res.output
    cfg = seen["cfg"]
    assert cfg.scoring == ["letter", "cloze"] and all(type(s) is str for s in cfg.scoring)
    assert (cfg.batch_size, cfg.dtype, cfg.exemplars, cfg.attn_implementation, cfg.limit, cfg.progress) == (
        "auto", "bfloat16", "per-item", "eager", 7, False)
    assert type(cfg.dtype) is str and cfg.model == "smollm2" and cfg.fields == {}


def test_a_bad_choice_is_refused_by_the_flag_and_probe_exposes_every_setting() -> None:
    res = runner.invoke(app, ["eval", "--data", "x", "--out", "y", "--dtype", "float64"])
    assert res.exit_code != 0 and "float64" in res.output
    res = runner.invoke(app, ["probe", "--help"], env={"COLUMNS": "200"})
    assert "--top-k" in res.output and "--temperature" in res.output  # settings the hand-written flags lacked


def test_a_setting_without_a_flag_type_must_be_excluded() -> None:
    @dataclasses.dataclass(kw_only=True)
    class Toy:
        columns: dict[str, str] = dataclasses.field(default_factory=dict, metadata={"help": "columns"})

    with pytest.raises(TypeError, match="exclude it"):
        flags_from(Toy)(lambda settings: settings)
    assert list(inspect.signature(flags_from(Toy, exclude=("columns",))(lambda settings: settings)).parameters) == []
