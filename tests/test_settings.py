"""One list of calibration settings: ``CalibrationTrainingArguments``' fields, read by ``TrainConfig``
(``calibtune train``) and the grid's ``Method`` (``calibtune compare``) with the same types, defaults
and bounds."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from calibtune.grid.config import Method
from calibtune.training import TrainConfig, training_arguments
from calibtune.training.arguments import CALIBRATION_FIELDS, OBJECTIVE_FIELDS, CalibrationTrainingArguments

ARG_FIELDS = {f.name: f for f in dataclasses.fields(CalibrationTrainingArguments)}


def _default(name: str):
    f = ARG_FIELDS[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def test_the_list_is_the_trainer_arguments_own_fields() -> None:
    assert set(CALIBRATION_FIELDS) == {
        "objective", "objective_params", "scoring", "normalize", "known_source", "style_steps", "refit_every",
        "estep", "sft_target", "question_weight"}
    assert set(OBJECTIVE_FIELDS) == set(CALIBRATION_FIELDS) - {"scoring", "normalize"}


@pytest.mark.parametrize("name", CALIBRATION_FIELDS)
def test_train_config_has_each_setting_with_the_trainer_default(name: str) -> None:
    cfg = TrainConfig(train_data="arc-easy:train")
    assert getattr(cfg, name) == _default(name)
    assert TrainConfig.model_fields[name].description == ARG_FIELDS[name].metadata["help"]


@pytest.mark.parametrize("name", [n for n in OBJECTIVE_FIELDS if n != "objective"])
def test_grid_method_has_each_objective_setting_with_the_trainer_default(name: str) -> None:
    assert getattr(Method(name="m"), name) == _default(name)


def test_grid_method_leaves_scoring_to_the_grid() -> None:
    with pytest.raises(ValidationError, match="scoring"):
        Method(name="m", objective="ce", scoring="letter")
    assert Method(name="base").objective is None  # no objective: the untouched model


@pytest.mark.parametrize(("name", "bad"), [("style_steps", -1), ("refit_every", 0), ("question_weight", -0.5),
                                           ("known_source", "oracle"), ("estep", "never"),
                                           ("sft_target", "prompt"), ("normalize", "median")])
def test_a_bad_value_is_refused_the_same_way_everywhere(tmp_path, name: str, bad) -> None:
    with pytest.raises(ValidationError, match=name):
        TrainConfig(train_data="arc-easy:train", **{name: bad})
    if name in OBJECTIVE_FIELDS:
        with pytest.raises(ValidationError, match=name):
            Method(name="m", objective="ce", **{name: bad})
    with pytest.raises(ValueError, match=f"^{name}: "):
        CalibrationTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **{name: bad})


def test_training_arguments_carry_every_setting_of_the_config(tmp_path) -> None:
    chosen = {"objective": "cogcalib", "objective_params": {"alpha": 0.05, "regularizer": "ls"}, "scoring": "letter",
              "normalize": "mean", "known_source": "nll", "style_steps": 10, "refit_every": 25, "estep": "once",
              "sft_target": "question+answer", "question_weight": 0.5}
    assert set(chosen) == set(CALIBRATION_FIELDS)
    cfg = TrainConfig(train_data="arc-easy:train", device="cpu", training={"output_dir": str(tmp_path)}, **chosen)
    args = training_arguments(cfg)
    assert {name: getattr(args, name) for name in CALIBRATION_FIELDS} == chosen


@pytest.mark.parametrize("native", [True, False])
def test_dtype_auto_trains_fp32_weights_under_bf16_autocast_where_native(tmp_path, monkeypatch, caplog, native) -> None:
    import logging

    from calibtune.training import config as training_config

    monkeypatch.setattr(training_config, "native_bf16", lambda device: (native, "test hardware"))
    cfg = TrainConfig(train_data="arc-easy:train", device="cpu", dtype="auto", training={"output_dir": str(tmp_path)})
    with caplog.at_level(logging.INFO, logger="calibtune"):
        args = training_arguments(cfg)
    assert args.bf16 is native and training_config.load_weights_dtype(cfg) == "float32"
    assert f"float32 weights{' with bf16 autocast' if native else ''} (test hardware)" in caplog.text
    explicit = TrainConfig(train_data="arc-easy:train", device="cpu", dtype="auto",
                           training={"output_dir": str(tmp_path), "bf16": False})
    assert training_arguments(explicit).bf16 is False  # an explicit training.bf16 wins


def test_a_fixed_dtype_is_the_weights_dtype_and_leaves_autocast_alone(tmp_path) -> None:
    from calibtune.training.config import load_weights_dtype

    cfg = TrainConfig(train_data="arc-easy:train", device="cpu", dtype="bfloat16", training={"output_dir": str(tmp_path)})
    assert load_weights_dtype(cfg) == "bfloat16" and training_arguments(cfg).bf16 is False
