"""Command-line flags built from a settings dataclass (:mod:`calibtune.settings`).

:func:`flags_from` gives a command one ``--flag`` per field of the dataclass, with the field's type,
default and help, so ``calibtune eval --help`` and :class:`~calibtune.settings.EvalConfig` cannot
drift apart. ``Literal`` fields become choices (:func:`choice_enum`), ``BatchSize`` a number or
``auto``; the command receives the values as plain Python values, ready for the dataclass.

>>> from calibtune.settings import Dtype, ProbeConfig
>>> others = tuple(f.name for f in dataclasses.fields(ProbeConfig) if f.name not in ("data", "dtype", "limit"))
>>> @flags_from(ProbeConfig, exclude=others)
... def probe(settings: dict, verbose: bool = False) -> dict:
...     return settings
>>> list(inspect.signature(probe).parameters)
['data', 'limit', 'dtype', 'verbose']
>>> probe(data="arc-easy:train", dtype=choice_enum(Dtype)("bfloat16"), limit=3)
{'data': 'arc-easy:train', 'limit': 3, 'dtype': 'bfloat16'}
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from enum import Enum
from typing import Annotated, Any, Callable, Literal, Optional, get_args, get_origin

import typer

from ..settings import BatchSize, choices

__all__ = ["choice_enum", "flags_from"]


@functools.cache
def choice_enum(kind: Any, name: str = "Choice") -> type[Enum]:
    """A ``str`` enum of a ``Literal``'s values (typer's choices), members named like Python identifiers.

    >>> from calibtune.settings import Exemplars
    >>> [m.value for m in choice_enum(Exemplars)], choice_enum(Exemplars).per_item.value
    (['shared', 'per-item'], 'per-item')
    """
    return Enum(name, [(v.replace("-", "_"), v) for v in choices(kind)], type=str)


def _value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return [_value(v) for v in value]
    return value


def _batch_size(value: str | None) -> Any:
    from ..devices import parse_batch_size

    return None if value is None else parse_batch_size(value)


def _flag_type(hint: Any) -> tuple[Any, Callable[[Any], Any], Callable[[Any], Any]]:
    """The type typer parses a field's flag as, how a flag's value becomes the field's value, and how the
    field's default becomes the flag's (enum members for choices, text for a batch size)."""
    if hint == BatchSize:
        return str, _batch_size, str
    optional = get_origin(hint) in (typing.Union, type(int | None)) and type(None) in get_args(hint)
    inner = next(a for a in get_args(hint) if a is not type(None)) if optional else hint
    as_flag: Callable[[Any], Any] = lambda default: default
    if get_origin(inner) is Literal:
        inner = enum = choice_enum(inner)
        as_flag = lambda default: None if default is None else enum(default)
    elif get_origin(inner) is list and get_origin(get_args(inner)[0]) is Literal:
        enum = choice_enum(get_args(inner)[0])
        inner, as_flag = list[enum], lambda default: [enum(d) for d in default]
    elif inner not in (str, int, float, bool, list[str]):
        raise TypeError(f"no command-line flag for a setting of type {hint!r}: exclude it and declare it by hand")
    return (Optional[inner] if optional else inner), _value, as_flag


def flags_from(config: type, *, exclude: tuple[str, ...] = (), required: tuple[str, ...] = (),
               defaults: dict[str, Any] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate ``command(settings: dict, **own)``: its flags are the fields of ``config`` (minus ``exclude``;
    ``required`` ones without a default, ``defaults`` replacing the field's) followed by its own parameters;
    ``settings`` holds the fields' values."""
    hints = typing.get_type_hints(config)
    fields = [f for f in dataclasses.fields(config) if f.name not in exclude]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]
        params, convert = [], {}
        for f in fields:
            kind, convert[f.name], as_flag = _flag_type(hints[f.name])
            if f.name in required or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
                default: Any = ...
            elif f.name in (defaults or {}):
                default = defaults[f.name]
            else:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            params.append(inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, typer.Option(help=f.metadata["help"])],
                default=default if default is ... else as_flag(default)))
        params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            settings = {name: fn(values.pop(name)) for name, fn in convert.items()}
            return command(settings, **values)

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run

    return decorate
