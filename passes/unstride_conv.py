"""``unstride-conv``: a strided, dilated 1-D depthwise Conv as a stride-1 Conv and a strided Slice.

Matches a ``Conv`` over a rank-3 input ``[N, C, L]`` that is depthwise (``group`` equals the input
channels, one channel included) with a stride above 1 **and** a dilation above 1. Produces the
same Conv with stride 1 followed by ``Slice(axes=[2], steps=[stride])``: output position ``i`` of
the strided Conv is position ``i * stride`` of the stride-1 one, and ``ceil(L1 / s)`` positions of
``L1`` are exactly ``floor((L1 - 1) / s) + 1`` (the strided length), for any explicit pads
(``auto_pad`` SAME, whose padding depends on the stride, is left alone). The Slice is
exact, so the rewrite holds for every input.

Why: Qualcomm HTP runs a 1-D Conv as a 2-D one after onnxruntime's NHWC layout transform, and its
``DepthWiseConv2d`` refuses a stride and a dilation above 1 together (``backendValidateOpConfig``
error 3110). The refusal comes after the layout transform, so onnxruntime cannot put the node
back on the CPU and the whole session fails. The qnn-htp target runs this pass before
quantization (its ``prepare`` list).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, is_default_domain, toposort
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES


def _strided_dilated_depthwise_1d(node: gs.Node) -> int | None:
    """The stride to move out of ``node``, or None if it is not such a Conv."""
    if node.op != "Conv" or not is_default_domain(node) or not node.inputs or not node.outputs:
        return None
    if str(node.attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
        return None  # SAME padding depends on the stride
    data = node.inputs[0]
    if data.shape is None or len(data.shape) != 3 or not isinstance(data.shape[1], (int, np.integer)):
        return None
    strides = [int(s) for s in node.attrs.get("strides") or [1]]
    dilations = [int(d) for d in node.attrs.get("dilations") or [1]]
    if int(node.attrs.get("group", 1)) != int(data.shape[1]) or len(strides) != 1:
        return None
    if strides[0] > 1 and max(dilations) > 1:
        return strides[0]
    return None


@register_pass
class UnstrideConv(Pass):
    """Move the stride of a strided, dilated 1-D depthwise Conv into a Slice (see the module doc).

    Counters: ``convs_unstrided``.
    """

    name = "unstride-conv"
    requires = (SHAPES,)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        changed = 0
        for node in list(model.graph.nodes):
            stride = _strided_dilated_depthwise_1d(node)
            if stride is None:
                continue
            output = node.outputs[0]
            dense = gs.Variable(model.fresh_name(f"{output.name}_stride1"), dtype=output.dtype)
            node.attrs["strides"] = [1]
            node.outputs[0] = dense
            constants = [gs.Constant(model.fresh_name(f"{node.name or 'conv'}_{part}"), np.array([value], dtype=np.int64))
                         for part, value in (("start", 0), ("end", np.iinfo(np.int64).max), ("axis", 2), ("step", stride))]
            model.graph.nodes.append(gs.Node("Slice", model.fresh_name(f"{node.name or 'conv'}_stride"), inputs=[dense, *constants], outputs=[output]))
            changed += 1
        if changed:
            toposort(model.graph)
        return PassResult(changed=bool(changed), counters={"convs_unstrided": changed})
