"""The pass registry: names to pass classes, for built-in passes and users' own.

``@register_pass`` registers a :class:`~mapc.passes.base.Pass` subclass, or wraps a plain
function ``f(model, ctx, options) -> PassResult | bool`` into one. Built-in passes register
when ``mapc.passes`` is imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, overload

from mapc.ir import Model, UsageError
from mapc.passes.base import NoOptions, Pass, PassContext, PassResult
from mapc.passes.facts import Fact

_REGISTRY: dict[str, type[Pass]] = {}

PassFunction = Callable[[Model, PassContext, Any], "PassResult | bool"]


@overload
def register_pass(target: type[Pass]) -> type[Pass]: ...
@overload
def register_pass(target: PassFunction) -> type[Pass]: ...
@overload
def register_pass(
    target: None = None,
    *,
    name: str | None = None,
    options: type | None = None,
    requires: tuple[Fact[Any], ...] = (),
    provides: tuple[Fact[Any], ...] = (),
    replace: bool = False,
) -> Callable[[Any], type[Pass]]: ...


def register_pass(
    target: Any = None,
    *,
    name: str | None = None,
    options: type | None = None,
    requires: tuple[Fact[Any], ...] = (),
    provides: tuple[Fact[Any], ...] = (),
    replace: bool = False,
) -> Any:
    """Register a pass class, or a function turned into one, under its name.

    Usable bare (``@register_pass``) or with arguments (``@register_pass(name="my-pass")``).
    A function's name defaults to its Python name with ``_`` turned into ``-``; its docstring
    becomes the pass's summary and description; ``options`` is its Options dataclass and
    ``requires``/``provides`` its facts (see :class:`~mapc.passes.base.Pass`). A name
    that is already registered is an error unless ``replace=True``.
    """

    def register(item: Any) -> type[Pass]:
        pass_class = item if isinstance(item, type) and issubclass(item, Pass) else _wrap_function(item, name, options, requires, provides)
        if name is not None and pass_class.name != name:
            pass_class.name = name
        if not getattr(pass_class, "name", None):
            raise ValueError(f"{pass_class.__name__} has no pass name")
        if not dataclasses.is_dataclass(pass_class.Options):
            raise TypeError(f"pass {pass_class.name!r}: Options must be a dataclass")
        if not pass_class.summary():
            raise ValueError(f"pass {pass_class.name!r} needs a docstring (its first line is the summary)")
        existing = _REGISTRY.get(pass_class.name)
        if existing is not None and existing is not pass_class and not replace:
            raise ValueError(f"a pass named {pass_class.name!r} is already registered")
        _REGISTRY[pass_class.name] = pass_class
        return pass_class

    return register(target) if target is not None else register


def _wrap_function(
    function: PassFunction, name: str | None, options: type | None, requires: tuple[Fact[Any], ...], provides: tuple[Fact[Any], ...]
) -> type[Pass]:
    pass_name = name or function.__name__.replace("_", "-")

    def run(self: Pass, model: Model, ctx: PassContext) -> PassResult:
        result = function(model, ctx, self.options)
        return result if isinstance(result, PassResult) else PassResult(changed=bool(result))

    return type(
        f"FunctionPass_{function.__name__}",
        (Pass,),
        {
            "name": pass_name,
            "Options": options or NoOptions,
            "requires": tuple(requires),
            "provides": tuple(provides),
            "__doc__": function.__doc__,
            "__module__": function.__module__,
            "run": run,
        },
    )


def get_pass(name: str) -> type[Pass]:
    """The pass class registered as ``name``; :class:`UsageError` listing known passes if none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UsageError(f"unknown pass {name!r} (known passes: {known})") from None


def registered_passes() -> dict[str, type[Pass]]:
    """All registered passes by name, sorted by name."""
    return dict(sorted(_REGISTRY.items()))
