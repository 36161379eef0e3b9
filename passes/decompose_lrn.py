"""``decompose-lrn``: LocalResponseNormalization as a square, a 1x1 Conv, a power and a product.

Matches an ``LRN`` (default domain) over ``[N, C, D1, ...]`` with a static channel count ``C`` (at
most :data:`MAX_CHANNELS`). Produces, for ``size``, ``alpha``, ``beta`` and ``bias``::

    y = x * (bias + Conv(x * x, W)) ** -beta

where ``W[o, i] = alpha / size`` when channel ``i`` lies in the window of ``o``
(``o - floor((size - 1) / 2) <= i <= o + ceil((size - 1) / 2)``) and 0 elsewhere, with 1x1
kernels. That is ONNX's definition of LRN term by term (the sum of squares over the channel
window, scaled by ``alpha / size``), so the rewrite holds for every input; the window is clipped
at the channel edges exactly as LRN clips it, since ``W`` has no entry outside ``[0, C)``.

Why: Qualcomm HTP's Lrn takes only 8-bit activations (``backendValidateOpConfig`` error 3110 for
16-bit, at every size), and the refusal comes after onnxruntime's NHWC layout transform, so the
whole session fails (Inception-v1, AlexNet and ZFNet in a16w8). Mul, Conv, Add and Pow run at
16 bits; the qnn-htp target runs this pass before quantization (its ``prepare`` list). At 8 bits
the native LRN is the better choice (the squares need more than 8 bits), so the pass acts only
when the graph's activations will have a precision listed in ``at`` (default: int16);
``activations`` follows the quantize step of the compile (a binding, as the mask precision does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, is_default_domain, remove_nodes, toposort
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES

#: Above this many channels the C x C window matrix (C^2 weights) costs more than it is worth.
MAX_CHANNELS = 2048


def window_weights(channels: int, size: int, alpha: float, dtype: np.dtype) -> np.ndarray:
    """The ``[C, C]`` matrix summing each output channel's LRN window of input channels, times alpha/size."""
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    out, into = np.meshgrid(np.arange(channels), np.arange(channels), indexing="ij")
    inside = (into >= out - before) & (into <= out + after)
    return np.where(inside, alpha / size, 0.0).astype(dtype)


@register_pass
class DecomposeLRN(Pass):
    """LRN as ``x * (bias + Conv(x*x, W)) ** -beta`` (see the module doc); exact for every input.

    Acts when ``activations`` (the later quantization's precision, float without one) is one of ``at``.

    Counters: ``lrns_decomposed``. An LRN whose channel count is unknown or above
    :data:`MAX_CHANNELS` stays, with a ``decompose-lrn.kept`` note.
    """

    name = "decompose-lrn"
    requires = (SHAPES,)

    @dataclass
    class Options:
        #: The activation precision the graph is quantized to later: float, int8 or int16 (set
        #: from the compile's quantize step).
        activations: str = "float"
        #: Decompose only at these activation precisions.
        at: list[str] = field(default_factory=lambda: ["int16"])

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        if self.options.activations not in self.options.at:
            return PassResult(changed=False, counters={"lrns_decomposed": 0})
        replaced, notes = [], []
        for node in list(model.graph.nodes):
            if node.op != "LRN" or not is_default_domain(node):
                continue
            refusal = _decompose(model, node)
            if refusal is None:
                replaced.append(node)
            else:
                notes.append(Note("decompose-lrn.kept", f"LRN {node.name!r} stays: {refusal}", node=node.name))
        if replaced:
            remove_nodes(model.graph, replaced)
            toposort(model.graph)
        return PassResult(changed=bool(replaced), notes=notes, counters={"lrns_decomposed": len(replaced)})


def _decompose(model: Model, node: gs.Node) -> str | None:
    """Write the decomposition of ``node`` (which the caller removes); the reason it cannot be, else None."""
    data, output = node.inputs[0], node.outputs[0]
    shape = data.shape
    if shape is None or len(shape) < 3 or not isinstance(shape[1], (int, np.integer)):
        return "its channel count is not static"
    channels = int(shape[1])
    if channels > MAX_CHANNELS:
        return f"{channels} channels (a window matrix is built up to {MAX_CHANNELS})"
    if data.dtype is None or np.dtype(data.dtype).kind != "f":
        return "its input is not a float tensor"
    dtype = np.dtype(data.dtype)
    size = int(node.attrs["size"])
    alpha, beta, bias = (float(node.attrs.get(key, default)) for key, default in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    base = node.name or "lrn"
    weights = window_weights(channels, size, alpha, dtype).reshape(channels, channels, *([1] * (len(shape) - 2)))

    def tensor(suffix: str) -> gs.Variable:
        return gs.Variable(model.fresh_name(f"{base}_{suffix}"), dtype=dtype, shape=list(shape))

    def constant(suffix: str, value) -> gs.Constant:
        return gs.Constant(model.fresh_name(f"{base}_{suffix}"), np.asarray(value, dtype=dtype))

    squared, window, denominator, scaled = tensor("squared"), tensor("window"), tensor("denominator"), tensor("scale")
    model.graph.nodes.extend([
        gs.Node("Mul", model.fresh_name(f"{base}_square"), inputs=[data, data], outputs=[squared]),
        gs.Node("Conv", model.fresh_name(f"{base}_window_sum"), inputs=[squared, constant("window_weights", weights)],
                outputs=[window], attrs={"kernel_shape": [1] * (len(shape) - 2)}),
        gs.Node("Add", model.fresh_name(f"{base}_bias"), inputs=[window, constant("bias", bias)], outputs=[denominator]),
        gs.Node("Pow", model.fresh_name(f"{base}_power"), inputs=[denominator, constant("minus_beta", -beta)], outputs=[scaled]),
        gs.Node("Mul", model.fresh_name(f"{base}_normalize"), inputs=[data, scaled], outputs=[output]),
    ])
    return None
