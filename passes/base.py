"""The pass contract: what a pass declares, receives and returns.

A pass is a :class:`Pass` subclass (or a function wrapped by
:func:`mapc.passes.register_pass`) with:

* ``name``: the registered name used in pipelines (``fold-constants``);
* a docstring whose first line is the one-line summary and whose body says what the pass
  matches and what it produces;
* ``Options``: a dataclass of typed options with defaults (values given as strings in a
  pipeline are converted by :func:`parse_options`);
* ``requires`` / ``provides``: the :class:`~mapc.passes.facts.Fact` s it needs before it runs
  and sets for later passes; the pass manager establishes the first (shapes are inferred once,
  when the graph changed) and checks the second, so ``run`` never asks whether someone else did;
* ``run(model, ctx) -> PassResult``: edit ``model`` in place and say whether it changed,
  with counters (``{"removed_identity": 3}``) and notes (near-misses, things left alone).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from mapc.ir import Model, Note, UsageError
from mapc.passes.facts import Fact, Facts


@dataclass
class PassResult:
    """What one run of a pass did. ``details`` holds pass-specific JSON-able data."""

    changed: bool
    counters: dict[str, int] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassContext:
    """State shared by the passes of one compile.

    Attributes:
        seed: seed for anything random (verification inputs, calibration fallbacks).
        dims: concrete values of symbolic dims, by name, as the user fixed them.
        input_shapes: concrete shapes of graph inputs, by input name, as the user fixed them.
        facts: what passes tell later passes, by :class:`~mapc.passes.facts.Fact` (the shapes'
            snapshot, the partition plan, the mask inputs built on the host, ...).
        progress: callback for long work inside a pass: ``progress(description, done, total)``.
    """

    seed: int = 0
    dims: dict[str, int] = field(default_factory=dict)
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    facts: Facts = field(default_factory=Facts)
    progress: Callable[[str, int | None, int | None], None] | None = None

    def report_progress(self, description: str, done: int | None = None, total: int | None = None) -> None:
        if self.progress is not None:
            self.progress(description, done, total)


@dataclass
class NoOptions:
    """A pass without options."""


class Pass:
    """Base class of passes. Subclasses set ``name``, a docstring, ``Options`` and ``run``."""

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    #: Facts established (or checked present) by the pass manager before ``run``.
    requires: ClassVar[tuple[Fact[Any], ...]] = ()
    #: Facts ``run`` sets for later passes; the manager fails the pass if one is missing.
    provides: ClassVar[tuple[Fact[Any], ...]] = ()

    def __init__(self, options: Any = None, **values: Any) -> None:
        if options is not None and values:
            raise TypeError("give either an Options instance or keyword options, not both")
        self.options = options if options is not None else parse_options(self.name, self.Options, values)

    @classmethod
    def summary(cls) -> str:
        """The first line of the pass's docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def description(cls) -> str:
        """The whole docstring: what the pass matches and what it produces."""
        return inspect.cleandoc(cls.__doc__ or "")

    def run(self, model: Model, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def options_dict(self) -> dict[str, Any]:
        """Options that differ from their defaults (for reports and pipeline strings)."""
        defaults = self.Options()
        return {
            f.name: getattr(self.options, f.name)
            for f in dataclasses.fields(self.options)
            if getattr(self.options, f.name) != getattr(defaults, f.name)
        }


# -- option parsing -----------------------------------------------------------------------------


def parse_options(pass_name: str, options_class: type, values: Mapping[str, Any]) -> Any:
    """Build ``options_class`` from ``values``; strings are converted to each field's type.

    Raises :class:`UsageError` naming the pass and option for unknown names or bad values.
    """
    hints = typing.get_type_hints(options_class)
    fields = {f.name: f for f in dataclasses.fields(options_class)}
    converted = {}
    for key, raw in values.items():
        name = key.replace("-", "_")
        if name not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise UsageError(f"pass {pass_name!r} has no option {key!r} (options: {known})")
        try:
            converted[name] = convert_option(hints[name], raw)
        except (TypeError, ValueError) as error:
            raise UsageError(f"option {key!r} of pass {pass_name!r}: {error}") from None
    return options_class(**converted)


def convert_option(kind: Any, raw: Any) -> Any:
    """Convert ``raw`` (a string, a list of strings, or already typed) to type ``kind``."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null"))):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert_option(arg, raw)
            except (TypeError, ValueError) as error:
                errors.append(str(error))
        raise ValueError("; ".join(errors))
    if hasattr(kind, "parse_option"):
        return kind.parse_option(raw)
    if origin in (list, tuple, set, frozenset):
        items = raw if isinstance(raw, (list, tuple, set, frozenset)) else _split(raw)
        item_kind = args[0] if args else str
        converted = [convert_option(item_kind, item) for item in items]
        return origin(converted)
    if origin is dict:
        key_kind, value_kind = args or (str, str)
        items = raw if isinstance(raw, (list, tuple)) else _split(raw)
        pairs = raw.items() if isinstance(raw, Mapping) else (_pair(item) for item in items)
        return {convert_option(key_kind, k): convert_option(value_kind, v) for k, v in pairs}
    if origin is Literal:
        if raw not in args:
            raise ValueError(f"expected one of {', '.join(map(str, args))}, got {raw!r}")
        return raw
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if kind in (int, float):
        if isinstance(raw, bool):
            raise ValueError(f"expected a number, got {raw!r}")
        try:
            return kind(raw) if not isinstance(raw, str) else kind(raw.strip())
        except ValueError:
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if kind is str:
        return str(raw)
    if kind is Any:
        return raw
    raise TypeError(f"unsupported option type {kind!r}")


def _split(raw: Any) -> list[Any]:
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return [raw]


def _pair(item: Any) -> tuple[str, str]:
    if isinstance(item, str):
        for separator in ("=", ":"):
            if separator in item:
                key, value = item.split(separator, 1)
                return key.strip(), value.strip()
    raise ValueError(f"expected key=value, got {item!r}")
