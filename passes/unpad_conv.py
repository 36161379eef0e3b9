"""``unpad-conv``: a Conv's padding along an axis its kernel does not span, as a strided Slice of
the input and constant bias columns around the output.

Matches a ``Conv`` (default domain, explicit ``pads``: ``auto_pad`` NOTSET) over a float input no
``DequantizeLinear`` writes and an output, both of static shapes, with a constant weight and bias (or none), and at least one spatial axis whose
kernel size is 1 and whose pads are not both 0. Along such an axis output position ``o`` reads
the single input position ``o * stride - pad_begin``: the positions that fall in the padding
read only zeros and come out as the bias, the others as a stride-1, unpadded Conv over the input
sliced at those positions. Produces::

    s = Slice(x, axes=<those axes>, starts, ends, steps=<their strides>)
    c = Conv(s, W, b)          # stride 1 and no pads along those axes, the rest as it was
    y = Concat(B_begin, c, B_end, axis=a)   # per such axis: columns holding the bias

where each block ``B`` has the shape of the output so far with axis ``a`` replaced by the number
of output positions that fall in that side's padding. Every output element is the same sum of
products as before (zeros left out), so the rewrite holds for every input up to float summation
order. A Conv with no output position inside the input along such an axis is left alone.

Why: on the HTP emulator of onnxruntime-qnn 2.7.0 (QNN 2.51, v73) a Conv with a ``[3, 1]``
kernel and the width padded computes wrong values, with no error: in fp16 at strides
``[1, 1]`` and ``[2, 2]`` (8x8 and 3x6 inputs), and quantized (a8w8 and a16w8) at strides
``[2, 2]`` over a ``[1, 4, 3, 6]`` input with one column of padding at the start. The Slice,
the unpadded Conv and the Concat are right in each case. Found by the float QNN property test.
The qnn-htp target runs this pass before quantization (its ``prepare`` list), so the quantizer
sees the rewritten graph (an explicit Pad would be fused back into the Conv).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, constant_value, is_default_domain, is_float_activation, toposort
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES

def unit_axes(node: gs.Node) -> list[tuple[int, int, int, int, int]] | None:
    """For a Conv this pass rewrites, per padded kernel-1 spatial axis: (axis, first and last
    output position inside the input, output length, input position of the first); else None."""
    if node.op != "Conv" or not is_default_domain(node) or len(node.inputs) < 2 or len(node.outputs) != 1:
        return None
    data, weight = node.inputs[0], node.inputs[1]
    if str(node.attrs.get("auto_pad", "NOTSET")) != "NOTSET":
        return None
    if not is_float_activation(data) or data.shape is None:
        return None
    if not all(isinstance(d, (int, np.integer)) for d in data.shape) or len(data.shape) < 3:
        return None
    result = node.outputs[0].shape
    if result is None or len(result) != len(data.shape) or not all(isinstance(d, (int, np.integer)) for d in result):
        return None
    weights = constant_value(weight)
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    if weights is None or (bias is not None and constant_value(bias) is None):
        return None
    spatial = [int(d) for d in data.shape[2:]]
    kernel = list(np.shape(weights)[2:])
    strides = [int(s) for s in node.attrs.get("strides") or [1] * len(spatial)]
    pads = [int(p) for p in node.attrs.get("pads") or [0] * 2 * len(spatial)]
    found = []
    for axis, (length, size, stride) in enumerate(zip(spatial, kernel, strides)):
        begin, end = pads[axis], pads[axis + len(spatial)]
        if size != 1 or not (begin or end):
            continue
        outputs = (length + begin + end - 1) // stride + 1
        inside = [o for o in range(outputs) if 0 <= o * stride - begin < length]
        if not inside:
            return None
        found.append((axis, inside[0], inside[-1], outputs, inside[0] * stride - begin))
    return found or None


@register_pass
class UnpadConv(Pass):
    """Replace a Conv's padding along kernel-1 axes by a strided Slice and bias columns (see the
    module doc).

    Counters: ``convs_unpadded``.
    """

    name = "unpad-conv"
    requires = (SHAPES,)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rewritten = 0
        for node in list(model.graph.nodes) if model.opset >= 10 else ():  # Slice takes steps from opset 10
            axes = unit_axes(node)
            if axes is None:
                continue
            self._rewrite(model, node, axes)
            rewritten += 1
        if rewritten:
            toposort(model.graph)
        return PassResult(changed=bool(rewritten), counters={"convs_unpadded": rewritten})

    @staticmethod
    def _rewrite(model: Model, node: gs.Node, axes: list[tuple[int, int, int, int, int]]) -> None:
        data, output = node.inputs[0], node.outputs[0]
        dtype = np.dtype(data.dtype)
        base = node.name or "conv"
        rank = len(data.shape) - 2
        strides = [int(s) for s in node.attrs.get("strides") or [1] * rank]
        pads = [int(p) for p in node.attrs.get("pads") or [0] * 2 * rank]
        weights = constant_value(node.inputs[1])
        bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        bias_values = np.asarray(constant_value(bias), dtype=dtype) if bias is not None else np.zeros(np.shape(weights)[0], dtype=dtype)

        sliced_shape = list(data.shape)
        values = ([], [], [], [])
        for axis, first, last, _, start in axes:
            values[0].append(start)
            values[1].append(start + (last - first) * strides[axis] + 1)
            values[2].append(2 + axis)
            values[3].append(strides[axis])
            sliced_shape[2 + axis] = last - first + 1
            pads[axis] = pads[axis + rank] = 0
            strides[axis] = 1
        constants = [gs.Constant(model.fresh_name(f"{base}_{part}"), np.array(value, dtype=np.int64))
                     for part, value in zip(("start", "end", "axis", "step"), values)]
        sliced = gs.Variable(model.fresh_name(f"{data.name}_inside"), dtype=data.dtype, shape=sliced_shape)
        model.graph.nodes.append(gs.Node("Slice", model.fresh_name(f"{base}_inside"), inputs=[data, *constants], outputs=[sliced]))
        node.inputs[0] = sliced
        node.attrs["strides"], node.attrs["pads"] = strides, pads

        current_shape = [int(d) for d in output.shape]
        for axis, first, last, _, _ in axes:
            current_shape[2 + axis] = last - first + 1
        current = gs.Variable(model.fresh_name(f"{output.name}_inside"), dtype=output.dtype, shape=current_shape.copy())
        node.outputs[0] = current
        for index, (axis, first, last, outputs, _) in enumerate(axes):
            parts: list[gs.Tensor] = [current]
            for side, width in (("begin", first), ("end", outputs - 1 - last)):
                if width:
                    block = current_shape.copy()
                    block[2 + axis] = width
                    filled = np.broadcast_to(bias_values.reshape(1, -1, *[1] * rank), block).astype(dtype)
                    parts.insert(0 if side == "begin" else len(parts), gs.Constant(model.fresh_name(f"{base}_bias_{side}{axis}"), filled))
            current_shape[2 + axis] = outputs
            last_axis = index == len(axes) - 1
            result = output if last_axis else gs.Variable(model.fresh_name(f"{output.name}_axis{axis}"), dtype=output.dtype, shape=current_shape.copy())
            model.graph.nodes.append(gs.Node("Concat", model.fresh_name(f"{base}_bias{axis}"), inputs=parts, outputs=[result], attrs={"axis": 2 + axis}))
            current = result
