"""Confidence of a causal LM over the options of a multiple-choice item.

Two scorings share one design: ``encode`` (tokenisation) -> ``collate`` (left-padded tensors) ->
``forward`` (differentiable ``(B, K_max)`` option scores). Training losses call ``forward`` with
gradients on; evaluation (:func:`score`) is the same call under ``torch.inference_mode()`` plus
length-sorted batching.

* ``letter``: the logit of each option label's single token (" A", "B", " true", ...) at the answer
  position: one forward per item with ``logits_to_keep=1``.
* ``cloze``: the log-likelihood of each option's continuation text. By default the prompt is run once
  per item: prompt and all K continuations are packed into one row whose 4D attention mask lets each
  continuation see the prompt and itself only, with positions restarting after the prompt for every
  continuation (so the result equals K independent ``prompt+option`` forwards).
  ``normalize``: the summed token log-probabilities (``sum``), their per-token ``mean``, per
  character (``char``: lm-eval's ``acc_norm``) or per UTF-8 byte (``byte``: ``acc_bytes``) of the option
  text, or ``pmi``: minus the option's log-likelihood after a neutral one-token prompt (lm-eval's
  ``acc_mutual_info``).

Shared prefixes: requests that carry the same ``shared_prefix`` (one k-shot exemplar set used by many
items) are scored against one :class:`PrefixCache`: the keys and values of their longest common
leading tokens are computed once and expanded over each batch, so only each item's own tokens are run.
The result equals the unshared computation (same tokens, same positions, same attention).

Modules, in data-flow order: :mod:`.requests` (requests, tokenisation, padding, errors),
:mod:`.prefix` (shared prefixes), :mod:`.letter` and :mod:`.cloze` (the two scorers),
:mod:`.batching` (:func:`make_scorer`, :func:`score`).
"""

from .batching import Scorer, check_context, make_scorer, score
from .cloze import (
    _PACKABLE_ATTENTION,
    NORMALIZATIONS,
    ClozeScorer,
    Normalization,
    _can_pack,
    _option_length,
    _packed_attention_mask,
    _unconditional,
)
from .letter import LetterScorer
from .prefix import PrefixCache, _can_share_prefix, _prefix_groups
from .requests import (
    ContextLengthError,
    Encoded,
    NonFiniteLogitsError,
    ScoringRequest,
    _common_prefix,
    _left_pad,
    _model_device,
    _raise_if_nonfinite,
    _tokenize,
    _who,
    context_length,
    left_pad,
)

__all__ = [
    "ClozeScorer",
    "Encoded",
    "LetterScorer",
    "NonFiniteLogitsError",
    "PrefixCache",
    "Scorer",
    "ScoringRequest",
    "left_pad",
    "make_scorer",
    "score",
]
