"""``argparse`` arguments generated from flags declared in options' metadata (:mod:`mapc.passes.flags`).

:func:`add_flags` adds one argument per flagged field of an options dataclass (a flag several
classes declare is added once); :func:`given_flags` reads back, per class, the options whose
flag the user gave, converted to the field's type. Nothing given means "not set": every
argument defaults to None, so an option's own default stays the only default.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from mapc.ir.errors import UsageError
from mapc.passes.base import convert_option
from mapc.passes.flags import Flag, flagged_fields


def add_flags(parser: argparse._ActionsContainer, options_classes: Iterable[type], added: set[str] | None = None) -> None:
    """Add the flags of ``options_classes`` to ``parser``; ``added`` holds flags already there."""
    added = added if added is not None else set()
    for options_class in options_classes:
        hints = typing.get_type_hints(options_class)
        for field, declared in flagged_fields(options_class):
            if declared.spelling in added:
                continue
            added.add(declared.spelling)
            parser.add_argument(declared.spelling, dest=_dest(declared), **_argument(field, declared, hints[field.name]))


def given_flags(args: argparse.Namespace, options_class: type) -> dict[str, Any]:
    """The options of ``options_class`` whose flag was given, by field name, typed."""
    hints = typing.get_type_hints(options_class)
    values: dict[str, Any] = {}
    for field, declared in flagged_fields(options_class):
        raw = getattr(args, _dest(declared), None)
        if raw is None:
            continue
        if declared.repeat is not None:
            values[field.name] = declared.repeat(raw)
        elif isinstance(raw, bool) or declared.const is not None and raw == declared.const:
            values[field.name] = raw
        else:
            try:
                values[field.name] = convert_option(hints[field.name], raw)
            except (TypeError, ValueError) as error:
                raise UsageError(f"{declared.spelling}: {error}") from None
    return values


def given_flag_names(args: argparse.Namespace, options_classes: Iterable[type]) -> dict[str, Flag]:
    """Every flag of ``options_classes`` the user gave, by spelling."""
    return {
        declared.spelling: declared
        for options_class in options_classes
        for _, declared in flagged_fields(options_class)
        if getattr(args, _dest(declared), None) is not None
    }


def check_requirements(given: Mapping[str, Flag]) -> None:
    """:class:`UsageError` for a flag given without the flag it needs (``--calibration`` without ``--quantize``)."""
    for spelling, declared in given.items():
        if declared.requires is not None and declared.requires not in given:
            raise UsageError(f"{spelling} needs {declared.requires}")


def _dest(declared: Flag) -> str:
    return "flag_" + declared.name.lstrip("-").replace("-", "_")


def _argument(field: dataclasses.Field, declared: Flag, kind: Any) -> dict[str, Any]:
    argument: dict[str, Any] = {"help": declared.help, "default": None}
    if declared.repeat is not None:
        return {**argument, "action": "append", "metavar": declared.metavar}
    if kind is bool:
        return {**argument, "action": "store_false" if declared.negative else "store_true"}
    argument["metavar"] = declared.metavar
    if declared.const is not None:
        argument.update(nargs="?", const=declared.const)
    choices = _choices(kind)
    if choices:
        argument.update(choices=choices, metavar=None)
    elif _plain(kind) in (int, float):
        argument["type"] = _plain(kind)
    return argument


def _plain(kind: Any) -> Any:
    """``int`` for ``int | None``; the type itself otherwise."""
    arguments = [a for a in typing.get_args(kind) if a is not type(None)]
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType) and len(arguments) == 1
    return arguments[0] if optional else kind


def _choices(kind: Any) -> list[str] | None:
    plain = _plain(kind)
    return list(typing.get_args(plain)) if typing.get_origin(plain) is typing.Literal else None
