"""Bindings: an option of some passes that follows the options of another pass of the pipeline.

The mask passes write a finite fill whose best value depends on the activation precision, and
that precision is what the quantize pass chooses: a :class:`Binding` says so once, as data,
instead of a special case in ``compile``. A binding never overrides what the user chose: a step
keeps its options when any option of ``chosen_by`` was set in the pipeline text or in the
compile's per-pass options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mapc.passes.base import Pass
from mapc.passes.pipeline import Step, map_passes, with_options


@dataclass(frozen=True)
class Binding:
    """``option`` of the passes named in ``passes`` follows ``value(source step)``.

    Attributes:
        source: the pass whose options decide (``quantize``).
        passes: the passes whose option follows.
        option: the option that follows (``precision``).
        value: the option's value for a given source step; None leaves the steps alone.
        chosen_by: options whose being set by the user means "leave this step alone".
    """

    source: str
    passes: tuple[str, ...]
    option: str
    value: Callable[[Pass], Any]
    chosen_by: tuple[str, ...]

    def apply(self, steps: Sequence[Step], source: Pass, user_options: Mapping[str, Mapping[str, Any]]) -> list[Step]:
        """``steps`` with the bound option set from ``source`` on every step the user left alone."""
        value = self.value(source)
        if value is None:
            return list(steps)

        def follow(step: Pass) -> Pass:
            if step.name not in self.passes:
                return step
            chosen = set(step.options_dict()) | set(user_options.get(step.name, {}))
            return step if chosen & set(self.chosen_by) else with_options(step, {self.option: value})

        return map_passes(steps, follow)
