"""Prompts for short-answer questions: the answer prompt (k-shot), and the follow-ups that ask for confidence.

Answer prompts, by template:

* ``qa``: SliCK's format (Gekhman et al. 2024, App. C), ``Q: …\\nA: …`` per exemplar, then
  ``Q: {question}\\nA:``; the answer follows after a space and ends at a newline.
* ``chat``: the model's chat template, one user/assistant turn per exemplar, then the question.
* a file: a template with ``{question}`` (and optionally ``{subject}``) up to the answer position;
  exemplars are the same template followed by their answer, one per line.

Exemplars (:func:`pick_exemplars`) are seeded per item, never the item itself, and come from the
item's own relation (``subject``) when the pool has enough. The follow-up prompts ask about an
answer the model gave: P(True) (Kadavath et al. 2022) scores the words ``True``/``False`` after
:data:`PTRUE_PROMPT`; verbalized confidence generates a reply to :data:`VERBALIZED_PROMPT`; a judge
model scores ``Yes``/``No`` after :data:`JUDGE_PROMPT`. The prompts are recorded in the outputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import OpenItem

__all__ = [
    "JUDGE_PROMPT",
    "PTRUE_PROMPT",
    "QA_TEMPLATES",
    "QATemplate",
    "VERBALIZED_PROMPT",
    "exemplar_seed",
    "get_qa_template",
    "judge_prompt",
    "pick_exemplars",
    "slick_prompt",
]

QA_TEMPLATES = ("qa", "chat")
PTRUE_PROMPT = ("Question: {question}\nProposed answer: {answer}\n"
                "Is the proposed answer correct? Answer True or False.\nAnswer:")
VERBALIZED_PROMPT = ("Question: {question}\nProposed answer: {answer}\n"
                     "How likely is it that the proposed answer is correct? "
                     "Reply with a number from 0 to 100 (percent).\nConfidence:")
JUDGE_PROMPT = ("Question: {question}\nCorrect answers: {gold}\nProposed answer: {answer}\n"
                "Does the proposed answer mean the same as one of the correct answers? Answer Yes or No.\nAnswer:")


def slick_prompt(item: OpenItem, exemplars: Sequence[OpenItem]) -> str:
    """SliCK's prompt (App. C): ``Q: …\\nA: …`` per exemplar, then ``Q: {question}\\nA:``.

    Example:
        >>> from calibtune.data import OpenItem
        >>> shot = OpenItem(id="s", question="Capital of France?", answers=("Paris",))
        >>> slick_prompt(OpenItem(id="q", question="Capital of Peru?", answers=("Lima",)), [shot])
        'Q: Capital of France?\\nA: Paris\\nQ: Capital of Peru?\\nA:'
    """
    shots = "".join(f"Q: {ex.question}\nA: {ex.answers[0]}\n" for ex in exemplars)
    return f"{shots}Q: {item.question}\nA:"


def pick_exemplars(item: OpenItem, pool: Sequence[OpenItem], shots: int, seed: int) -> list[OpenItem]:
    """``shots`` seeded exemplars, never the item itself; from its own relation when there are enough."""
    candidates = [p for p in pool if p.id != item.id and p.question != item.question]
    same = [p for p in candidates if item.subject and p.subject == item.subject]
    if len(same) >= shots:
        candidates = same
    if len(candidates) < shots:
        raise ValueError(f"{shots}-shot prompts need {shots} exemplars, but the pool has {len(candidates)}")
    picks = np.random.default_rng(seed).choice(len(candidates), size=shots, replace=False)
    return [candidates[k] for k in picks]


def exemplar_seed(seed: int, item_id: str) -> int:
    """A stable seed for one item's exemplars (independent of the other items evaluated alongside)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:qa-shots:{item_id}".encode()).digest()[:8], "little") >> 1


def judge_prompt(item: OpenItem, answer: str) -> str:
    """The judge's yes/no question about ``answer`` (gold aliases joined by ``"; "``)."""
    return JUDGE_PROMPT.format(question=item.question, gold="; ".join(item.answers), answer=answer)


@dataclass(frozen=True)
class QATemplate:
    """A short-answer prompt format (see the module docstring)."""

    name: str
    text: str | None = None  # a user template file's contents
    tokenizer: object | None = None  # for ``chat``

    @property
    def answer_prefix(self) -> str:
        """What separates the prompt from the answer text: a space after ``A:``, nothing in a chat turn."""
        return "" if self.name == "chat" and self.text is None else " "

    def target(self, answer: str) -> str:
        """The continuation a solved example has after its prompt (the training target): answer, then newline."""
        return f"{self.answer_prefix}{answer}\n"

    def _chat(self, turns: Sequence[tuple[str, str]], question: str) -> str:
        messages = []
        for user, assistant in turns:
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages.append({"role": "user", "content": question})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt(self, item: OpenItem, exemplars: Sequence[OpenItem] = ()) -> str:
        """The text up to the answer position, with ``exemplars`` solved before it."""
        if self.text is not None:
            def one(it: OpenItem) -> str:
                return self.text.format(question=it.question, subject=it.subject or "")
            return "".join(one(ex) + self.target(ex.answers[0]) for ex in exemplars) + one(item)
        if self.name == "chat":
            instruction = "Answer with a short answer (a few words) only.\n\n"
            return self._chat([(instruction + ex.question, ex.answers[0]) for ex in exemplars],
                              instruction + item.question)
        return slick_prompt(item, exemplars)

    def ptrue(self, item: OpenItem, answer: str) -> tuple[str, tuple[str, str]]:
        """The P(True) prompt about ``answer`` and the two continuations scored after it (True first)."""
        text = PTRUE_PROMPT.format(question=item.question, answer=answer)
        if self.name == "chat" and self.text is None:
            return self._chat([], text.removesuffix("\nAnswer:")), ("True", "False")
        return text, (" True", " False")

    def verbalized(self, item: OpenItem, answer: str) -> str:
        """The prompt whose generated reply should be a confidence from 0 to 100."""
        text = VERBALIZED_PROMPT.format(question=item.question, answer=answer)
        if self.name == "chat" and self.text is None:
            return self._chat([], text.removesuffix("\nConfidence:"))
        return text


def get_qa_template(name: str, tokenizer: object | None = None) -> QATemplate:
    """A built-in short-answer template (``qa``, ``chat``) or one read from a file with ``{question}``."""
    if name in QA_TEMPLATES:
        if name == "chat" and (tokenizer is None or not getattr(tokenizer, "chat_template", None)):
            raise ValueError("qa template 'chat' needs a model whose tokenizer has a chat template; use 'qa'")
        return QATemplate(name, tokenizer=tokenizer)
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"unknown qa template {name!r}: use one of {QA_TEMPLATES} or a path to a template file")
    text = path.read_text(encoding="utf-8")
    try:
        text.format(question="", subject="")
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"{path}: bad template placeholder {e}; allowed: {{question}} {{subject}}") from None
    if "{question}" not in text:
        raise ValueError(f"{path}: a qa template needs the placeholder {{question}}")
    return QATemplate(path.stem, text=text, tokenizer=tokenizer)
