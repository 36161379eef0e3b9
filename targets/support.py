"""Checking every node against a target: supported, or every reason it is not.

:func:`check_support` evaluates the target's constraints (:mod:`mapc.targets.rules`) on each node's
views and adds the user's forced fallbacks (``--cpu-ops``). ``Constant`` nodes are data and
always follow their readers; nodes already lowered into the target's domain stay where they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import onnx.defs

from mapc.ir import Note, UsageError
from mapc.targets.constraints import constraints_for
from mapc.targets.rules import evaluate
from mapc.targets.spec import Target
from mapc.targets.views import ModelView, NodeView


@dataclass
class NodeSupport:
    """The verdict for one node: no reasons means the target runs it."""

    view: NodeView
    reasons: list[Note] = field(default_factory=list)
    lowered: bool = False

    @property
    def supported(self) -> bool:
        return not self.reasons

    @property
    def fixes(self) -> list[str]:
        return list(dict.fromkeys(reason.fix for reason in self.reasons if reason.fix))


#: How often (in nodes) the support check reports progress.
PROGRESS_EVERY = 1000


def check_support(
    model_view: ModelView,
    target: Target,
    *,
    cpu_ops: Iterable[str] = (),
    progress: Callable[[str, int | None, int | None], None] | None = None,
) -> list[NodeSupport]:
    """One :class:`NodeSupport` per node of ``model_view``, in the same order."""
    forced = frozenset(cpu_ops)
    rules = constraints_for(target)
    verdicts = []
    for count, node in enumerate(model_view.nodes):
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(f"checking nodes against {target.name}", count, len(model_view.nodes))
        if is_lowered(node, target):
            verdicts.append(NodeSupport(node, lowered=True))
            continue
        reasons = [] if node.op == "Constant" else evaluate(node, target, rules)
        if node.op in forced:
            reasons.append(Note("user.cpu-ops", f"{node.op} is forced to the CPU by --cpu-ops"))
        verdicts.append(NodeSupport(node, reasons))
    return verdicts


def is_lowered(node: NodeView, target: Target) -> bool:
    """True for a partition node mapc already lowered for ``target`` (a call into its domain)."""
    return not target.is_host and node.node.domain == target.domain


def validate_cpu_ops(ops: Iterable[str]) -> tuple[str, ...]:
    """Check ``--cpu-ops`` names (ONNX op types, or ``domain::Op``); UsageError for a typo."""
    names = tuple(dict.fromkeys(op.strip() for op in ops if op.strip()))
    for op in names:
        if "::" not in op and not onnx.defs.has(op):
            raise UsageError(f"--cpu-ops: unknown operator {op!r} (use ONNX op types such as Softmax, or domain::Op)")
    return names
