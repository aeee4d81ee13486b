"""Checks of user input that run before any work: numbers in range, output locations, templates, adapters.

Every command calls these before it loads a model or scores an item, so a bad flag or an unwritable
output costs nothing. Each failure is a :class:`ValueError` (or :class:`FileExistsError` /
:class:`FileNotFoundError`) whose message names the flag or field and the value, which the CLI turns
into one ``error:`` line.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

__all__ = ["adapter_folder", "at_least", "output_file", "template", "writable_folder"]


def at_least(name: str, value: int | float | None, lo: int | float) -> None:
    """``value`` (when given) is a finite number >= ``lo``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= lo or not math.isfinite(value):
        raise ValueError(f"{name} must be a number >= {lo}, got {value!r}")


def _existing_ancestor(path: Path) -> Path:
    """The nearest folder at or above ``path`` that exists; refuses a file on the way."""
    probe = path.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"{path}: cannot be created, {probe} is a file, not a folder")
    return probe


def writable_folder(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """``path`` is, or can become, a folder we can write in (tested by writing a file, as root too)."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{what} {p}: exists and is not a folder")
    base = _existing_ancestor(p)
    try:
        fd, tmp = tempfile.mkstemp(dir=base, prefix=".calibtune-write-test-")
    except OSError as e:
        raise PermissionError(f"{what} {p}: cannot write in {base} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(tmp)
    return p


def output_file(path: str | os.PathLike[str], overwrite: bool, what: str = "--out",
                inputs: tuple[str | os.PathLike[str], ...] = ()) -> Path:
    """``path`` can be written: not a folder, not one of ``inputs``, new unless ``overwrite``, in a writable folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise IsADirectoryError(f"{what} {p}: is a folder; give a file name")
    for source in inputs:
        s = Path(source).expanduser()
        if s.exists() and p.exists() and os.path.samefile(s, p):
            raise FileExistsError(f"{what} {p}: is the input file {source}; write the output elsewhere")
    if p.exists() and not overwrite:
        raise FileExistsError(f"{what} {p}: exists; pass --overwrite to replace it")
    writable_folder(p.parent, what=what)
    return p


def template(name: str) -> None:
    """A built-in template name or a readable template file with valid placeholders (see prompts)."""
    from .prompts import get_template

    get_template(name)


def adapter_folder(path: str | os.PathLike[str] | None, what: str = "--adapter") -> None:
    """``path`` (when given) is a PEFT adapter folder (it holds ``adapter_config.json``)."""
    if path is None:
        return
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what} {p}: no such folder")
    if not (p / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{what} {p}: not a PEFT adapter folder (no adapter_config.json)")
