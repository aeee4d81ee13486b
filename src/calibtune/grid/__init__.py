"""A resumable grid of methods × training sets × evaluation sets × seeds, cell by cell.

A *cell* is one (task, seed, method): train (unless the method needs no training), then evaluate on
the task's test sets and out-of-domain sets. Each finished cell writes ``cell.json`` last (atomically),
so a run killed at any point continues where it stopped and never recomputes a finished cell. The
whole grid is checked first (names, references, settings, every data set); each cell's key, a hash of
everything that determines it (:func:`cell_keys`), is stored in ``cell.json``, and a changed config
re-runs exactly the cells it makes stale.
``summary.csv`` (``method,train_data,eval_data,seed,n,accuracy,ece,brier,nll`` then extra columns)
is rebuilt from the finished cells after each one.

Methods: ``base`` (the untouched model), ``ts`` (temperature scaling of another method's model,
fitted on the task's held-out split), and trained methods (any ``calibtune train`` objective).
Training items can be probed first (``calibtune probe``) so CogCalib gets its known labels; with
``train.eval_every`` the held-out items are probed too, so the training curve splits known/unknown.

Modules, in the order of the data flow: :mod:`.config` (the grid's settings), :mod:`.cells` (checks
and cell keys), :mod:`.compare` (running the cells, ``summary.csv``), :mod:`.report` (the comparison
report of a results tree).
"""

from .cells import CELL_KEY_VERSION, adopt_legacy_cells, cell_keys, check_grid
from .compare import EXTRA_COLUMNS, SUMMARY_COLUMNS, evaluate_sets, rescore, run_cell, run_compare, write_summary
from .config import CompareConfig, Method, ProbeSettings, Task, draw_mix, load_compare_config, parse_mix
from .report import write_report

__all__ = [
    "CELL_KEY_VERSION", "EXTRA_COLUMNS", "SUMMARY_COLUMNS", "CompareConfig", "Method", "ProbeSettings", "Task",
    "adopt_legacy_cells", "cell_keys", "check_grid", "draw_mix", "evaluate_sets", "load_compare_config",
    "parse_mix", "rescore", "run_cell", "run_compare", "write_report", "write_summary",
]
