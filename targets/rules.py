"""Constraints: small functions whose docstring is the rule a user reads.

A constraint is a function ``constraint_*(node: NodeView, target: Target) -> (ok, detail)``
registered with :func:`constraint`. Its docstring's first line is the rule in one sentence,
with limits written as ``{conv.max_stride}`` and filled in from the target record; further
lines explain it. ``detail`` says what this node has ("strides are 4x4").

A node is supported when **any allow constraint** passes and **no veto** fails (the composition
ExecuTorch's Arm backend and torch.fx use). Constraints that read a limit the target leaves unset
are not part of that target (``when``). The same :class:`Constraint` objects produce fallback reasons,
``mapc targets --show`` and ``docs/targets/<name>.md``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from mapc.ir import Note
from mapc.targets.spec import Target, TargetKind
from mapc.targets.views import NodeView

Check = Callable[[NodeView, Target], "tuple[bool, str]"]
FixHint = Callable[[NodeView, Target, str], "str | None"]


@dataclass(frozen=True)
class Constraint:
    """One registered constraint function and where it applies."""

    code: str
    kind: Literal["allow", "veto"]
    check: Check
    ops: frozenset[str] | None
    kinds: tuple[TargetKind, ...]
    when: Callable[[Target], bool]
    fix: FixHint | str | None

    @property
    def template(self) -> str:
        return inspect.cleandoc(self.check.__doc__ or "")

    def text(self, target: Target) -> str:
        """The whole docstring with the target's limits filled in."""
        return self.template.format_map(target.fields())

    def summary(self, target: Target) -> str:
        """The rule in one sentence (the docstring's first line, filled in)."""
        return self.text(target).splitlines()[0]

    def applies_to(self, op: str) -> bool:
        return self.ops is None or op in self.ops

    def suggest(self, node: NodeView, target: Target, detail: str) -> str | None:
        if self.fix is None or isinstance(self.fix, str):
            return self.fix
        return self.fix(node, target, detail)

    def reason(self, node: NodeView, target: Target, detail: str) -> Note:
        """Why ``node`` fails this constraint: the rule's sentence, what the node has, the fix."""
        sentence = self.summary(target).rstrip(".")
        return Note(self.code, f"{sentence}; {detail}" if detail else sentence, fix=self.suggest(node, target, detail))


_CONSTRAINTS: list[Constraint] = []


def constraint(
    code: str,
    *,
    kind: Literal["allow", "veto"] = "veto",
    ops: Iterable[str] | None = None,
    kinds: tuple[TargetKind, ...] = ("accelerator",),
    when: Callable[[Target], bool] = lambda target: True,
    fix: FixHint | str | None = None,
) -> Callable[[Check], Check]:
    """Register a ``constraint_*`` function as a :class:`Constraint` (see the module docstring)."""

    def register(check: Check) -> Check:
        if not check.__name__.startswith("constraint_") or not (check.__doc__ or "").strip():
            raise ValueError(f"{check.__name__}: a constraint is a documented constraint_* function")
        if any(registered.code == code for registered in _CONSTRAINTS):
            raise ValueError(f"constraint code {code!r} is already registered")
        _CONSTRAINTS.append(Constraint(code, kind, check, None if ops is None else frozenset(ops), kinds, when, fix))
        return check

    return register


def registered_constraints() -> list[Constraint]:
    """Every registered constraint, in registration order (:mod:`mapc.targets.constraints` holds the built-in ones)."""
    return list(_CONSTRAINTS)


def evaluate(node: NodeView, target: Target, constraints: list[Constraint]) -> list[Note]:
    """Every reason ``node`` cannot run on ``target`` (empty when it can)."""
    applicable = [c for c in constraints if c.applies_to(node.op)]
    allows = [c for c in applicable if c.kind == "allow"]
    reasons: list[Note] = []
    refusals = []
    for allow in allows:
        ok, detail = allow.check(node, target)
        if ok:
            break
        refusals.append((allow, detail))
    else:
        if refusals:
            first, _ = refusals[0]
            details = "; ".join(d for _, d in refusals if d)
            reasons.append(Note("op.not-supported", details or f"{node.op} is not supported", fix=first.suggest(node, target, details)))
    for veto in applicable:
        if veto.kind == "veto":
            ok, detail = veto.check(node, target)
            if not ok:
                reasons.append(veto.reason(node, target, detail))
    return reasons
