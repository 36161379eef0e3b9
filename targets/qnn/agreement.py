"""mapc's plan beside QNN's verdict, node by node: :func:`compare_plan`.

Each node of the planned model gets one :class:`NodeAgreement`: where mapc placed it (on the
target or on the CPU, with mapc's reasons) and what QNN did with it. Two kinds of disagreement:

* ``mapc-overclaims``: mapc placed the node on HTP and QNN refused it (or never got to it
  because the build failed). That is a bug of the target's rules: a compile with
  ``--check-with-qnn`` fails on it.
* ``mapc-underclaims``: mapc kept the node on the CPU and QNN took it into a graph it built.
  mapc is too cautious (a missing op, a rule too strict, or a cost decision QNN does not make).
  When QNN failed to build the graph, nodes it validated were not taken: no underclaim (QNN
  validates float ops on v68 and then fails to finalize the graph, as mapc predicts).

``Constant`` nodes are not compared: onnxruntime turns them into initializers before any EP
sees them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from mapc.ir import CheckFailed, Model, UsageError
from mapc.targets.partition import Plan
from mapc.targets.spec import Target
from mapc.targets.qnn.oracle import QnnCheck, ask_qnn, require_qnn
from mapc.targets.qnn.verdict import NodeVerdict

Disagreement = Literal["", "mapc-overclaims", "mapc-underclaims"]


@dataclass(frozen=True)
class NodeAgreement:
    """One node: mapc's placement and reasons, QNN's verdict, and whether they agree."""

    index: int
    name: str
    op: str
    mapc_on_target: bool
    mapc_reasons: tuple[str, ...]
    qnn: NodeVerdict
    #: QNN built the graph (else a validated node was not taken).
    built: bool = True

    @property
    def disagreement(self) -> Disagreement:
        if self.op == "Constant":
            return ""
        if self.mapc_on_target and not self.qnn.on_htp:
            return "mapc-overclaims"
        if not self.mapc_on_target and self.qnn.on_htp and self.built:
            return "mapc-underclaims"
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "op": self.op,
            "mapc": "target" if self.mapc_on_target else "cpu",
            "mapc_reasons": list(self.mapc_reasons),
            "qnn": self.qnn.status,
            "qnn_reason": self.qnn.reason,
            "disagreement": self.disagreement,
        }


@dataclass
class Agreement:
    """The node-by-node comparison of one plan with one QNN check."""

    check: QnnCheck
    nodes: list[NodeAgreement]

    @property
    def overclaims(self) -> list[NodeAgreement]:
        """Nodes mapc put on HTP that QNN refused: bugs of the target's rules."""
        return [node for node in self.nodes if node.disagreement == "mapc-overclaims"]

    @property
    def underclaims(self) -> list[NodeAgreement]:
        return [node for node in self.nodes if node.disagreement == "mapc-underclaims"]

    @property
    def taken_against_plan(self) -> list[NodeAgreement]:
        """Nodes mapc keeps on the CPU that QNN validated and took into its graph (built or not)."""
        return [node for node in self.compared if not node.mapc_on_target and node.qnn.on_htp]

    @property
    def compared(self) -> list[NodeAgreement]:
        return [node for node in self.nodes if node.op != "Constant"]

    @property
    def agreeing(self) -> int:
        return sum(1 for node in self.compared if not node.disagreement)

    @property
    def ok(self) -> bool:
        """QNN built the model and took every node mapc placed on HTP."""
        return self.check.built and not self.overclaims

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.check.as_dict(),
            "ok": self.ok,
            "nodes_compared": len(self.compared),
            "nodes_agreeing": self.agreeing,
            "overclaims": len(self.overclaims),
            "underclaims": len(self.underclaims),
            "disagreements_by_op": dict(Counter(f"{n.disagreement}:{n.op}" for n in self.nodes if n.disagreement)),
            "nodes": [node.as_dict() for node in self.nodes],
        }


def compare_plan(plan: Plan, check: QnnCheck) -> Agreement:
    """Pair every node of ``plan`` with QNN's verdict on the same node (same graph order)."""
    views = plan.model_view.nodes
    if len(views) != len(check.verdicts):
        raise CheckFailed(f"QNN was asked about {len(check.verdicts)} nodes, but the plan has {len(views)}: the model changed after planning")
    on_target = {index for segment in plan.segments if segment.on_target for index in segment.nodes}
    nodes = []
    for view, verdict in zip(views, check.verdicts):
        reasons = tuple(f"{note.code}: {note.message}" for note in plan.reasons.get(view.index, []))
        nodes.append(NodeAgreement(view.index, verdict.name, view.node.op, view.index in on_target, reasons, verdict, check.built))
    return Agreement(check, nodes)


def check_plan(model: Model, plan: Plan, **ask: Any) -> Agreement:
    """Ask QNN about ``model`` (as planned, not lowered) for the plan's target and compare.

    The target must name QNN as its vendor compiler (``qnn-htp`` and the TOML targets based on
    it); its options (``htp_arch``) go to :func:`~mapc.targets.qnn.oracle.ask_qnn`, as do ``ask``.
    """
    target = plan.target
    require_qnn_target(target, "--check-with-qnn")
    arch, options = qnn_options(target)
    return compare_plan(plan, ask_qnn(model, arch=arch, provider_options=options, **ask))


def qnn_options(target: Target) -> tuple[str, dict[str, str]]:
    """The HTP architecture and the other QNN EP options a QNN target names."""
    options = dict(target.vendor.options) if target.vendor is not None else {}
    return options.pop("htp_arch", "73"), options


def require_qnn_target(target: Target | None, what: str) -> None:
    """:class:`UsageError` unless ``target`` is one QNN compiles (its plain QDQ graph) and the
    ``qnn`` extra is installed; ``what`` names the flag asking."""
    if target is None:
        raise UsageError(f"{what} needs a target (--target qnn-htp)")
    if target.vendor is None or target.vendor.name != "qnn":
        raise UsageError(f"{what} needs a target that QNN compiles (qnn-htp, qnn-htp:v75, ...); {target} is not one")
    if target.lowering != "none":
        raise UsageError(f"{what} needs the plain QDQ graph, but {target} lowers partitions into functions")
    require_qnn(what)
