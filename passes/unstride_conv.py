"""``unstride-conv``: a depthwise Conv's strides HTP cannot take, as a stride-1 Conv and a strided Slice.

Matches a depthwise ``Conv`` (``group`` equals the input channels, one channel included) over a
rank-3 or rank-4 input. First a dilation along an axis whose kernel size is 1 is set to 1 (it
dilates nothing). Then, if a stride is still above 1 **and** a dilation above 1, produces the
same Conv with stride 1 followed by ``Slice(axes=<strided axes>, steps=<their strides>)``; if
not, but an axis whose kernel size is 1 has a stride above 1 while an axis with a longer kernel is
strided too, the same for the size-1 kernel axes only (the other strides stay on the Conv). Output
position ``i`` of the strided Conv is position ``i * stride`` of the stride-1 one, and
``ceil(L1 / s)`` positions of ``L1`` are exactly ``floor((L1 - 1) / s) + 1`` (the strided
length), for any explicit pads (``auto_pad`` SAME, whose padding depends on the stride, is left
alone). Both steps are exact, so the rewrite holds for every input.

Why: Qualcomm HTP's ``DepthWiseConv2d`` (a 1-D Conv runs as a 2-D one after onnxruntime's NHWC
layout transform) refuses a stride and a dilation above 1 together (``backendValidateOpConfig``
error 3110; QNN took strides [2, 2] with dilations [2, 2] over a 3x3 kernel only, and refused
every mixed or 1-D case tried, including a dilation over a kernel of size 1). The refusal comes
after the layout transform, so onnxruntime cannot put the node back on the CPU and the whole
session fails. And in a8w8 a depthwise Conv with a stride above 1 along an axis where its
kernel has size 1 and along another (``[3, 1]`` or ``[1, 3]`` at strides ``[2, 2]``, 3 to 32
channels, 4x3 to 8x8 inputs) fails to finalize (``QNN_COMMON_ERROR_MEM_ALLOC``); strides ``[2, 1]``
and ``[1, 2]``, a ``[1, 1]`` kernel at ``[2, 2]``, a16w8 and fp16 build. Found by the QNN
property test. The qnn-htp target runs this pass before quantization (its ``prepare`` list).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, is_default_domain, toposort
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES


def _depthwise_strides_and_dilations(node: gs.Node) -> tuple[list[int], list[int], list[int]] | None:
    """A depthwise Conv's strides, its dilations with those over size-1 kernel axes set to 1, and
    its kernel; None if ``node`` is not a depthwise Conv this pass handles."""
    if node.op != "Conv" or not is_default_domain(node) or len(node.inputs) < 2 or not node.outputs:
        return None
    if str(node.attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
        return None  # SAME padding depends on the stride
    data, weight = node.inputs[0], node.inputs[1]
    if data.shape is None or len(data.shape) not in (3, 4) or not isinstance(data.shape[1], (int, np.integer)):
        return None
    spatial = len(data.shape) - 2
    kernel = list(node.attrs.get("kernel_shape") or (weight.shape[2:] if weight.shape is not None else []))
    if int(node.attrs.get("group", 1)) != int(data.shape[1]) or len(kernel) != spatial or not all(isinstance(k, (int, np.integer)) for k in kernel):
        return None
    strides = [int(s) for s in node.attrs.get("strides") or [1] * spatial]
    dilations = [int(d) for d in node.attrs.get("dilations") or [1] * spatial]
    return strides, [d if int(k) > 1 else 1 for d, k in zip(dilations, kernel)], [int(k) for k in kernel]


@register_pass
class UnstrideConv(Pass):
    """Move the strides of a strided, dilated depthwise Conv (1-D or 2-D), or its strides along
    size-1 kernel axes, into a Slice, after setting to 1 the dilations of size-1 kernel axes
    (see the module doc).

    Counters: ``convs_unstrided``, ``dilations_normalized``.
    """

    name = "unstride-conv"
    requires = (SHAPES,)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        unstrided = normalized = 0
        for node in list(model.graph.nodes):
            found = _depthwise_strides_and_dilations(node)
            if found is None:
                continue
            strides, dilations, kernel = found
            if "dilations" in node.attrs and [int(d) for d in node.attrs["dilations"]] != dilations:
                node.attrs["dilations"] = dilations
                normalized += 1
            if max(dilations) > 1:
                strided = [axis for axis, stride in enumerate(strides) if stride > 1]
            else:  # a stride over a size-1 kernel axis, with a longer kernel axis strided too
                strided = [axis for axis, (stride, k) in enumerate(zip(strides, kernel)) if stride > 1 and k == 1]
                strided = strided if any(stride > 1 for axis, stride in enumerate(strides) if axis not in strided) else []
            if not strided:
                continue
            output = node.outputs[0]
            dense = gs.Variable(model.fresh_name(f"{output.name}_stride1"), dtype=output.dtype)
            node.attrs["strides"] = [1 if axis in strided else stride for axis, stride in enumerate(strides)]
            node.outputs[0] = dense
            values = (("start", [0] * len(strided)), ("end", [np.iinfo(np.int64).max] * len(strided)),
                      ("axis", [2 + axis for axis in strided]), ("step", [strides[axis] for axis in strided]))
            constants = [gs.Constant(model.fresh_name(f"{node.name or 'conv'}_{part}"), np.array(value, dtype=np.int64)) for part, value in values]
            model.graph.nodes.append(gs.Node("Slice", model.fresh_name(f"{node.name or 'conv'}_stride"), inputs=[dense, *constants], outputs=[output]))
            unstrided += 1
        if unstrided:
            toposort(model.graph)
        return PassResult(changed=bool(unstrided or normalized), counters={"convs_unstrided": unstrided, "dilations_normalized": normalized})
