"""Reductions over axes of size 1.

* ``ReduceMax``, ``ReduceMin``, ``ReduceMean``, ``ReduceSum`` and ``ReduceProd`` whose constant
  axes include axes of size 1 (static input shape): those axes are left out of the reduction,
  since reducing one element is the element itself for these five. With ``keepdims`` 1 the
  output keeps the size-1 axes anyway; with ``keepdims`` 0 a Reshape to the output's static
  shape drops them. When every reduced axis has size 1 the node is the identity (``keepdims``
  1) or that Reshape alone. Exact for every input.

Why: QNN's quantized ReduceMax and ReduceMin over axes that include a trailing axis of size 1
(``[1, 3, 1]`` over ``[1, 2]`` or all axes, ``[3, 1]`` over both; a8w8 and a16w8) return
values that are not the maximum or minimum, with no error (found by running random quantized
graphs on the HTP emulator); without the size-1 axes they are right.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import constant_value, rule, static_shape
from mapc.passes.peephole.context import PeepholeContext

#: Reductions for which reducing a single element gives the element itself.
ELEMENT_PRESERVING = ("ReduceMax", "ReduceMin", "ReduceMean", "ReduceSum", "ReduceProd")


def _axes(node: gs.Node, rank: int) -> tuple[list[int], bool] | None:
    """The node's reduced axes (non-negative) and whether they come from an input; None when
    they are not constant or the node reduces nothing (empty axes with noop_with_empty_axes)."""
    from_input = len(node.inputs) > 1 and bool(node.inputs[1].name)
    if from_input:
        values = constant_value(node.inputs[1])
        if values is None:
            return None
        axes = [int(a) for a in np.ravel(values)]
    else:
        axes = [int(a) for a in node.attrs.get("axes", [])]
    if not axes:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            return None
        axes = list(range(rank))
    return sorted({a % rank for a in axes}), from_input


@rule(*ELEMENT_PRESERVING)
def reduce_over_unit_axes(rw: PeepholeContext, node: gs.Node) -> bool:
    """Leave axes of size 1 out of an element-preserving reduction (module doc)."""
    shape, result = static_shape(node.inputs[0]), node.outputs[0]
    if shape is None or not shape or len(node.outputs) != 1:
        return False
    found = _axes(node, len(shape))
    if found is None:
        return False
    axes, from_input = found
    kept = [a for a in axes if shape[a] != 1]
    if len(kept) == len(axes):
        return False
    keepdims = int(node.attrs.get("keepdims", 1))
    if not kept and keepdims:
        return rw.bypass(node, node.inputs[0])
    target = static_shape(result)
    if not keepdims and target is None:
        return False
    if not kept:
        rw.become(node, "Reshape", [node.inputs[0], rw.const(list(target), "reduce_shape", np.int64)])
        return True
    if from_input:
        node.inputs[1] = rw.const(kept, "reduce_axes", np.int64)
    else:
        node.attrs["axes"] = kept
    if keepdims:
        return True
    # keepdims 0: the unit axes stay in this reduction's output; a Reshape drops them
    reduced = gs.Variable(rw.model.fresh_name(f"{result.name}_unit_axes"), dtype=result.dtype,
                          shape=[d for a, d in enumerate(shape) if a not in kept])
    node.outputs[0] = reduced
    rw.graph.nodes.insert(rw.graph.nodes.index(node) + 1, gs.Node(
        "Reshape", rw.model.fresh_name(f"{node.name or 'reduce'}_drop_unit_axes"),
        inputs=[reduced, rw.const(list(target), "reduce_shape", np.int64)], outputs=[result]))
    return True
