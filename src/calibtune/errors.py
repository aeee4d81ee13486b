"""Which failures a user can cause, and the one line that reports each.

The CLI turns every exception in :data:`USER_ERRORS` into ``error: <message>`` and exit code 2 (bad
input: a file, a flag, a config value, a model that diverges on the given settings); anything else is
a bug in calibtune and exits 1 with a one-line hint. ``--debug`` shows the traceback instead.
Library code raises ``ValueError`` (:class:`~calibtune.data.DataError`,
:class:`~calibtune.predictions.PredictionsError`) with a message naming file, line and field, or an
``OSError`` for files and folders; this module only words them.
"""

from __future__ import annotations

import csv

__all__ = ["USER_ERRORS", "describe"]

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # DataError, PredictionsError, UnicodeDecodeError, config validation
    OSError,  # missing, unreadable or unwritable files and folders
    csv.Error,
    RecursionError,  # input nested too deeply to parse
    ArithmeticError,  # NaN/inf logits or loss (NonFiniteLogitsError, NonFiniteLossError)
)


def describe(exc: BaseException) -> str:
    """The message of ``exc`` as one line, with its file for ``OSError`` s that carry one."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
        text = f"{where}: {exc.strerror}"
    elif isinstance(exc, RecursionError):
        text = "input nested too deeply to read (Python's recursion limit was reached)"
    elif isinstance(exc, UnicodeDecodeError):
        text = f"input is not valid {exc.encoding} text (byte {exc.object[exc.start:exc.start + 1]!r} at position {exc.start})"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.strip().splitlines())  # one line; the text itself verbatim
