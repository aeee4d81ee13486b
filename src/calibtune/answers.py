"""Matching a free-form answer against gold aliases: SQuAD's normalisation, exact match and token F1.

The rules are those of the official SQuAD v1.1 evaluation script (also TriviaQA's): lowercase, drop
ASCII punctuation (``string.punctuation``), drop the articles *a*, *an*, *the* as whole words, collapse
whitespace. Exact match compares the normalised strings; token F1 is the harmonic mean of precision
and recall of the normalised whitespace tokens (a multiset intersection), 0 when nothing is shared
(so an empty answer scores 0). Against several aliases the best alias counts.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

__all__ = ["exact_match", "normalize_answer", "token_f1"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, collapse whitespace.

    Example:
        >>> normalize_answer("  The Eiffel-Tower, in Paris! ")
        'eiffeltower in paris'
    """
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, answers: Sequence[str]) -> bool:
    """Whether the normalised prediction equals one of the normalised gold aliases.

    Example:
        >>> exact_match("the Beatles.", ["Beatles", "The Fab Four"]), exact_match("Beatles band", ["Beatles"])
        (True, False)
    """
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(a) for a in answers)


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """The best SQuAD token F1 of the prediction over the gold aliases, in [0, 1].

    Example:
        >>> round(token_f1("Eiffel Tower in Paris", ["Eiffel Tower", "Paris"]), 4)  # P = 2/4, R = 1
        0.6667
    """
    if not answers:
        raise ValueError("token_f1 needs at least one gold answer")
    pred = normalize_answer(prediction).split()
    return max(_f1(pred, normalize_answer(a).split()) for a in answers)
