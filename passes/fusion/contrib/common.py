"""What the contrib-op rewrites share: the domain, optional slots and unread outputs."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import NearMiss, is_graph_output
from mapc.passes.fusion.context import FusionContext

#: onnxruntime's contrib-op domain.
ORT = "com.microsoft"


def unread(graph: gs.Graph, node: gs.Node, slots: range) -> bool:
    """True if none of ``node``'s outputs in ``slots`` is read or a graph output."""
    return all(slot >= len(node.outputs) or node.outputs[slot].is_empty()
               or (not node.outputs[slot].outputs and not is_graph_output(graph, node.outputs[slot])) for slot in slots)


def float_dtype(ctx: FusionContext, tensor: gs.Tensor) -> np.dtype:
    """``tensor``'s float dtype, else a near-miss."""
    dtype = ctx.dtype(tensor)
    if dtype is None or dtype.kind != "f":
        raise NearMiss("dtype", f"the input's type is unknown or not float ({dtype})", ctx.shapes_fix("run shape inference (fix-shapes)"))
    return dtype


def ints(ctx: FusionContext, values: list[int]) -> gs.Constant:
    """An int64 constant (shapes, axes, slice bounds)."""
    return ctx.const(np.asarray(values, dtype=np.int64), "ints")
