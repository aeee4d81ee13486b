"""Old import path of the grid: everything now lives in :mod:`calibtune.grid` (config, cells, compare).

Patch a name where it is used (e.g. ``calibtune.grid.compare.run_cell``): patching it here does not
reach the code.
"""

from .grid.cells import (
    _HOW_NOT_WHAT,
    CELL_KEY_VERSION,
    _cell_json,
    _data_digests,
    _retire,
    _safe_name,
    adopt_legacy_cells,
    cell_keys,
    check_grid,
)
from .grid.compare import (
    EXTRA_COLUMNS,
    SUMMARY_COLUMNS,
    _placement,
    _probe,
    _score,
    _slug,
    _write_summary,
    evaluate_sets,
    run_cell,
    run_compare,
    write_summary,
)
from .grid.config import CompareConfig, Method, ProbeSettings, Task, draw_mix, load_compare_config, parse_mix

__all__ = [
    "CELL_KEY_VERSION", "EXTRA_COLUMNS", "SUMMARY_COLUMNS", "CompareConfig", "Method", "ProbeSettings", "Task",
    "adopt_legacy_cells", "cell_keys", "check_grid", "draw_mix", "evaluate_sets", "load_compare_config",
    "parse_mix", "run_cell", "run_compare", "write_summary",
]
