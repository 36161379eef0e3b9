"""``unstride-pool``: a float MaxPool's stride over a kernel axis of size 1 as a strided Slice.

Matches a ``MaxPool`` (default domain, one output: no indices) whose input is a float tensor not
produced by a ``DequantizeLinear`` (a quantized pool is left alone), with ``ceil_mode`` 0,
explicit padding (``auto_pad`` NOTSET or VALID) and at least one spatial axis whose kernel size
is 1, stride above 1 and pads 0. Produces::

    s = Slice(x, axes=<those axes>, steps=<their strides>)
    y = MaxPool(s)             # stride 1 along those axes, the rest as it was

A window of size 1 along an axis reads one position, ``i * stride``, and the strided Slice keeps
exactly those positions (``ceil(L / s) = floor((L - 1) / s) + 1`` of them, the pool's output
length with no padding), so the rewrite holds for every input.

Why: on the HTP emulator of onnxruntime-qnn 2.7.0 (QNN 2.51, v73, fp16 mode) a float MaxPool
with a kernel of 1 and a stride of 2 along the width and a stride above 1 along the height
(kernels ``[2, 1]`` and ``[3, 1]`` at strides ``[2, 2]``, on 5x5 to 16x16 inputs of 4 to 32
channels) builds and then aborts the process when it runs; a stride of 1 along the height, the
kernel ``[1, 2]``, and every quantized MaxPool tried run. Found by the float QNN property test.
The qnn-htp target runs this pass after quantization (its ``finish`` list), so it meets only
the pools that stay in float.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, is_default_domain, is_float_activation, toposort
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES

def strides_to_slice(node: gs.Node) -> list[int] | None:
    """The spatial axes (0 = the first spatial axis) of a float MaxPool whose stride moves into
    a Slice, or None if ``node`` is not one this pass rewrites."""
    if node.op != "MaxPool" or not is_default_domain(node) or len(node.outputs) != 1:
        return None
    if not is_float_activation(node.inputs[0]):
        return None
    if str(node.attrs.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID") or int(node.attrs.get("ceil_mode", 0)):
        return None
    kernel = [int(k) for k in node.attrs.get("kernel_shape", [])]
    strides = [int(s) for s in node.attrs.get("strides") or [1] * len(kernel)]
    pads = [int(p) for p in node.attrs.get("pads") or [0] * 2 * len(kernel)]
    axes = [axis for axis, (k, s) in enumerate(zip(kernel, strides)) if k == 1 and s > 1 and pads[axis] == pads[axis + len(kernel)] == 0]
    return axes or None


@register_pass
class UnstridePool(Pass):
    """Move a float MaxPool's strides over kernel axes of size 1 into a Slice (see the module doc).

    Counters: ``pools_unstrided``.
    """

    name = "unstride-pool"
    requires = (SHAPES,)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rewritten = 0
        for node in list(model.graph.nodes) if model.opset >= 10 else ():  # Slice takes steps from opset 10
            axes = strides_to_slice(node)
            if axes is None:
                continue
            strides = [int(s) for s in node.attrs["strides"]]
            data = node.inputs[0]
            base = node.name or "max_pool"
            values = (("start", [0] * len(axes)), ("end", [np.iinfo(np.int64).max] * len(axes)),
                      ("axis", [2 + axis for axis in axes]), ("step", [strides[axis] for axis in axes]))
            constants = [gs.Constant(model.fresh_name(f"{base}_{part}"), np.array(value, dtype=np.int64)) for part, value in values]
            shape = None
            if data.shape is not None:
                shape = list(data.shape)
                for axis in axes:
                    length = shape[2 + axis]
                    shape[2 + axis] = -(-int(length) // strides[axis]) if isinstance(length, (int, np.integer)) else None
            sliced = gs.Variable(model.fresh_name(f"{data.name}_strided"), dtype=data.dtype, shape=shape)
            model.graph.nodes.append(gs.Node("Slice", model.fresh_name(f"{base}_stride"), inputs=[data, *constants], outputs=[sliced]))
            node.inputs[0] = sliced
            node.attrs["strides"] = [1 if axis in axes else stride for axis, stride in enumerate(strides)]
            rewritten += 1
        if rewritten:
            toposort(model.graph)
        return PassResult(changed=bool(rewritten), counters={"pools_unstrided": rewritten})
