"""``argparse`` arguments generated from flags declared in options' metadata (:mod:`mapc.passes.flags`).

:func:`add_compile_flags` adds every option flag of ``mapc compile`` (the compile's own and
those the passes declare) and :func:`compile_options_from_flags` turns what was given back
into a validated :class:`~mapc.options.CompileOptions`. Underneath, :func:`add_flags` adds one argument per flagged field of an options dataclass (a flag several
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

from mapc.ir import UsageError
from mapc.options import CompileOptions, default_pipeline
from mapc.passes import Flag, build_pipeline, convert_option, flagged_fields, flatten_steps, registered_passes


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


# -- mapc compile --------------------------------------------------------------------------------

#: Passes that compile() appends itself: their flags become its ``quantize`` / ``target`` and
#: ``partition`` arguments instead of options of a pipeline step.
APPENDED_PASSES = ("quantize", "partition")


def pass_flag_classes() -> dict[str, type]:
    """The options class of every registered pass that declares a flag, by pass name."""
    return {name: cls.Options for name, cls in registered_passes().items() if flagged_fields(cls.Options)}


def add_compile_flags(parser: argparse.ArgumentParser, target_group: argparse._ArgumentGroup) -> None:
    """Every flag of ``mapc compile`` that sets an option: the compile's own, then the passes'
    (the partition pass's in ``target_group``)."""
    added: set[str] = set()
    classes = pass_flag_classes()
    add_flags(parser, [CompileOptions, *(options for name, options in classes.items() if name != "partition")], added)
    if "partition" in classes:
        add_flags(target_group, [classes["partition"]], added)


def compile_flags_given(args: argparse.Namespace) -> list[str]:
    """The option flags of ``mapc compile`` the user gave (``--target``, ``--quantize``, ...)."""
    return list(given_flag_names(args, [CompileOptions, *pass_flag_classes().values()]))


def compile_options_from_flags(args: argparse.Namespace) -> CompileOptions:
    """The :class:`CompileOptions` the flags of ``mapc compile`` ask for (validated)."""
    classes = pass_flag_classes()
    given = given_flag_names(args, [CompileOptions, *classes.values()])
    check_requirements(given)
    values = given_flags(args, CompileOptions)
    chosen = {name: found for name, options in classes.items() if (found := given_flags(args, options))}
    quantize = chosen.pop("quantize", None)
    if quantize is not None:
        quantize = {**quantize, "scheme": quantize.get("scheme") or None}  # bare --quantize: the target's default
    partition = chosen.pop("partition", {})
    target = partition.pop("target", None)
    options = CompileOptions(
        **values,
        target=target,
        partition=partition or None,
        quantize=quantize,
        pass_options=_in_pipeline(chosen, values.get("passes"), classes, given) or None,
    )
    options.validate()
    return options


def _in_pipeline(chosen: dict[str, dict[str, Any]], passes: str | None, classes: Mapping[str, type], given: Mapping[str, Flag]) -> dict[str, dict[str, Any]]:
    """The flagged options of pipeline passes, for the passes the pipeline has; :class:`UsageError`
    for a flag none of whose passes is in the pipeline."""
    if not chosen:
        return {}
    present = {step.name for step in flatten_steps(build_pipeline(passes if passes is not None else default_pipeline()))}
    for spelling in given:
        declaring = [name for name, options in classes.items() if name not in APPENDED_PASSES and any(d.spelling == spelling for _, d in flagged_fields(options))]
        if declaring and not present & set(declaring):
            raise UsageError(f"{spelling} needs the {' or '.join(declaring)} pass in the pipeline")
    return {name: found for name, found in chosen.items() if name in present}
