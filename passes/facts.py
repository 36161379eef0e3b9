"""Facts: what one pass tells later passes, as named, typed slots.

A :class:`Fact` is declared once, next to the type of its value (``SHAPES`` in
:mod:`mapc.passes.shape_ops`, the partition plan in :mod:`mapc.targets.partition`, ...). A pass
names the facts it needs in ``requires`` and the facts it sets in ``provides``; the pass manager
checks both (see :func:`establish` and :func:`missing_provided`), so a pass never asks "has someone
run shape inference?" or looks a value up by a string.

A fact with an ``establish`` function (shapes) is made true by the manager before a pass that
requires it; a fact without one (the partition plan) must have been provided by an earlier pass,
and a pipeline that forgets that fails with a usage error naming the pass to run first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mapc.ir import Model, UsageError

if TYPE_CHECKING:
    from mapc.passes.base import PassContext

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Fact(Generic[T]):
    """A named slot of :class:`Facts` holding values of one type.

    Attributes:
        name: kebab-case name (reports, error messages).
        meaning: one sentence: what it means when this fact is present.
        provided_by: the pass that provides it, named in the error when it is missing.
        establish: makes the fact true on demand, ``establish(model, ctx)``; None if only a pass can.
    """

    name: str
    meaning: str
    provided_by: str | None = None
    establish: Callable[[Model, PassContext], Any] | None = None

    def __repr__(self) -> str:
        return f"Fact({self.name!r})"


class Facts:
    """The facts of one compile: at most one value per :class:`Fact`, typed by it."""

    def __init__(self) -> None:
        self._values: dict[Fact[Any], Any] = {}

    def get(self, fact: Fact[T], default: T | None = None) -> T | None:
        return self._values.get(fact, default)

    def __getitem__(self, fact: Fact[T]) -> T:
        try:
            return self._values[fact]
        except KeyError:
            raise KeyError(f"no fact {fact.name!r} yet") from None

    def __setitem__(self, fact: Fact[T], value: T) -> None:
        self._values[fact] = value

    def __contains__(self, fact: object) -> bool:
        return fact in self._values

    def setdefault(self, fact: Fact[T], value: T) -> T:
        return self._values.setdefault(fact, value)

    def discard(self, fact: Fact[Any]) -> None:
        self._values.pop(fact, None)


def establish(pass_name: str, requires: tuple[Fact[Any], ...], model: Model, ctx: PassContext) -> None:
    """Make each fact a pass requires true before it runs, or fail naming the pass that provides it."""
    for fact in requires:
        if fact.establish is not None:
            fact.establish(model, ctx)
        elif fact not in ctx.facts:
            source = f": run {fact.provided_by!r} before it" if fact.provided_by else ""
            raise UsageError(f"pass {pass_name!r} needs {fact.meaning}{source}")


def missing_provided(provides: tuple[Fact[Any], ...], ctx: PassContext) -> list[Fact[Any]]:
    """The facts a pass promised but did not set (a bug in that pass)."""
    return [fact for fact in provides if fact not in ctx.facts]
