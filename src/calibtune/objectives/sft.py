r"""Token-level SFT on the gold answer: :math:`\ell_i = -s_{i,y_i}`.

Valid only when the scores are log-probabilities of the answer text under the model (cloze with
``normalize="sum"``: the summed token log-likelihood; letter with full-vocabulary log-probs of the
label token), so ``needs_logprob_scores = True``: the trainer configures the scorer accordingly. The
other options' scores get no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .base import Objective, gold, prepare


def loss(scores: Tensor, labels: Tensor) -> Tensor:
    r"""Per-sample SFT loss :math:`-s_{i,y_i}` (gold answer log-probability), shape ``(B,)``."""
    scores, labels, _ = prepare(scores, labels)
    log_p_gold = gold(scores, labels)
    if (log_p_gold > 0).any():
        raise ValueError("Expected log-probability scores (<= 0) for objective 'sft', but a gold score is > 0: "
                         "the scorer must return log-probs (cloze normalize='sum' or full-vocabulary letter).")
    return -log_p_gold


@dataclass(frozen=True)
class SFTConfig(Objective):
    """Completion-only SFT: NLL of the gold answer under the full model distribution."""

    name = "sft"
    loss_fn = staticmethod(loss)
    needs_logprob_scores = True
