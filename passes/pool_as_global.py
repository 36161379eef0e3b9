"""``pool-as-global``: a pool whose one window covers its whole input, as the global pool.

Matches an ``AveragePool`` or ``MaxPool`` (default domain, one output: no indices) with a static
input shape whose output has length 1 along every spatial axis, and whose window reads every
input position along every axis, inside its padding (explicit, ``VALID`` or ``SAME_*``
padding, dilations; a ``ceil_mode`` window that overhangs the padding is left alone). An
AveragePool must also divide by what it reads: ``count_include_pad`` 0, or no tap of the
window in the padding. Produces ``GlobalAveragePool(x)`` or ``GlobalMaxPool(x)``,
which compute the same mean or maximum over the same elements (the mean summed in the global
kernel's order: equal up to float rounding).

Why: on the HTP emulator of onnxruntime-qnn 2.7.0 (QNN 2.51, v73) Inception-v1's last pool, a
7x7 AveragePool over a 6x6 input padded at the end, is 26.6 dB from the CPU QDQ model in a16w8
(52 dB at the logits, where the CPU estimate is 83 dB); the same mean as a quantized
GlobalAveragePool matches it to 96 dB. In fp16 that pool aborts the EP. The qnn-htp target runs
this pass before quantization (its ``prepare`` list), so the quantizer sees the global pool.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, is_default_domain, static_shape
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES
from mapc.passes.windows import explicit_pads

GLOBAL_POOLS = {"AveragePool": "GlobalAveragePool", "MaxPool": "GlobalMaxPool"}


def covers_whole_input(node: gs.Node) -> bool:
    """True if ``node`` is a pool this pass rewrites: one window, reading every input position
    (and, for an AveragePool, counting only those)."""
    if node.op not in GLOBAL_POOLS or not is_default_domain(node) or len(node.outputs) != 1:
        return False
    shape, out = static_shape(node.inputs[0]), static_shape(node.outputs[0])
    if shape is None or out is None or len(shape) < 3 or len(out) != len(shape) or any(length != 1 for length in out[2:]):
        return False
    lengths = shape[2:]
    kernel = [int(k) for k in node.attrs.get("kernel_shape", [])]
    if len(kernel) != len(lengths):
        return False
    strides = [int(s) for s in node.attrs.get("strides") or [1] * len(kernel)]
    dilations = [int(d) for d in node.attrs.get("dilations") or [1] * len(kernel)]
    pads = explicit_pads(node.attrs, list(lengths), kernel, strides, dilations)
    if pads is None:
        return False
    counts_padding = node.op == "AveragePool" and int(node.attrs.get("count_include_pad", 0))
    for length, k, d, begin, end in zip(lengths, kernel, dilations, *pads):
        positions = np.arange(k) * d - begin  # the first window's, along this axis
        inside = positions[(positions >= 0) & (positions < length)]
        if positions[-1] > length - 1 + end:  # overhangs the padding (ceil_mode): left alone
            return False
        if inside.tolist() != list(range(length)) or (counts_padding and inside.size != k):
            return False
    return True


@register_pass
class PoolAsGlobal(Pass):
    """Turn an AveragePool/MaxPool with one window over its whole input into the global pool (see the module doc).

    Counters: ``pools_made_global``.
    """

    name = "pool-as-global"
    requires = (SHAPES,)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rewritten = 0
        for node in model.graph.nodes:
            if covers_whole_input(node):
                node.op = GLOBAL_POOLS[node.op]
                node.attrs.clear()
                rewritten += 1
        return PassResult(changed=bool(rewritten), counters={"pools_made_global": rewritten})
