"""Prompt templates: a multiple-choice item → the text up to the answer, and the choices that follow it.

Two renderings per template, one per scoring:

* ``letter``: the options are listed with labels (A, B, C… up to 26; ``true``/``false`` for BoolQ)
  and the choices are the label tokens that follow the prompt (``" A"`` after ``Answer:``).
* ``cloze``: the options are not listed; the choices are the option texts themselves (``" Paris"``),
  scored by their log-likelihood, as lm-evaluation-harness does.

Templates: ``blob`` (the Bayesian-LoRA/BLoB format, papers.md §1.6), ``cft`` (the CFT code's
``### Question: … ### Answer:`` format, verbatim, papers.md §2.7), ``chat`` (the model's own chat
template) and a user template file with ``{question}``, ``{options}``, ``{context}``, ``{subject}``
placeholders (``{options}`` is the labelled list, one ``A. text`` per line).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import LETTERS, MCItem
from .scoring import ScoringRequest
from .settings import Exemplars, Scoring, choices

TEMPLATES = ("blob", "cft", "chat")


def option_labels(item: MCItem) -> tuple[str, ...]:
    """The labels the model answers with: letters, or the words themselves for true/false items."""
    if item.answer_format == "boolean":
        return tuple(item.options)
    if len(item.options) > len(LETTERS):
        raise ValueError(f"item {item.id}: {len(item.options)} options; letter labels go up to {len(LETTERS)}")
    return tuple(LETTERS[: len(item.options)])


def _options_block(item: MCItem, sep: str) -> str:
    return "\n".join(f"{label}{sep}{text}" for label, text in zip(option_labels(item), item.options))


@dataclass(frozen=True)
class Template:
    """A named prompt format; ``render`` gives the prompt and choices for one item and scoring."""

    name: str
    text: str | None = None  # user template file contents
    tokenizer: object | None = None  # for ``chat``

    def render(self, item: MCItem, scoring: Scoring) -> tuple[str, tuple[str, ...]]:
        if scoring not in ("letter", "cloze"):
            raise ValueError(f"Expected `scoring` to be 'letter' or 'cloze', but got {scoring!r}")
        return getattr(self, f"_{self.name if self.text is None else 'file'}")(item, scoring)

    def _blob(self, item: MCItem, scoring: Scoring) -> tuple[str, tuple[str, ...]]:
        if item.answer_format == "boolean":
            prompt = ("Read the passage below and answer the question with the words 'true' or 'false'.\n\n"
                      f"Passage: {item.context or ''}\nQuestion: {item.question}\nAnswer (true or false):")
            return prompt, tuple(f" {o}" for o in item.options)
        context = f"{item.context}\n" if item.context else ""
        if scoring == "cloze":
            return f"{context}Question: {item.question}\nAnswer:", tuple(f" {o}" for o in item.options)
        prompt = ("Return the label of the correct answer for the question below.\n\n"
                  f"{context}Question: {item.question}\nChoices:\n{_options_block(item, ') ')}\nAnswer:")
        return prompt, tuple(f" {label}" for label in option_labels(item))

    def _cft(self, item: MCItem, scoring: Scoring) -> tuple[str, tuple[str, ...]]:
        context = f"{item.context}\n\n" if item.context else ""
        if scoring == "cloze":
            return f"### Question: Question: {context}{item.question}\n ### Answer:", tuple(f" {o}" for o in item.options)
        prompt = (f"### Question: Question: {context}{item.question}\n\nOptions:\n{_options_block(item, '. ')}\n\n"
                  "Answer with only a single letter:\n ### Answer:")
        return prompt, option_labels(item)  # the CFT code appends the letter with no space

    def _chat(self, item: MCItem, scoring: Scoring) -> tuple[str, tuple[str, ...]]:
        tok = self.tokenizer
        if tok is None or not getattr(tok, "chat_template", None):
            raise ValueError("template 'chat' needs a model whose tokenizer has a chat template "
                             "(a base model such as gemma3-270m has none: use 'blob' or 'cft')")
        context = f"{item.context}\n\n" if item.context else ""
        if scoring == "cloze":
            user = f"{context}{item.question}"
            choices = tuple(item.options)
        else:
            labels = option_labels(item)
            user = (f"{context}{item.question}\n\n{_options_block(item, '. ')}\n\n"
                    f"Answer with the {'word' if item.answer_format == 'boolean' else 'letter'} "
                    f"({', '.join(labels)}) of the correct option only.")
            choices = labels
        prompt = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
        return prompt, choices

    def _file(self, item: MCItem, scoring: Scoring) -> tuple[str, tuple[str, ...]]:
        prompt = self.text.format(question=item.question, options=_options_block(item, ". "),
                                  context=item.context or "", subject=item.subject or "")
        if scoring == "cloze":
            return prompt, tuple(f" {o}" for o in item.options)
        return prompt, tuple(f" {label}" for label in option_labels(item))


def get_template(name: str, tokenizer: object | None = None) -> Template:
    """A built-in template by name, or a user template read from a file path."""
    if name in TEMPLATES:
        return Template(name, tokenizer=tokenizer)
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"unknown template {name!r}: use one of {TEMPLATES} or a path to a template file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: template is not valid UTF-8 (byte {e.start})") from None
    try:
        text.format(question="", options="", context="", subject="")
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"{path}: bad template placeholder {e}; allowed: {{question}} {{options}} {{context}} {{subject}}") from None
    if "{question}" not in text.replace("{{", "").replace("}}", ""):
        raise ValueError(f"{path}: template has no {{question}} placeholder, so every item would get the same prompt")
    return Template(path.stem, text=text, tokenizer=tokenizer)


def _solved(template: Template, item: MCItem, scoring: Scoring) -> str:
    prompt, choices = template.render(item, scoring)
    return prompt + choices[item.gold]


EXEMPLAR_MODES: tuple[str, ...] = choices(Exemplars)


def _draw_exemplars(subject: str | None, pool: Sequence[MCItem], shots: int, rng: np.random.Generator,
                    exclude: Sequence[str] = ()) -> list[MCItem]:
    """``shots`` exemplars from ``pool`` except the ids in ``exclude``; from ``subject`` when the pool
    has enough (MMLU, as in the paper)."""
    candidates = [p for p in pool if p.id not in exclude]
    same_subject = [p for p in candidates if subject and p.subject == subject]
    if len(same_subject) >= shots:
        candidates = same_subject
    if len(candidates) < shots:
        raise ValueError(f"{shots}-shot prompts need {shots} exemplars, but the pool has {len(candidates)}")
    return [candidates[i] for i in rng.choice(len(candidates), size=shots, replace=False)]


def build_requests(
    items: Sequence[MCItem],
    template: Template,
    scoring: Scoring,
    *,
    shots: int = 0,
    pool: Sequence[MCItem] | None = None,
    seed: int = 0,
    exemplars: Exemplars = "per-item",
) -> list[ScoringRequest]:
    """Scoring requests for ``items``, each with ``shots`` seeded exemplars from ``pool`` (never itself;
    from the item's own subject when the pool has enough).

    Exemplars are solved examples in the same format, separated by a blank line; with ``chat`` they
    are earlier user/assistant turns folded into the prompt text the same way.
    ``exemplars="per-item"`` draws a new set for every item (lm-eval's convention); ``"shared"`` draws
    one set per subject, seeded, used by every item of that subject (an item that is itself in the set
    gets its own draw), and marks it as the request's ``shared_prefix`` so :func:`~calibtune.scoring.score`
    computes its keys and values once.

    >>> from calibtune.data import MCItem
    >>> pool = [MCItem(id=f"p{i}", question=f"Q{i}?", options=("a", "b"), gold=0) for i in range(5)]
    >>> items = [MCItem(id=f"x{i}", question=f"X{i}?", options=("a", "b"), gold=1) for i in range(3)]
    >>> reqs = build_requests(items, Template("blob"), "cloze", shots=2, pool=pool, exemplars="shared")
    >>> len({r.shared_prefix for r in reqs}), all(r.prompt.startswith(r.shared_prefix) for r in reqs)
    (1, True)
    """
    if shots and not pool:
        raise ValueError(f"{shots}-shot prompts need an exemplar pool, but this data set has no dev/train split")
    if exemplars not in EXEMPLAR_MODES:
        raise ValueError(f"Expected `exemplars` to be one of {EXEMPLAR_MODES}, but got {exemplars!r}")
    rng = np.random.default_rng(seed)
    shared: dict[str | None, list[MCItem]] = {}
    requests = []
    for item in items:
        prefix, key = "", ""
        if shots:
            if exemplars == "shared":
                group = item.subject or None
                if group not in shared:
                    group_seed = [seed, zlib.crc32(str(group).encode())]  # independent of item order
                    shared[group] = _draw_exemplars(group, pool, shots, np.random.default_rng(group_seed))
                picks = shared[group]
                if any(p.id == item.id for p in picks):  # never its own exemplar: a private set
                    own = np.random.default_rng([seed, zlib.crc32(item.id.encode())])  # independent of item order
                    picks = _draw_exemplars(group, pool, shots, own, exclude=[item.id])
                else:
                    key = "shared"
            else:
                picks = _draw_exemplars(item.subject, pool, shots, rng, exclude=[item.id])
            prefix = "\n\n".join(_solved(template, p, scoring) for p in picks) + "\n\n"
        prompt, choices = template.render(item, scoring)
        requests.append(ScoringRequest(prompt=prefix + prompt, choices=list(choices),
                                       shared_prefix=prefix if key else "", item_id=item.id))
    return requests
