"""Evaluation data: one multiple-choice item type, one open-QA item type, and loaders.

Every labelled data set under the shared data directory (see its PROVENANCE.md) is read in place
and turned into :class:`MCItem` (multiple choice) or :class:`OpenItem` (short-answer QA).
Every row is validated; a bad row raises :class:`DataError` naming file, line, field and problem,
or, with ``skip_invalid=True``, is skipped and counted in :attr:`Dataset.n_skipped`.

Spec strings accepted by :func:`load_dataset`:

* ``NAME[:SPLIT]`` / ``NAME/SUBSET[,SUBSET...][:SPLIT]`` for the registry :data:`DATASETS`
  (``val`` and ``dev`` are aliases where a data set has only one of them; MMLU has both);
* a path to a ``.jsonl``/``.json``/``.csv``/``.tsv`` file (generic format, see
  :func:`load_dataset`);
* ``hf:OWNER/NAME[:SPLIT]`` for a Hugging Face hub data set (needs ``datasets`` and ``fields``).

Any of them may end in a slice, read as ``datasets`` reads splits: ``[lo:hi]``, ``[:200]``, ``[:80%]``
are rows in file order; ``[lo:hi](shuffled)`` is the fixed pseudo-random partition (:class:`Slice`).

Modules, in data-flow order: :mod:`~calibtune.data.items` (item types, row helpers),
:mod:`~calibtune.data.readers` (file readers), :mod:`~calibtune.data.registry` (the registry and
:func:`register_benchmark`), :mod:`~calibtune.data.benchmarks` (one module per benchmark),
:mod:`~calibtune.data.files` (generic files, ``hf:``) and :mod:`~calibtune.data.spec` (the spec grammar).
"""

from __future__ import annotations

from . import benchmarks  # noqa: F401  (registers the built-in benchmarks)
from .benchmarks.boolq import BOOLQ_OPTIONS
from .items import ENV_VAR, FILE_SUFFIXES, LETTERS, DataError, Dataset, FieldMap, Item, MCItem, OpenItem
from .registry import DATASETS, DatasetInfo, data_dir, register_benchmark, unregister_benchmark
from .spec import SLICE_MODES, Slice, exemplar_pool, load_dataset, parse_fields, shuffle_item_options, takes_fields

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "MCItem",
    "OpenItem",
    "data_dir",
    "exemplar_pool",
    "load_dataset",
    "parse_fields",
    "register_benchmark",
    "takes_fields",
    "unregister_benchmark",
]
