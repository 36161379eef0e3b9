"""Command-line flags, declared in the metadata of the option they set.

An option that ``mapc compile`` exposes says so where it is defined, in its dataclass field::

    mask_value: float | None = field(default=None, metadata=flag("--mask-value", "finite fill ...", metavar="NEG"))

The command line is generated from these declarations (:mod:`mapc.cli_flags`), so a flag, its
help, its type and its default cannot drift from the option. The same flag may be declared by
several passes' options (``--mask-precision`` on ``attention-mask`` and ``decompose-attention``):
it sets the option on each of those passes that the pipeline has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_KEY = "mapc.flag"


@dataclass(frozen=True)
class Flag:
    """How an option appears on the command line.

    Attributes:
        name: the flag, ``--mask-value``.
        help: one line for ``--help``.
        metavar: the value's placeholder in ``--help``.
        const: the value when the flag is given without one (the flag's value is then optional).
        repeat: the flag may be repeated; this turns the list of strings given into the value.
        negative: for a boolean option that defaults to true, the flag that sets it false
            (``--no-cost-model``); ``name`` is then unused on the command line.
        requires: the flag (``--quantize``, ``--target``) without which this one means nothing.
    """

    name: str
    help: str
    metavar: str | None = None
    const: Any = None
    repeat: Callable[[Sequence[str]], Any] | None = None
    negative: str | None = None
    requires: str | None = None

    @property
    def spelling(self) -> str:
        """The flag as the user types it."""
        return self.negative or self.name


def flag(name: str, help: str, **details: Any) -> dict[str, Flag]:
    """Field metadata declaring the command-line flag of an option (see :class:`Flag`)."""
    return {_KEY: Flag(name, help, **details)}


def flag_of(field: dataclasses.Field) -> Flag | None:
    """The flag a dataclass field declares, if any."""
    return field.metadata.get(_KEY)


def flagged_fields(options_class: type) -> list[tuple[dataclasses.Field, Flag]]:
    """The fields of ``options_class`` that declare a flag, in definition order."""
    return [(field, declared) for field in dataclasses.fields(options_class) if (declared := flag_of(field)) is not None]
