"""Atomic units: the nodes the partitioner never splits.

:func:`atomic_units` groups nodes that must land on the same device, never split:

* **QDQ node units** (as onnxruntime defines them): an op with the DequantizeLinear nodes that
  feed only it and the QuantizeLinear nodes that are the only readers of its outputs, when its
  activation inputs and outputs share one integer type (a mixed 8/16-bit op is no unit: the
  EP runs it in float between separate Q/DQ nodes);
* **fused patterns** the target runs as one kernel (``ops.fused_patterns``, e.g. Conv -> Relu),
  when each link is the only reader of the previous op's outputs; a skip normalization
  (``Add -> LayerNormalization`` or ``Add -> RMSNormalization``: the residual sum and its norm)
  also when the sum has other readers, since that kernel returns the sum too (onnxruntime's
  ``SkipLayerNormalization``), provided the norm's scale and bias are constants;
* a ``Constant`` node with its only reader.

Each unit is convex (no path leaves it and comes back), so contracting units keeps the graph
acyclic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from mapc.ir import is_default_domain, producer
from mapc.passes import activation_types


@dataclass
class Unit:
    """Nodes (indices in graph order) that move together; ``anchor`` is the op they serve."""

    index: int
    members: list[int]
    kind: str
    anchor: int


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


#: Normalizations a skip kernel fuses with the residual Add before them (the sum is an output too).
SKIP_NORMALIZATIONS = frozenset({"LayerNormalization", "RMSNormalization"})


def _constant_operand(tensor: gs.Tensor) -> bool:
    """An initializer, or one dequantized from an initializer (a quantized norm's scale)."""
    source = producer(tensor)
    if isinstance(tensor, gs.Constant) or tensor.is_empty():
        return True
    return source is not None and source.op == "DequantizeLinear" and isinstance(source.inputs[0], gs.Constant)


def atomic_units(graph: gs.Graph, fused_patterns: Sequence[Sequence[str]] = ()) -> list[Unit]:
    """Group ``graph``'s top-level nodes into units (see the module docstring), in graph order."""
    nodes = graph.nodes
    index_of = {id(node): index for index, node in enumerate(nodes)}
    outputs = {id(t) for t in graph.outputs}
    groups = _UnionFind(len(nodes))
    kinds: dict[int, str] = {}
    anchors: dict[int, int] = {}

    def sole_reader(node: gs.Node) -> gs.Node | None:
        """The single top-level node reading every output of ``node``, if there is one."""
        readers = {id(r): r for t in node.outputs for r in t.outputs}
        if len(readers) != 1 or any(id(t) in outputs or not t.outputs for t in node.outputs):
            return None
        reader = next(iter(readers.values()))
        return reader if id(reader) in index_of else None

    for index, node in enumerate(nodes):
        if node.op in ("QuantizeLinear", "DequantizeLinear", "Constant") or not is_default_domain(node):
            continue
        members = [index]
        for tensor in node.inputs:
            source = producer(tensor)
            if source is not None and source.op == "DequantizeLinear" and sole_reader(source) is node:
                members.append(index_of[id(source)])
        for tensor in node.outputs:
            readers = list(tensor.outputs)
            if readers and id(tensor) not in outputs and all(r.op == "QuantizeLinear" and id(r) in index_of for r in readers):
                members.extend(index_of[id(r)] for r in readers)
        if len(members) > 1 and len(activation_types(node)) <= 1:
            for member in members[1:]:
                groups.union(index, member)
            kinds[index] = "QDQ node unit"
            anchors[index] = index

    def next_link(node: gs.Node, op: str) -> gs.Node | None:
        """The node of ``op`` that continues a fused chain after ``node``, if one does."""
        if node.op == "Add" and op in SKIP_NORMALIZATIONS and len(node.outputs) == 1:
            norms = [r for r in node.outputs[0].outputs if r.op == op and id(r) in index_of and r.inputs[0] is node.outputs[0]]
            if len(norms) == 1 and all(_constant_operand(t) for t in norms[0].inputs[1:]):
                return norms[0]
            return None
        return sole_reader(node)

    for pattern in fused_patterns:
        for index, node in enumerate(nodes):
            if node.op != pattern[0]:
                continue
            chain, current = [index], node
            for op in pattern[1:]:
                following = next_link(current, op)
                if following is None or following.op != op:
                    break
                current = following
                chain.append(index_of[id(current)])
            else:
                for member in chain[1:]:
                    groups.union(index, member)
                kinds.setdefault(index, "fused " + " -> ".join(pattern))
                anchors.setdefault(index, index)

    for index, node in enumerate(nodes):
        if node.op == "Constant":
            reader = sole_reader(node)
            if reader is not None:
                groups.union(index, index_of[id(reader)])

    members_of: dict[int, list[int]] = {}
    for index in range(len(nodes)):
        members_of.setdefault(groups.find(index), []).append(index)
    units = []
    for root, members in sorted(members_of.items(), key=lambda item: item[1][0]):
        kind = next((kinds[m] for m in members if m in kinds), "node")
        anchor = next((anchors[m] for m in members if m in anchors), next((m for m in members if nodes[m].op != "Constant"), members[0]))
        units.append(Unit(len(units), members, kind, anchor))
    return units
