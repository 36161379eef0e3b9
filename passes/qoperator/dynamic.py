"""onnxruntime's fused dynamic-quantization MatMuls (what its graph optimizer makes of
``quantize_dynamic``'s chains) -> DequantizeLinear and a float MatMul.

* ``com.microsoft.MatMulIntegerToFloat(A, B, a_scale, b_scale[, a_zero][, b_zero][, bias])`` ->
  ``MatMul(DQ(A, a_scale, a_zero), DQ(B, b_scale, b_zero)) [+ bias]``; B per tensor or per column;
* ``com.microsoft.DynamicQuantizeMatMul(A, B, b_scale[, b_zero][, bias])``, which quantizes the
  float A at run time as ``DynamicQuantizeLinear`` does -> ``DynamicQuantizeLinear(A)``, its
  ``DQ``, ``MatMul`` with ``DQ(B)`` ``[+ bias]``.

Float results differ from the kernels' only by float32 rounding (the kernels sum exact integers
and scale once). With ``dynamic_activations="float"`` the activation's run-time quantization is
dropped, as for the unfused chain (:mod:`.integer`): ``MatMul(A, DQ(B)) [+ bias]``, weight-only.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import NearMiss, optional_input, rule
from mapc.passes.qoperator.context import ORT_DOMAIN, QdqContext, QParams, domain_is, dynamic_source, eight_bit, shape_of


def _matmul_into(ctx: QdqContext, node: gs.Node, first: gs.Tensor, weight: gs.Tensor, bias: gs.Tensor | None) -> None:
    """``node`` becomes the float ``MatMul(first, weight)`` (then ``+ bias``), keeping its output."""
    if bias is None:
        ctx.become(node, "MatMul", [first, weight])
        return
    ctx.become(node, "Add", [ctx.float_op("MatMul", [first, weight], None, node), bias])


def _weight(ctx: QdqContext, node: gs.Node, scale_slot: int, zero_slot: int) -> gs.Tensor:
    """``DQ(B)``, per tensor or per column (B's last axis)."""
    b_type = eight_bit(node.inputs[1], "input B", optional_input(node, zero_slot))
    shape = shape_of(node.inputs[1])
    if not shape:
        raise NearMiss("shape", "input B's rank is unknown", "run shape inference (fix-shapes)")
    params = ctx.aligned(node.inputs[scale_slot], optional_input(node, zero_slot), b_type, len(shape) - 1, shape[-1], "input B")
    ctx.require_finite(ctx.magnitude(params, b_type), "dequantized weight values")
    return ctx.dequantize(node.inputs[1], params, "b_dequantized")


@rule("MatMulIntegerToFloat", plain=False)
def matmul_integer_to_float(ctx: QdqContext, node: gs.Node) -> bool:
    """com.microsoft MatMulIntegerToFloat -> MatMul(DQ(A), DQ(B)) [+ bias]."""
    if not domain_is(node, ORT_DOMAIN):
        return False
    a_type = eight_bit(node.inputs[0], "input A", optional_input(node, 4))
    a_scale, a_zero = node.inputs[2], optional_input(node, 4)
    a = ctx.aligned(a_scale, a_zero, a_type, 0, None, "input A")
    if a.axis is not None:
        raise NearMiss("parameters", "input A's scale or zero point has several values; only per-tensor is rewritten")
    weight = _weight(ctx, node, 3, 5)
    source = dynamic_source(node.inputs[0], a_scale, a_zero) if ctx.float_dynamic else None
    first = source if source is not None else ctx.dequantize(node.inputs[0], a, "a_dequantized")
    _matmul_into(ctx, node, first, weight, optional_input(node, 6))
    return True


@rule("DynamicQuantizeMatMul", plain=False)
def dynamic_quantize_matmul(ctx: QdqContext, node: gs.Node) -> bool:
    """com.microsoft DynamicQuantizeMatMul -> DynamicQuantizeLinear(A) -> DQ -> MatMul with DQ(B) [+ bias]."""
    if not domain_is(node, ORT_DOMAIN):
        return False
    data = node.inputs[0]
    if data.dtype is None or np.dtype(data.dtype) != np.float32:
        raise NearMiss("dtype", f"input A is {data.dtype or 'of unknown type'}, DynamicQuantizeLinear takes float32")
    weight = _weight(ctx, node, 2, 3)
    first = data
    if not ctx.float_dynamic:
        codes, scale, zero = ctx.node("DynamicQuantizeLinear", [data], outputs=3, name="a_quantized")
        first = ctx.dequantize(codes, QParams(scale, zero), "a_dequantized")  # a scalar scale and uint8 zero point
    _matmul_into(ctx, node, first, weight, optional_input(node, 4))
    return True


DYNAMIC_RULES = [matmul_integer_to_float, dynamic_quantize_matmul]
