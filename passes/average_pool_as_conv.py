"""``average-pool-as-conv``: a padded float AveragePool as a depthwise Conv of constant weights
and, when the padding is not counted, a product with a constant window-count correction.

Matches an ``AveragePool`` (default domain) whose input is a float tensor not produced by a
``DequantizeLinear`` (a quantized pool is left alone), with a static channel count and static
spatial dimensions, ``ceil_mode`` 0 and padding: explicit ``pads`` not all 0, or ``auto_pad``
``SAME_UPPER`` / ``SAME_LOWER`` (turned into the explicit pads ONNX defines for them; left alone
when those are negative, a crop). Produces::

    y = Conv(x, W, pads, strides, dilations, group=C)   # W = 1 / K, shape [C, 1, *kernel]
    y = y * K / count                                    # only when count_include_pad is 0

where ``K`` is the kernel's size and ``count[o]`` the number of a window's positions inside the
unpadded input (a constant ``[1, 1, *output spatial]`` tensor, one factor per spatial axis).
The Conv pads with zeros as the pool does, so it is the pool with the padding counted; with it
not counted, the window's sum over ``K`` times ``K / count`` is its sum over ``count``. The
rewrite holds for every input, up to float rounding.

Why: on the HTP emulator of onnxruntime-qnn 2.7.0 (QNN 2.51, v73, fp16 mode) a float
``PoolAvg2d`` with padding computes wrong values for some shapes, with no error: 91-99% of the
outputs off by up to 2 (inputs of unit scale) with the padding not counted over fewer than 32
channels (28x28, 56x56), and with it counted over one channel; Inception-v1's final 7x7 pool
over a 6x6 input padded at the end makes the EP abort at run time. A float Pad in front of an
unpadded pool is no cure: QNN's fp16 Pad leaves stale values in the padded column of such a
shape. The depthwise Conv is right in every case tried, and unpadded pools and quantized pools
are right too. The qnn-htp target runs this pass after quantization (its ``finish`` list), so it
meets only the pools that stay in float.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, is_default_domain, is_float_activation, toposort
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES
from mapc.passes.windows import explicit_pads, window_counts

def padded_pool_geometry(node: gs.Node) -> tuple[list[int], list[int], list[int], list[int], list[int]] | None:
    """A padded float AveragePool's (kernel, strides, dilations, pads begin, pads end), or None if
    ``node`` is not one this pass rewrites."""
    if node.op != "AveragePool" or not is_default_domain(node) or not node.outputs or not is_float_activation(node.inputs[0]):
        return None
    shape = node.inputs[0].shape
    if shape is None or len(shape) < 3 or not all(isinstance(d, (int, np.integer)) for d in shape[1:]):
        return None
    if int(node.attrs.get("ceil_mode", 0)) != 0:
        return None
    spatial = [int(d) for d in shape[2:]]
    kernel = [int(k) for k in node.attrs.get("kernel_shape", [])]
    if len(kernel) != len(spatial):
        return None
    strides = [int(s) for s in node.attrs.get("strides") or [1] * len(spatial)]
    dilations = [int(d) for d in node.attrs.get("dilations") or [1] * len(spatial)]
    pads = explicit_pads(node.attrs, spatial, kernel, strides, dilations)
    if pads is None:
        return None
    begin, end = pads
    if min(begin + end) < 0 or not any(begin + end):
        return None  # a SAME crop, or no padding
    return kernel, strides, dilations, begin, end


@register_pass
class AveragePoolAsConv(Pass):
    """Compute a padded float AveragePool as a depthwise Conv of weights ``1 / K``, with a
    constant count correction when the padding is not counted (see the module doc).

    Counters: ``pools_as_conv``.
    """

    name = "average-pool-as-conv"
    requires = (SHAPES,)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rewritten = 0
        for node in list(model.graph.nodes):
            geometry = padded_pool_geometry(node)
            if geometry is None:
                continue
            self._rewrite(model, node, *geometry)
            rewritten += 1
        if rewritten:
            toposort(model.graph)
        return PassResult(changed=bool(rewritten), counters={"pools_as_conv": rewritten})

    @staticmethod
    def _rewrite(model: Model, node: gs.Node, kernel, strides, dilations, begin, end) -> None:
        data, output = node.inputs[0], node.outputs[0]
        dtype = np.dtype(data.dtype)
        channels, spatial = int(data.shape[1]), [int(d) for d in data.shape[2:]]
        size = int(np.prod(kernel))
        base = node.name or "average_pool"
        weights = gs.Constant(model.fresh_name(f"{base}_window"), np.full((channels, 1, *kernel), 1 / size, dtype=dtype))
        node.op, node.domain = "Conv", ""
        uncounted = int(node.attrs.get("count_include_pad", 0)) == 0
        node.attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dilations, "pads": begin + end, "group": channels}
        node.inputs.append(weights)
        count = np.ones((), dtype=np.int64)
        for axis in zip(spatial, kernel, strides, dilations, begin, end):
            count = np.multiply.outer(count, window_counts(*axis))
        if not uncounted or np.all(count == size):
            return
        correction = gs.Constant(model.fresh_name(f"{base}_count_correction"), (size / count).astype(dtype)[None, None])
        summed = gs.Variable(model.fresh_name(f"{output.name}_window_mean"), dtype=output.dtype, shape=output.shape)
        node.outputs[0] = summed
        model.graph.nodes.append(gs.Node("Mul", model.fresh_name(f"{base}_count"), inputs=[summed, correction], outputs=[output]))
