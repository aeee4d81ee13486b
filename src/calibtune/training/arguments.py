"""The one list of calibration settings: the fields of ``CalibrationTrainingArguments``.

``CalibrationTrainingArguments`` is ``TrainingArguments`` plus these fields (TRL's pattern: one
arguments class per trainer). The YAML configs read the same fields through pydantic models built
from that list (:func:`settings_model`): ``ObjectiveSettings`` (what a grid method sets) and
``CalibrationSettings`` (plus how options are scored), which ``TrainConfig`` and the grid's ``Method``
extend. A new setting is one field here, with its type, default, bounds and help.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, get_args, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from transformers import TrainingArguments

from ..config import validation_problems
from ..settings import Normalization, Scoring


@dataclass
class CalibrationTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the calibration settings (so every Trainer flag still applies).

    >>> args = CalibrationTrainingArguments(output_dir="/tmp/ct", objective="cogcalib", known_source="nll",
    ...                                     report_to="none", use_cpu=True)
    >>> args.objective, args.refit_every, args.remove_unused_columns
    ('cogcalib', 20, False)
    >>> CalibrationTrainingArguments(output_dir="/tmp/ct", style_steps=-1, use_cpu=True)
    Traceback (most recent call last):
    ValueError: style_steps: Input should be greater than or equal to 0
    """

    objective: str = field(default="ce", metadata={"help": "ce, ls, mbls, ecp, focal, sft, cogcalib, rcft ... "
                                                           "(calibtune.objectives.OBJECTIVES)."})
    objective_params: dict[str, Any] = field(default_factory=dict, metadata={"help": "Parameters of the objective."})
    scoring: Scoring = field(
        default="cloze", metadata={"help": "letter or cloze: which option distribution is trained."})
    normalize: Normalization = field(
        default="sum", metadata={"help": "Cloze: how an option's token log-probs make its score."})
    known_source: Literal["none", "probe", "nll"] = field(
        default="none", metadata={"help": "CogCalib known indicator: probe labels or online NLL threshold."})
    style_steps: int = field(default=0, metadata={"help": "Steps of plain CE before the calibration regulariser "
                                                          "starts.", "ge": 0})
    refit_every: int = field(default=20, metadata={"help": "Steps between Youden's-J refits of the NLL threshold.",
                                                   "ge": 1})
    estep: Literal["epoch", "once"] = field(
        default="epoch", metadata={"help": "RCFT E-step over the training set: every 'epoch' (paper) or 'once' "
                                           "(released code)."})
    sft_target: Literal["answer", "question+answer"] = field(
        default="answer", metadata={"help": "'answer' (L_SFT1) or 'question+answer' (L_SFT2: adds the prompt's LM "
                                            "loss)."})
    question_weight: float = field(default=1.0, metadata={"help": "Weight of the prompt's mean token NLL with "
                                                                  "sft_target='question+answer'.", "ge": 0})

    def __post_init__(self) -> None:
        super().__post_init__()
        try:  # the same checks as the YAML configs: the pydantic model of these fields
            CalibrationSettings.model_validate({name: getattr(self, name) for name in CALIBRATION_FIELDS})
        except ValidationError as e:
            raise ValueError(validation_problems(e)) from None
        self.remove_unused_columns = False  # our batches carry labels/known flags the model never sees


CALIBRATION_FIELDS = tuple(f.name for f in fields(CalibrationTrainingArguments)
                           if f.name not in TrainingArguments.__dataclass_fields__)
SCORING_FIELDS = ("scoring", "normalize")
OBJECTIVE_FIELDS = tuple(name for name in CALIBRATION_FIELDS if name not in SCORING_FIELDS)
_TYPES = {name: hint for name, hint in get_type_hints(CalibrationTrainingArguments).items() if name in CALIBRATION_FIELDS}
KNOWN_SOURCES = get_args(_TYPES["known_source"])
SFT_TARGETS = get_args(_TYPES["sft_target"])


def settings_model(name: str, names: tuple[str, ...], base: type[BaseModel] | None = None) -> type[BaseModel]:
    """A pydantic model of these ``CalibrationTrainingArguments`` fields: their types, defaults, bounds
    (``ge`` in the field's metadata) and help, so YAML configs check exactly what the Trainer takes.

    >>> M = settings_model("M", ("style_steps", "estep"))
    >>> M().style_steps, M(estep="once").estep
    (0, 'once')
    >>> sorted(M.model_json_schema()["properties"]["style_steps"])
    ['default', 'description', 'minimum', 'title', 'type']
    """
    spec: dict[str, Any] = {}
    for f in fields(CalibrationTrainingArguments):
        if f.name in names:
            default = {"default_factory": f.default_factory} if f.default is MISSING else {"default": f.default}
            bounds = {"ge": f.metadata["ge"]} if "ge" in f.metadata else {}
            spec[f.name] = (_TYPES[f.name], Field(description=f.metadata["help"], **default, **bounds))
    if base is None:
        return create_model(name, __config__=ConfigDict(extra="forbid"), **spec)
    return create_model(name, __base__=base, **spec)


ObjectiveSettings = settings_model("ObjectiveSettings", OBJECTIVE_FIELDS)
ObjectiveSettings.__doc__ = "The training objective and its known indicator: what a grid method sets."
CalibrationSettings = settings_model("CalibrationSettings", SCORING_FIELDS, base=ObjectiveSettings)
CalibrationSettings.__doc__ = "The objective settings plus how options are scored: every calibration setting."
