"""The Trainer arguments of a calibration run: ``TrainingArguments`` plus the calibration settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

KNOWN_SOURCES = ("none", "probe", "nll")
SFT_TARGETS = ("answer", "question+answer")


@dataclass
class CalibrationTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the calibration settings (so every Trainer flag still applies)."""

    objective: str = field(default="ce", metadata={"help": "ce, ls, mbls, ecp, focal, sft or cogcalib."})
    objective_params: dict = field(default_factory=dict, metadata={"help": "Parameters of the objective."})
    scoring: str = field(default="cloze", metadata={"help": "letter or cloze: which option distribution is trained."})
    normalize: str = field(default="sum", metadata={"help": "Cloze: sum or mean of the option's token log-probs."})
    known_source: str = field(default="none", metadata={"help": "CogCalib known indicator: probe labels or online NLL threshold."})
    style_steps: int = field(default=0, metadata={"help": "Steps of plain CE before the calibration regulariser starts."})
    refit_every: int = field(default=20, metadata={"help": "Steps between Youden's-J refits of the NLL threshold."})
    estep: str = field(default="epoch", metadata={"help": "RCFT E-step over the training set: every 'epoch' (paper) or 'once' (released code)."})
    sft_target: str = field(default="answer", metadata={"help": "'answer' (L_SFT1) or 'question+answer' (L_SFT2: adds the prompt's LM loss)."})
    question_weight: float = field(default=1.0, metadata={"help": "Weight of the prompt's mean token NLL with sft_target='question+answer'."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.known_source not in KNOWN_SOURCES:
            raise ValueError(f"known_source must be one of {KNOWN_SOURCES}, got {self.known_source!r}")
        if self.estep not in ("epoch", "once"):
            raise ValueError(f"estep must be 'epoch' or 'once', got {self.estep!r}")
        if self.sft_target not in SFT_TARGETS:
            raise ValueError(f"sft_target must be one of {SFT_TARGETS}, got {self.sft_target!r}")
        if not self.question_weight >= 0:
            raise ValueError(f"question_weight must be >= 0, got {self.question_weight!r}")
        if self.scoring not in ("letter", "cloze"):
            raise ValueError(f"scoring must be 'letter' or 'cloze', got {self.scoring!r}")
        self.remove_unused_columns = False  # our batches carry labels/known flags the model never sees
