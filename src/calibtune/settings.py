"""The settings of the commands that load a model, written once: name, type, default and help.

``calibtune eval`` runs an :class:`EvalConfig`, ``calibtune probe`` a :class:`ProbeConfig`; the
command line builds its flags from their fields (:func:`calibtune.cli.flags.flags_from`), so a new
setting is one field here and shows up as a flag, with this help, in ``--help``. A setting with fixed
choices is a ``Literal`` alias, and :func:`choices` reads the one list of its values from it (the
checks, the flags' choices and the error messages all use it). Standard library only: the command
line imports it without loading torch.

>>> choices(KnownRule)
('chance', 'any', 'majority', 'all')
>>> cfg = EvalConfig(data=["arc-easy:test"], out="runs/arc")
>>> cfg.model, cfg.scoring, cfg.batch_size
('smollm2', ['cloze'], 8)
>>> ProbeConfig(data="arc-easy:train").known_rule
'chance'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = [
    "FALSE_KNOWN_RATE", "AttnImplementation", "BatchSize", "Confidence", "Correctness", "Dtype", "EvalConfig",
    "Exemplars", "KnownRule", "Normalization", "ProbeConfig", "Scoring", "choices",
]

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
AttnImplementation = Literal["sdpa", "eager", "flash_attention_2"]
BatchSize = int | Literal["auto"]  # "auto": the largest that fits (calibtune.devices)
Scoring = Literal["letter", "cloze"]
Normalization = Literal["sum", "mean", "char", "byte", "pmi"]  # cloze option scores (scoring.ClozeScorer)
Exemplars = Literal["shared", "per-item"]  # k-shot: one seeded set for the split, or one per item
KnownRule = Literal["chance", "any", "majority", "all"]
Confidence = Literal["ptrue", "verbalized"]  # open questions, besides the sequence probability
Correctness = Literal["em", "f1", "judge"]
FALSE_KNOWN_RATE = 0.05  # the chance rule's default: at most this share of random guessers is called known

DEVICE_HELP = "cpu, cuda, cuda:N, mps or auto (CUDA, else MPS, else the CPU; says which). A missing device is an error."
DTYPE_HELP = ("auto = bfloat16 where the hardware has it (a CUDA GPU with bf16, a CPU with avx512_bf16/amx_bf16), "
              "else float32; says which.")
ATTN_HELP = ("Attention implementation (default: transformers', sdpa). Cloze falls back to one row per option, with "
             "a notice, when it takes no 4D mask (flash_attention_2).")
BATCH_HELP = "Items per forward pass, or auto: the largest from 64 down that fits, halving on out-of-memory."
BOOTSTRAP_HELP = "Bootstrap resamples for confidence intervals (0 = none)."
PROGRESS_HELP = "Show progress bars."
DATA_DIR_HELP = "Root of the data sets (default: $CALIBTUNE_DATA_DIR)."


def choices(kind: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` setting (also inside ``X | None`` or ``list[X]``), in their order.

    >>> choices(Dtype)
    ('auto', 'float32', 'bfloat16', 'float16')
    """
    args = get_args(kind)
    if args and all(isinstance(a, str) for a in args):
        return args
    return next(c for c in map(choices, args) if c)


