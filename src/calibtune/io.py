"""Files that appear whole or not at all: atomic writes, JSONL, staged folders, and the cache root.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> write_jsonl(folder / "rows.jsonl", [{"a": 1}, {"b": 2}])
>>> (folder / "rows.jsonl").read_text()
'{"a": 1}\\n{"b": 2}\\n'
>>> sorted(p.name for p in folder.iterdir())  # no temporary file is left beside it
['rows.jsonl']
>>> shutil.rmtree(folder)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "cache_root", "staged_folder", "write_jsonl"]

CACHE_ENV = "CALIBTUNE_CACHE"


def cache_root() -> Path:
    """The one cache root: ``$CALIBTUNE_CACHE`` or ``~/.cache/calibtune``.

    >>> saved = os.environ.pop("CALIBTUNE_CACHE", None)
    >>> cache_root() == Path.home() / ".cache" / "calibtune"
    True
    >>> os.environ["CALIBTUNE_CACHE"] = "/tmp/ct-cache"
    >>> str(cache_root())
    '/tmp/ct-cache'
    >>> _ = os.environ.pop("CALIBTUNE_CACHE") if saved is None else os.environ.update(CALIBTUNE_CACHE=saved)
    """
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "calibtune"


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path`` and rename it into place only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically."""
    with atomic_write(path) as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


@contextmanager
def staged_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a multi-file output in a temporary folder beside ``path``; swap it in only on success.

    All or nothing: an existing ``path`` is moved aside, the new folder renamed into its place and the
    old one removed, so no reader ever sees new files beside old ones. A failure or a kill before the
    swap leaves ``path`` as it was (and at most a hidden ``.NAME.tmp-*`` folder beside it).
    """
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; results are readable like any folder
        yield tmp
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
