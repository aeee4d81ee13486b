"""YAML config files read into a mapping, every failure one line naming the file (and the line).

The experiment and training configs (``calibtune compare --config``, ``calibtune train --config``) are
read here; validating their keys is their own modules' job (pydantic models), and
:func:`validation_problems` makes pydantic's errors the same one line.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "run.yaml").write_text("model: smollm2\\nseeds: [0, 1]\\n")
>>> load_yaml(folder / "run.yaml")
{'model': 'smollm2', 'seeds': [0, 1]}
>>> _ = (folder / "bad.yaml").write_text("model: smollm2\\n  seeds: [0, 1]\\n")
>>> try:
...     load_yaml(folder / "bad.yaml")
... except ValueError as e:
...     print(str(e).replace(str(folder), "DIR"))
DIR/bad.yaml, line 2, column 8: not valid YAML: mapping values are not allowed here
>>> import shutil; shutil.rmtree(folder)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["load_yaml", "validation_problems"]

_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false"}


def _yaml_error(path: str | os.PathLike[str], text: str, error: Exception) -> str:
    """One line for a YAML error: where it is (line, column, from 1) and what PyYAML says is wrong."""
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(error, "problem", None) or str(error)
        context, start = getattr(error, "context", None), getattr(error, "context_mark", None)
        if context and start is not None and start.line != mark.line:
            problem = f"{context} (line {start.line + 1}, column {start.column + 1}); {problem}"
        elif context:
            problem = f"{context}; {problem}"
        return f"{where}: not valid YAML: {problem}"
    position = getattr(error, "position", None)  # a ReaderError: a character YAML does not allow
    if isinstance(position, int):
        line = text.count("\n", 0, position) + 1
        reason = getattr(error, "reason", None) or str(error)
        character = getattr(error, "character", None)
        code = f"#x{character:04x}" if isinstance(character, int) else repr(character)  # an int for text input
        return f"{path}, line {line}: not valid YAML: unacceptable character {code} ({reason})"
    return f"{path}: not valid YAML: {' '.join(str(error).split())}"


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path`` (an empty file is ``{}``).

    Raises ``ValueError`` whose message starts with ``path`` (and ``, line N`` where the line is known)
    for text that is not UTF-8, YAML that does not parse, or a top level that is not a mapping; a
    missing or unreadable file is the ``OSError`` of reading it, which carries the path.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "list.yaml"
    >>> _ = path.write_text("- a\\n- b\\n")
    >>> try:
    ...     load_yaml(path)
    ... except ValueError as e:
    ...     print(str(e).replace(str(path), "list.yaml"))
    list.yaml: expected a mapping at the top level, got a list
    >>> _ = path.write_text("")
    >>> load_yaml(path)
    {}
    """
    import yaml

    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}, line {line}: not valid UTF-8 (byte {data[e.start:e.start + 1]!r})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(_yaml_error(path, text, e)) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        kind = _KINDS.get(type(raw), type(raw).__name__)
        raise ValueError(f"{path}: expected a mapping at the top level, got {kind}")
    return raw


def validation_problems(error: Any) -> str:
    """One line for a pydantic ``ValidationError``: ``field.path: message`` per problem, ``; ``-joined.

    >>> from pydantic import BaseModel, ValidationError
    >>> class Run(BaseModel):
    ...     steps: int
    >>> try:
    ...     Run(steps="many")
    ... except ValidationError as e:
    ...     print(validation_problems(e))
    steps: Input should be a valid integer, unable to parse string as an integer
    """
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in error.errors())
