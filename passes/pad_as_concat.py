"""``pad-as-concat``: a float constant-mode Pad as Concats with constant blocks of its pad value.

Matches a ``Pad`` (default domain, opset 11 or later: pads as an input) in ``constant`` mode whose
data is a float tensor of static shape not produced by a ``DequantizeLinear`` (a quantized Pad
is left alone), with constant, non-negative ``pads`` (a crop is left alone), an optional constant
pad value and, from opset 18, optional constant ``axes``, that pads the last two axes at their
ends and not at their starts (the shape QNN gets wrong; other Pads are left as they are, since
QNN computes them right). Produces, for each padded axis in turn::

    y = Concat(C_begin, y, C_end, axis=a)    # C: the pad value, as wide as that axis's pads

where each block has the shape of the tensor so far with axis ``a`` replaced by its pad, so the
result is the padded tensor element for element, for every input.

Why: on the HTP emulator of onnxruntime-qnn 2.7.0 (QNN 2.51, v73, fp16 mode) a float Pad that
pads the last two axes at their ends only (``[1, C, 6, 6]`` with pads ``[0, 0, 0, 0, 0, 0, 1,
1]``, at 8, 32 and 1024 channels) leaves stale values in the padded column (11-12% of the outputs
wrong, with no error); padding both ends, or one of the two axes, is right, and so is every
quantized Pad tried. Concat is right in every case. The qnn-htp target runs this pass after
quantization (its ``finish`` list), so it meets only the Pads that stay in float.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, constant_value, is_default_domain, is_float_activation, remove_nodes, toposort
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES

def constant_pad(node: gs.Node) -> tuple[list[int], list[int], float] | None:
    """A float constant-mode Pad's (pads begin, pads end) per axis of its data and pad value, or
    None if ``node`` is not one this pass rewrites."""
    if node.op != "Pad" or not is_default_domain(node) or len(node.inputs) < 2 or not node.outputs:
        return None
    data = node.inputs[0]
    if str(node.attrs.get("mode", "constant")) != "constant" or not is_float_activation(data):
        return None
    if data.shape is None or not all(isinstance(d, (int, np.integer)) for d in data.shape):
        return None
    rank = len(data.shape)
    pads = constant_value(node.inputs[1])
    value = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else np.zeros(())
    axes = constant_value(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3].name else np.arange(rank)
    if pads is None or value is None or axes is None or np.size(value) != 1:
        return None
    axes = [int(a) % rank for a in np.ravel(axes)] if rank else []
    pads = [int(p) for p in np.ravel(pads)]
    if len(pads) != 2 * len(axes) or min(pads, default=0) < 0 or not any(pads):
        return None
    begin, end = [0] * rank, [0] * rank
    for index, axis in enumerate(axes):
        begin[axis], end[axis] = pads[index], pads[index + len(axes)]
    if rank < 2 or any(begin[-2:]) or not all(end[-2:]):
        return None  # only the shape QNN gets wrong: the last two axes padded at their ends only
    return begin, end, float(np.ravel(value)[0])


@register_pass
class PadAsConcat(Pass):
    """Build a float constant-mode Pad from Concats with constant blocks (see the module doc).

    Counters: ``pads_as_concat``.
    """

    name = "pad-as-concat"
    requires = (SHAPES,)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rewritten: list[gs.Node] = []
        for node in list(model.graph.nodes) if model.opset >= 11 else ():  # pads as an input from opset 11
            found = constant_pad(node)
            if found is None:
                continue
            self._rewrite(model, node, *found)
            rewritten.append(node)
        if rewritten:
            remove_nodes(model.graph, rewritten)
            toposort(model.graph)
        return PassResult(changed=bool(rewritten), counters={"pads_as_concat": len(rewritten)})

    @staticmethod
    def _rewrite(model: Model, node: gs.Node, begin: list[int], end: list[int], value: float) -> None:
        """Add the Concats that write ``node``'s output; the caller removes ``node``."""
        data, output = node.inputs[0], node.outputs[0]
        dtype = np.dtype(data.dtype)
        base = node.name or "pad"
        shape = [int(d) for d in data.shape]
        padded = [axis for axis in range(len(shape)) if begin[axis] or end[axis]]
        current: gs.Tensor = data
        for position, axis in enumerate(padded):
            parts: list[gs.Tensor] = []
            for side, width in (("begin", begin[axis]), ("end", end[axis])):
                if width:
                    block = shape.copy()
                    block[axis] = width
                    parts.append(gs.Constant(model.fresh_name(f"{base}_{side}{axis}"), np.full(block, value, dtype=dtype)))
            parts.insert(1 if begin[axis] else 0, current)
            shape[axis] += begin[axis] + end[axis]
            last = position == len(padded) - 1
            result = output if last else gs.Variable(model.fresh_name(f"{output.name}_axis{axis}"), dtype=data.dtype, shape=shape.copy())
            model.graph.nodes.append(gs.Node("Concat", model.fresh_name(f"{base}_axis{axis}"), inputs=parts, outputs=[result], attrs={"axis": axis}))
            current = result
