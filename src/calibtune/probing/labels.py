"""Probe records and the rules that label them: SliCK categories, the chance rule, known/unknown.

Pure functions of the per-prompt results (no model): :func:`categorize_mc`, :func:`categorize_open`,
:func:`is_known` with its ``known_rule`` (see :mod:`calibtune.probing`), and the probe file's records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..settings import FALSE_KNOWN_RATE, KnownRule, choices

KNOWN_RULES: tuple[str, ...] = choices(KnownRule)
CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")


@dataclass
class ProbeRecord:
    """What the base model knows about one item.

    ``p_correct``: fraction of prompts answered right (greedy for open questions);
    ``p_correct_sampled``: fraction of sampled answers right (open questions only, else None);
    ``nll``: ``-log p(gold)`` in the canonical 0-shot prompt; ``prompts``: per-prompt details.
    """

    id: str
    category: str
    known: bool
    p_correct: float
    nll: float
    n_prompts: int
    p_correct_sampled: float | None = None
    prompts: list[dict[str, Any]] = field(default_factory=list)


def categorize_mc(correct: Sequence[bool]) -> str:
    """SliCK adapted to multiple choice: all prompts right → HighlyKnown, some → MaybeKnown, none → Unknown."""
    if len(correct) == 0:
        raise ValueError("categorize_mc needs at least one prompt result")
    if all(correct):
        return "HighlyKnown"
    return "MaybeKnown" if any(correct) else "Unknown"


def categorize_open(greedy: Sequence[bool], sampled: Sequence[bool]) -> str:
    """SliCK (papers.md §1.5) from the correctness of the greedy answers and of the sampled answers."""
    if len(greedy) == 0:
        raise ValueError("categorize_open needs at least one greedy answer")
    if all(greedy):
        return "HighlyKnown"
    if any(greedy):
        return "MaybeKnown"
    return "WeaklyKnown" if any(sampled) else "Unknown"


def binomial_tail(c: int, n: int, p: float) -> float:
    """P(X >= c) for X ~ Binomial(n, p): how often a guesser right with probability p gets c of n right.

    >>> round(binomial_tail(4, 4, 0.25), 6), round(binomial_tail(3, 4, 0.25), 6)
    (0.003906, 0.050781)
    """
    return float(sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(max(c, 0), n + 1)))


def chance_known(n_right: int, n_prompts: int, n_options: int, rate: float = FALSE_KNOWN_RATE) -> bool:
    """Whether ``n_right`` of ``n_prompts`` right is more than a uniform guesser over ``n_options`` explains.

    >>> chance_known(4, 4, 4), chance_known(3, 4, 4), chance_known(4, 4, 2), chance_known(5, 5, 2)
    (True, False, False, True)
    """
    return n_right > 0 and binomial_tail(n_right, n_prompts, 1 / n_options) <= rate


def false_known_rate(n_prompts: int, n_options: int, rule: KnownRule = "chance", rate: float = FALSE_KNOWN_RATE) -> float:
    """The probability that a uniform guesser over ``n_options`` is called known under ``rule``.

    >>> round(false_known_rate(4, 4, "chance"), 4), round(false_known_rate(4, 4, "any"), 4)
    (0.0039, 0.6836)
    """
    p = 1 / n_options
    if rule == "chance":
        need = next((c for c in range(1, n_prompts + 1) if binomial_tail(c, n_prompts, p) <= rate), None)
        return 0.0 if need is None else binomial_tail(need, n_prompts, p)
    need = {"any": 1, "majority": n_prompts // 2 + 1, "all": n_prompts}[rule]
    return binomial_tail(need, n_prompts, p)


def is_known(category: str, p_correct: float, rule: KnownRule = "any", *, n_prompts: int | None = None,
             n_options: int | None = None, rate: float = FALSE_KNOWN_RATE) -> bool:
    """The known/unknown label: ``chance`` = more right prompts than chance explains (needs ``n_prompts``
    and ``n_options``; open questions pass ``n_options=None`` and get ``any``), ``any`` = not Unknown,
    ``majority`` = P_correct > 0.5, ``all`` = HighlyKnown."""
    if rule == "chance":
        if n_options is None:
            return category != "Unknown"
        if n_prompts is None:
            raise ValueError("the chance rule needs the number of prompts")
        return chance_known(round(p_correct * n_prompts), n_prompts, n_options, rate)
    if rule == "any":
        return category != "Unknown"
    if rule == "majority":
        return p_correct > 0.5
    if rule == "all":
        return category == "HighlyKnown"
    raise ValueError(f"Expected `known_rule` to be one of {KNOWN_RULES}, but got {rule!r}")


def _seed(*parts: object) -> int:
    """A stable 63-bit seed from its parts (independent of the other items probed alongside)."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def load_probe(path: str | os.PathLike[str]) -> dict[str, ProbeRecord]:
    """Read a probe JSONL file into ``{item id: ProbeRecord}`` (for the trainer)."""
    names = {f.name for f in dataclasses.fields(ProbeRecord)}
    records: dict[str, ProbeRecord] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = ProbeRecord(**{k: v for k, v in json.loads(line).items() if k in names})
        except (json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}, line {lineno}: not a probe record ({e})") from None
        if rec.id in records:
            raise ValueError(f"{path}, line {lineno}: duplicate id {rec.id!r}")
        records[rec.id] = rec
    return records


def summarize_probe(records: Sequence[ProbeRecord]) -> dict[str, dict[str, float]]:
    """Per category present (in SliCK order) and ``all``: count, mean P_correct, mean NLL, known fraction."""
    groups = {c: [r for r in records if r.category == c] for c in CATEGORIES}
    groups = {c: rs for c, rs in groups.items() if rs}
    groups["all"] = list(records)
    return {c: {"n": len(rs), "p_correct": float(np.mean([r.p_correct for r in rs])) if rs else float("nan"),
                "nll": float(np.mean([r.nll for r in rs])) if rs else float("nan"),
                "known": float(np.mean([r.known for r in rs])) if rs else float("nan")}
            for c, rs in groups.items()}
