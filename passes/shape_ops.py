"""Replace ``Shape`` and ``Size`` nodes whose answer is known from static shapes by constants.

Shared by ``fix-shapes`` (right after fixing the inputs) and ``fold-constants`` (for models whose
shapes were static to begin with). The tensor a Shape reads is never evaluated or loaded: the
answer comes from its annotated shape, so ``Shape(weight)`` of a 1 GB weight costs nothing.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..ir import Model, is_graph_output
from .constants import replace_with_constant


def shape_op_value(node: gs.Node) -> np.ndarray | None:
    """The int64 value a ``Shape`` (with its ``start``/``end``) or ``Size`` node computes, if the
    dims it reads are static; None otherwise."""
    if (node.domain or "") not in ("", "ai.onnx") or node.op not in ("Shape", "Size") or not node.inputs:
        return None
    shape = _known_shape(node.inputs[0])
    if shape is None:
        return None
    if node.op == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64) if _static(shape) else None
    rank = len(shape)
    start = _clamp(int(node.attrs.get("start", 0)), rank)
    end = _clamp(int(node.attrs["end"]), rank) if node.attrs.get("end") is not None else rank
    dims = list(shape[start:end])
    return np.array(dims, dtype=np.int64) if _static(dims) else None


def replace_shape_ops(model: Model) -> int:
    """Replace every foldable Shape/Size of the main graph by a constant; return how many.

    A Shape whose output is a graph output stays (replacing it would only trade it for an
    Identity). The replaced nodes are removed.
    """
    graph = model.graph
    replaced = []
    for node in graph.nodes:
        value = shape_op_value(node)
        if value is None or not node.outputs or is_graph_output(graph, node.outputs[0]):
            continue
        replace_with_constant(model, node.outputs[0], value)
        replaced.append(node)
    if replaced:
        doomed = {id(node) for node in replaced}
        for node in replaced:
            node.inputs.clear()
            node.outputs.clear()
        graph.nodes = [node for node in graph.nodes if id(node) not in doomed]
    return len(replaced)


def _known_shape(tensor: gs.Tensor) -> list | None:
    if isinstance(tensor, gs.Constant):
        return [int(d) for d in tensor.shape]
    return None if tensor.shape is None else list(tensor.shape)


def _static(dims: list) -> bool:
    return all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims)


def _clamp(index: int, rank: int) -> int:
    if index < 0:
        index += rank
    return min(max(index, 0), rank)
