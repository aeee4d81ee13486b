"""Prior knowledge of a base model per item: SliCK categories (Gekhman et al. 2024) and the answer NLL.

The CogCalib trainer needs, per training item, whether the *base* model already knows the answer
(papers.md §1.4.1, §1.5). This module measures it two ways and stores both in a :class:`ProbeRecord`:

* **P_correct** over several random few-shot prompts, mapped to a SliCK category;
* **nll**: ``-log p(gold)`` in one canonical 0-shot prompt (the CogCalib signal).

Multiple choice (:func:`probe_mc`), SliCK adapted (papers.md §1.5 [I]): ``n_prompts`` prompts, each
with its own seeded ``shots`` exemplars and its own seeded option permutation (which cancels the
position bias of letter scoring; harmless for cloze); the prediction is the argmax over options,
mapped back to the original order. Categories: **HighlyKnown** (every prompt right), **MaybeKnown**
(some), **Unknown** (none). There is no WeaklyKnown: sampling an option is right 25% of the time by
chance, so "sampling is sometimes right" carries no information. ``nll`` uses the option distribution
(softmax over the options' scores) of the 0-shot prompt with the original option order.

Open questions (:func:`probe_open`), SliCK as published: ``n_prompts`` random ``shots``-shot prompts
``Q: …\\nA: …`` (exemplars from the same relation, i.e. ``subject``, when the pool has enough), one
greedy answer and ``n_samples`` answers sampled at ``temperature`` from the ``top_k`` tokens per
prompt, stopped at a newline, exact match (SQuAD normalisation) against the aliases. Categories:
HighlyKnown (greedy always right), MaybeKnown (greedy sometimes), WeaklyKnown (greedy never, a
sample sometimes), Unknown (never). ``nll`` is the summed token NLL of the first alias after the 0-shot
prompt ``Q: {q}\\nA:``. Defaults are sized for a CPU; the preset ``slick`` has the paper's values.

``known`` follows ``known_rule``. The multiple-choice default, ``"chance"``, calls an item known only
when its number of right prompts is more than a random guesser explains: a guesser picking one of K
options uniformly is right on c or more of n prompts with probability ``binomial_tail(c, n, 1/K)``,
and the item is known when that probability is at most ``false_known_rate`` (default 0.05). With
K = 4 and n = 4 that means all four prompts right (a guesser: 0.4 %); with K = 2 it needs n ≥ 5.
:func:`false_known_rate` is the rate the rule actually allows, printed by ``calibtune probe``. The
other rules: ``"any"`` (category is not Unknown, the SliCK union; a 4-option guesser over 4 prompts
is "known" 68 % of the time), ``"majority"`` (P_correct > 0.5, greedy for open questions) and ``"all"``
(HighlyKnown only). For open questions a right free-form answer is not a lucky guess, so
``"chance"`` there is ``"any"``.

Exemplars (multiple choice): by default (``exemplars="shared"``) prompt j of every item uses the same
seeded exemplar set (one per prompt index, and per subject for MMLU), so its keys and values are
computed once for the whole split (:class:`~calibtune.scoring.PrefixCache`); ``"per-item"`` draws a new
set for every item and prompt, as before.

:func:`run_probe` (what ``calibtune probe`` runs) adds loading and a cache: results are stored under
``probe_cache_dir()`` keyed by a hash of the model identity, the items, the exemplar pool and every
setting that changes the result, so an identical second call neither loads nor runs the model.

Modules, in data-flow order: :mod:`.labels` (records and the rules above), :mod:`.mc` and :mod:`.open`
(the two probes), :mod:`.run` (settings, cache and the end-to-end run).
"""

from ..answers import exact_match, normalize_answer  # re-exported: calibtune.probing.normalize_answer
from .labels import (
    CATEGORIES,
    FALSE_KNOWN_RATE,
    KNOWN_RULES,
    KnownRule,
    ProbeRecord,
    _seed,
    binomial_tail,
    categorize_mc,
    categorize_open,
    chance_known,
    false_known_rate,
    is_known,
    load_probe,
    summarize_probe,
)
from .mc import probe_mc
from .open import _answer_nll, _generate, probe_open
from .run import (
    _FORMAT_VERSION,
    PRESETS,
    ProbeConfig,
    ProbeResult,
    _items_digest,
    _model_identity,
    _settings,
    check_probe_config,
    probe_cache_dir,
    run_probe,
)

__all__ = [
    "PRESETS",
    "ProbeConfig",
    "ProbeRecord",
    "ProbeResult",
    "categorize_mc",
    "categorize_open",
    "exact_match",
    "is_known",
    "load_probe",
    "normalize_answer",
    "probe_cache_dir",
    "probe_mc",
    "probe_open",
    "run_probe",
    "summarize_probe",
]
