"""``pad-before-conv``: a Conv's padding along axes where its kernel has size 1, as a Pad before it.

Matches a ``Conv`` (default domain, explicit padding: ``auto_pad`` NOTSET, no negative pads) with
a known kernel and at least one spatial axis whose kernel size is 1 and whose pads are not both
0. Produces::

    p = Pad(x, pads=<those axes' pads, 0 elsewhere>)   # constant 0
    y = Conv(p, W, B)                                 # pads 0 along those axes, the rest as it was

A Conv pads with zeros, so reading a zero-padded input without padding is the same sum over
the same products (exact, for every input; a quantized Pad writes the zero point, which is
exactly 0).

Why: on the HTP emulator of onnxruntime-qnn 2.7.0 (QNN 2.51, v73), a Conv padded along an axis
its kernel spans with size 1 computes wrong values, with no error: a ``[3, 1]`` kernel with the
width padded is off by up to 3.9 in fp16 (unit-scale inputs, strides 1 and 2), and quantized
(a8w8 and a16w8) at strides ``[2, 2]`` its error is the size of its output. With the padding in
a Pad, each case tried matches onnxruntime (to fp16 precision, or within a quantization step).
Found by the float QNN property test. The qnn-htp target runs this pass before quantization
(its ``prepare`` list); ``pad-as-concat`` later rewrites the one float Pad shape HTP gets wrong.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, is_default_domain, static_shape, toposort
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES


def pads_to_move(node: gs.Node) -> tuple[list[int], list[int]] | None:
    """(begins, ends) per spatial axis of the padding a Pad takes over from ``node`` (0 where
    the Conv keeps its own), or None if ``node`` is not a Conv this pass rewrites."""
    if node.op != "Conv" or not is_default_domain(node) or str(node.attrs.get("auto_pad", "NOTSET")) != "NOTSET" or len(node.inputs) < 2:
        return None
    weight = static_shape(node.inputs[1])
    kernel = [int(k) for k in node.attrs.get("kernel_shape") or (weight[2:] if weight else [])]
    if not kernel:
        return None
    pads = [int(p) for p in node.attrs.get("pads") or [0] * 2 * len(kernel)]
    if len(pads) != 2 * len(kernel) or min(pads) < 0:
        return None
    moved = [axis for axis, k in enumerate(kernel) if k == 1 and (pads[axis] or pads[axis + len(kernel)])]
    if not moved:
        return None
    begins = [pads[axis] if axis in moved else 0 for axis in range(len(kernel))]
    ends = [pads[axis + len(kernel)] if axis in moved else 0 for axis in range(len(kernel))]
    return begins, ends


@register_pass
class PadBeforeConv(Pass):
    """Move a Conv's padding along kernel axes of size 1 into a Pad before it (see the module doc).

    Counters: ``convs_padded_before``.
    """

    name = "pad-before-conv"
    requires = (SHAPES,)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rewritten = 0
        for node in list(model.graph.nodes) if model.opset >= 11 else ():  # Pad takes pads as an input from opset 11
            moved = pads_to_move(node)
            if moved is None:
                continue
            begins, ends = moved
            data = node.inputs[0]
            shape = None
            if data.shape is not None and len(data.shape) == 2 + len(begins):
                shape = list(data.shape[:2]) + [
                    int(length) + b + e if isinstance(length, (int, np.integer)) else None
                    for length, b, e in zip(data.shape[2:], begins, ends)
                ]
            base = node.name or "conv"
            pads = gs.Constant(model.fresh_name(f"{base}_input_pads"), np.array([0, 0, *begins, 0, 0, *ends], dtype=np.int64))
            padded = gs.Variable(model.fresh_name(f"{data.name}_padded"), dtype=data.dtype, shape=shape)
            model.graph.nodes.append(gs.Node("Pad", model.fresh_name(f"{base}_pad"), inputs=[data, pads], outputs=[padded]))
            node.inputs[0] = padded
            kept = [int(p) for p in node.attrs["pads"]]
            count = len(begins)
            node.attrs["pads"] = [p - (begins[i % count] if i < count else ends[i % count]) for i, p in enumerate(kept)]
            rewritten += 1
        if rewritten:
            toposort(model.graph)
        return PassResult(changed=bool(rewritten), counters={"convs_padded_before": rewritten})