def _setting(default: Any, help: str) -> Any:
    """A field with its flag's help; a list default is copied per instance."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _required(help: str) -> Any:
    return field(metadata={"help": help})


@dataclass(kw_only=True)
class EvalConfig:
    """Settings of one evaluation run (``calibtune eval``; also recorded in ``metrics.json``)."""

    model: str = _setting("smollm2", "smollm2 (embedded default), gemma3-270m, a local HF folder, a .gguf file or a hub id.")
    data: list[str] = _required("Data spec, repeatable: arc-easy:test, mmlu/anatomy:val, boolq:val, ./mine.jsonl ...")
    out: str = _required("Output folder (refused if not empty, unless --overwrite).")
    scoring: list[Scoring] = _setting(["cloze"], "letter (option-label token) and/or cloze (option log-likelihood); repeatable.")
    template: str = _setting("blob", "blob, cft, chat, or a template file with {question} {options} {context} {subject}.")
    shots: int = _setting(0, "Seeded k-shot exemplars from the data set's dev/train split.")
    exemplars: Exemplars = _setting("shared", "k-shot: one seeded exemplar set shared by all items (its keys/values "
                                              "computed once) or a new set per item (lm-eval's convention).")
    limit: int | None = _setting(None, "Seeded random subset of this many items per data set.")
    seed: int = _setting(0, "Seed for subsampling, option shuffling, exemplars and bootstrap.")
    shuffle_options: bool = _setting(False, "Permute each item's options (seeded).")
    normalize: Normalization = _setting("sum", "Cloze: 'sum' of token log-probs, per-token 'mean', per character 'char' "
                                               "(lm-eval's acc_norm), per byte 'byte', or 'pmi' (minus the option's "
                                               "unconditional log-likelihood).")
    batch_size: BatchSize = _setting(8, BATCH_HELP)
    dtype: Dtype = _setting("float32", DTYPE_HELP + " bfloat16 is about 2x faster on CPUs with AVX512-BF16.")
    device: str = _setting("auto", DEVICE_HELP)
    attn_implementation: AttnImplementation | None = _setting(None, ATTN_HELP)
    adapter: str | None = _setting(None, "A PEFT LoRA adapter folder saved by training.")
    trust_remote_code: bool = _setting(False, "Allow model code from the hub (off by default).")
    data_dir: str | None = _setting(None, DATA_DIR_HELP)
    fields: dict[str, str] = field(default_factory=dict)  # columns of file/hf: data (the CLI's --field KEY=COLUMN)
    skip_invalid: bool = _setting(False, "Skip malformed rows (and report how many) instead of failing.")
    n_bins: int = _setting(15, "Bins of the calibration metrics.")
    bootstrap: int = _setting(0, BOOTSTRAP_HELP)
    temperature_data: str | None = _setting(None, "Held-out data spec to fit temperature scaling on (never the test "
                                                  "set); adds '+ts' results.")
    overwrite: bool = _setting(False, "Replace results in a non-empty --out folder.")
    progress: bool = _setting(True, PROGRESS_HELP)
    # Open questions (calibtune.open_eval): answer prompt, generation cap, confidence kinds, correctness
    qa_template: str = _setting("qa", "Open questions: qa (SliCK's Q:/A:), chat, or a template file with {question} {subject}.")
    max_new_tokens: int = _setting(16, "Open questions: answer length cap in tokens (also stops at a newline or EOS).")
    confidence: list[Confidence] = _setting(["ptrue", "verbalized"], "Open questions: ptrue and/or verbalized, besides "
                                            "the sequence probability (product and per-token mean) every answer has; repeatable.")
    correctness: Correctness = _setting("em", "Open questions: correctness the calibration uses: em (exact match), f1, judge.")
    f1_threshold: float = _setting(0.5, "Open questions: an answer is F1-correct when its best token F1 >= this.")
    judge: str | None = _setting(None, "Open questions: a local causal LM that judges each answer (yes/no).")


@dataclass(kw_only=True)
class ProbeConfig:
    """Settings of one probing run (``calibtune probe``); ``None`` settings come from ``preset``."""

    model: str = _setting("smollm2", "The BASE model: smollm2, gemma3-270m, a local HF folder, a .gguf file or a hub id.")
    data: str = _required("Data spec: openbookqa:train, arc-easy:test, entity-questions/P19:test, ./mine.jsonl ...")
    out: str | None = _setting(None, "Output JSONL, one probe record per item (written atomically).")
    scoring: Scoring = _setting("cloze", "Multiple choice: cloze (option log-likelihood) or letter.")
    normalize: Literal["sum", "mean"] = _setting("sum", "Cloze: 'sum' of token log-probs or per-token 'mean' (use "
                                                        "the scoring the model is trained and evaluated with).")
    template: str = _setting("blob", "Multiple choice: blob, cft, chat, or a template file.")
    preset: str = _setting("default", "default (CPU-sized) or slick (the paper's 10 prompts, 4 shots, 16 samples).")
    n_prompts: int | None = _setting(None, "Random few-shot prompts per item (default: the preset's).")
    shots: int | None = _setting(None, "Exemplars per prompt (default: the preset's).")
    n_samples: int | None = _setting(None, "Open questions: sampled answers per prompt (default: the preset's).")
    temperature: float = _setting(0.5, "Open questions: sampling temperature of the sampled answers.")
    top_k: int = _setting(40, "Open questions: top-k sampling of the sampled answers.")
    max_new_tokens: int = _setting(16, "Open questions: answer length cap in tokens.")
    known_rule: KnownRule = _setting("chance", "known = more prompts right than a random guesser explains (chance, "
                                               "default), any prompt right (not Unknown), a majority, or all.")
    false_known: float = _setting(FALSE_KNOWN_RATE, "The chance rule: at most this share of random guessers is called known.")
    exemplars: Exemplars = _setting("shared", "Multiple choice: one seeded exemplar set per prompt index shared by "
                                              "all items (computed once), or a new set per item.")
    limit: int | None = _setting(None, "Seeded random subset of this many items.")
    seed: int = _setting(0, "Seed for subsampling, exemplars, option orders and sampling.")
    batch_size: BatchSize = _setting(8, "Prompts per forward pass / generate call, or auto: the largest from 64 down "
                                        "that fits, halving on out-of-memory.")
    dtype: Dtype = _setting("float32", DTYPE_HELP)
    device: str = _setting("auto", DEVICE_HELP)
    attn_implementation: AttnImplementation | None = _setting(None, ATTN_HELP)
    data_dir: str | None = _setting(None, DATA_DIR_HELP)
    cache: bool = _setting(True, "Reuse an identical earlier probe instead of running the model.")
    cache_dir: str | None = _setting(None, "Probe cache (default: $CALIBTUNE_CACHE/probes or ~/.cache/calibtune/probes).")
    progress: bool = _setting(True, PROGRESS_HELP)
    overwrite: bool = _setting(True, "Replace an existing out file (the command line refuses one without --overwrite).")
