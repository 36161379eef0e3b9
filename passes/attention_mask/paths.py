"""Mask paths: does a value read at (node, input slot) only ever reach attention masks?

finite-fill may give a fill constant a finite value only where it flows into masks and nowhere else
(a fill shared with, say, a position bias keeps its value there). :class:`MaskPaths` answers
this for the masks read at a set of sink edges, following values through the ops that pass a
fill on unchanged.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from mapc.ir import SHAPE_READERS, is_graph_output
from mapc.passes.attention_mask.detection import cone
from mapc.passes.attention_mask.fills import uniform_value

#: (op, input slot) pairs through which a fill value flows unchanged into an op's output.
_VALUE_SLOTS: dict[str, tuple[int, ...] | None] = {
    "Add": None, "Sub": None, "Mul": None, "Max": None, "Min": None, "Sum": None, "Concat": None,
    "Expand": (0,), "Reshape": (0,), "Unsqueeze": (0,), "Squeeze": (0,), "Flatten": (0,), "Transpose": (0,),
    "Slice": (0,), "Gather": (0,), "GatherND": (0,), "GatherElements": (0,), "Tile": (0,), "Trilu": (0,),
    "Cast": (0,), "CastLike": (0,), "Identity": (0,), "Split": (0,), "Where": (1, 2), "ScatterND": (0, 2),
    "ScatterElements": (0, 2), "Pad": (0, 2),
}


class MaskPaths:
    """The mask paths ending at ``sinks`` (node, input slot), as the graph is when made."""

    def __init__(self, graph: gs.Graph, sinks: list[tuple[gs.Node, int]]) -> None:
        self.graph = graph
        self.sink_edges = {(id(node), slot) for node, slot in sinks}
        self.region = {id(node) for node in cone([node.inputs[slot] for node, slot in sinks])}
        self._memo: dict[int, bool] = {}

    def edge_ok(self, node: gs.Node, slot: int) -> bool:
        """True if the value ``node`` reads at ``slot`` only reaches masks (or shapes)."""
        if (id(node), slot) in self.sink_edges or node.op in SHAPE_READERS:
            return True
        if id(node) not in self.region:
            return False
        if node.op == "Equal" and any(_is_zero(t) for i, t in enumerate(node.inputs) if i != slot):
            return True  # the 4.40 padding merge Equal(causal + pad, 0): unchanged while NEG < -1
        slots = _VALUE_SLOTS.get(node.op, ())
        if slots is not None and slot not in slots:
            return False
        return self._node_ok(node)

    def _node_ok(self, node: gs.Node) -> bool:
        key = id(node)
        if key not in self._memo:
            self._memo[key] = False  # cycles cannot happen in a valid graph; be safe anyway
            self._memo[key] = all(self._tensor_ok(out) for out in node.outputs)
        return self._memo[key]

    def _tensor_ok(self, tensor: gs.Tensor) -> bool:
        if is_graph_output(self.graph, tensor):
            return False
        return all(self.edge_ok(reader, slot) for reader in tensor.outputs for slot, t in enumerate(reader.inputs) if t is tensor)


def _is_zero(tensor: gs.Tensor) -> bool:
    value = uniform_value(tensor)
    return value is not None and float(value) == 0.0
