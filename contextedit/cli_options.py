"""Typer options built from the settings' declarations (:mod:`contextedit.settings`): the flag,
help, choices and effective default of each option come from its dataclass field, so an option
is written once. A command passes on only what the user set; the library resolves the rest."""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import MISSING
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from .settings import choices_of, declared, effective_default

METAVARS = {str: "TEXT", int: "INTEGER", float: "FLOAT", Path: "PATH"}


def option_parameters(cls, *, exclude: typing.Iterable[str] = (), only: typing.Iterable[str] | None = None,
                      argument_types: dict | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per CLI setting of ``cls``, annotated with its ``typer.Option``."""
    hints = typing.get_type_hints(cls)
    params = []
    owner = {name: next(i for i, c in enumerate(cls.__mro__) if name in getattr(c, "__annotations__", {}))
             for name in declared(cls)}
    for name, (f, s) in sorted(declared(cls).items(), key=lambda item: owner[item[0]]):  # the command's own first
        if name in exclude or not s.cli or (only is not None and name not in only):
            continue
        kind = hints[name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None → X
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        base = kind
        if (argument_types or {}).get(name):
            base = argument_types[name]
        text = s.help
        if s.choices:
            text = f"{' | '.join(map(str, choices_of(s)))}: {text}"
        shown = effective_default(cls, name)
        if shown:
            text = f"{text} {shown}"
        if s.argument:
            params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                            annotation=Annotated[base, typer.Argument(help=text, show_default=False,
                                                                                       metavar=name.upper())]))
            continue
        decls = [s.flag] if s.flag else []
        item = typing.get_args(base)[0] if typing.get_origin(base) is list else base
        option = typer.Option(*decls, help=text, hidden=s.hidden, show_default=False,
                              metavar=METAVARS.get(item, "TEXT") if item is not bool else None)
        if f.default is MISSING and f.default_factory is MISSING and typing.get_origin(base) is not list:
            default = inspect.Parameter.empty  # a required option (a required list is filled by its command)
        else:
            default = None if f.default is MISSING else f.default  # a list (default_factory) is unset as None
        annotation = Optional[base] if default is None else base
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[annotation, option]))
    return params


def annotation(cls, name: str):
    """The ``Annotated[type, typer.Option]`` of one setting, for a hand-written command."""
    return option_parameters(cls, only={name})[0].annotation


def command(app: typer.Typer, name: str, doc: str, params: list[inspect.Parameter], body: Callable[[dict], Any]) -> None:
    """Register ``body(values)`` as the command ``name`` taking ``params``."""
    ordered = sorted(params, key=lambda p: p.kind != inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ordered = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind != inspect.Parameter.POSITIONAL_OR_KEYWORD
               else p for p in ordered]

    def run(**values):
        return body(values)

    run.__signature__ = inspect.Signature(ordered)
    run.__annotations__ = {p.name: p.annotation for p in ordered}
    run.__doc__ = doc
    run.__name__ = name.replace("-", "_")
    app.command(name)(run)


def given(values: dict, cls) -> dict:
    """The values of ``cls``'s fields the user set (None: not set; empty repeatable: not set)."""
    fields = declared(cls)
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()
            if k in fields and v is not None and v != []}


def as_path(value: Path | None) -> str | None:
    return str(value) if value is not None else None
