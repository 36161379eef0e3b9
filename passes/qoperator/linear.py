"""Quantized linear ops with a requantized 8-bit output -> DequantizeLinear, float op, QuantizeLinear.

* ``QLinearConv(x, xs, xz, w, ws, wz, ys, yz[, B])`` -> ``Conv(DQ(x), DQ(w; axis 0)[, DQ(B)])``
  then ``Q(ys, yz)``; the int32 bias dequantizes with scale ``xs·ws`` (one value per output
  channel when the weight is per channel) and zero point 0, as its definition says;
* ``QLinearMatMul(a, as, az, b, bs, bz, ys, yz)`` -> ``MatMul(DQ(a), DQ(b))`` then ``Q``; ``b`` may
  be per column (its last axis);
* ``com.microsoft.QGemm(A, as, az, B, bs, bz[, C][, ys, yz])`` -> ``Gemm(DQ(A), DQ(B)[, DQ(C)])``
  with its ``transA``/``transB``/``alpha``, then ``Q`` when it has an output scale (else the float
  Gemm is the output); ``B`` may be per column, ``C`` is int32 with scale ``alpha·as·bs``.

The integer kernels accumulate exactly in int32 and round once when requantizing; the QDQ form
accumulates in float32 and rounds in ``QuantizeLinear``: an output code differs only where the
exact result lies within float rounding of a half step, and then by one.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import NearMiss, constant_value, optional_input, rule
from mapc.passes.qoperator.context import ORT_DOMAIN, QdqContext, QParams, domain_is, eight_bit, product, shape_of

CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


def _bias(ctx: QdqContext, node: gs.Node, slot: int, x: QParams, w: QParams, factor: float = 1.0) -> gs.Tensor | None:
    """``DQ(bias)`` with scale ``factor·x_scale·w_scale`` (per channel when ``w`` is), or None without bias."""
    bias = optional_input(node, slot)
    if bias is None:
        return None
    if bias.dtype is not None and np.dtype(bias.dtype) != np.int32:
        raise NearMiss("bias", f"the bias is {np.dtype(bias.dtype)}, not int32")
    x_scale, w_scale = constant_value(x.scale), constant_value(w.scale)
    if x_scale is None or w_scale is None:
        raise NearMiss("bias", "the input or weight scale is computed at run time, so the bias scale is not a constant")
    scale = (np.float32(factor) * np.asarray(x_scale, np.float32) * np.asarray(w_scale, np.float32)).astype(np.float32)
    shape = shape_of(bias)
    if w.axis is not None and (shape is None or len(shape) != 1):
        raise NearMiss("bias", f"a per-channel weight with a bias of shape {shape} (expected one value per channel)")
    values = constant_value(bias)
    ctx.require_finite(None if values is None else float(np.max(np.abs(values * scale.astype(np.float64)), initial=0)), "bias values")
    params = QParams(ctx.const(scale, "bias_scale"), ctx.const(np.zeros(scale.shape, np.int32), "bias_zero_point"),
                     0 if w.axis is not None else None)
    return ctx.dequantize(bias, params, "bias_dequantized")


def _static(shape: list | None, axes: slice | int) -> int | None:
    """The product of ``shape[axes]`` when those dims are static."""
    if shape is None:
        return None
    dims = shape[axes] if isinstance(axes, slice) else [shape[axes]]
    return int(np.prod(dims, dtype=np.int64)) if all(isinstance(d, (int, np.integer)) for d in dims) else None


def _check_products(ctx: QdqContext, reduction: int | None, a: QParams, a_type: np.dtype, b: QParams, b_type: np.dtype) -> None:
    """The dequantized operands and the sums of ``reduction`` products stay inside float32."""
    a_bound, b_bound = ctx.magnitude(a, a_type), ctx.magnitude(b, b_type)
    ctx.require_finite(a_bound, "dequantized input values")
    ctx.require_finite(b_bound, "dequantized weight values")
    ctx.require_finite(product(reduction, a_bound, b_bound), "sums of products")


@rule("QLinearConv", plain=False)
def qlinear_conv(ctx: QdqContext, node: gs.Node) -> bool:
    """QLinearConv -> DQ(x), DQ(w, per output channel), DQ(int32 bias, scale x_scale·w_scale) -> Conv -> Q."""
    if not domain_is(node, ""):
        return False
    x_type, w_type = eight_bit(node.inputs[0], "input", optional_input(node, 2)), eight_bit(node.inputs[3], "weight", optional_input(node, 5))
    weight_shape = shape_of(node.inputs[3])
    x = ctx.per_tensor(node, 1, 2, x_type, "input")
    w = ctx.per_axis(node, 4, 5, w_type, 0, weight_shape[0] if weight_shape else None, "weight")
    y = ctx.per_tensor(node, 6, 7, eight_bit(node.inputs[7], "output zero point"), "output")
    _check_products(ctx, _static(weight_shape, slice(1, None)), x, x_type, w, w_type)
    bias = _bias(ctx, node, 8, x, w)
    inputs = [ctx.dequantize(node.inputs[0], x, "input_dequantized"), ctx.dequantize(node.inputs[3], w, "weight_dequantized")]
    attrs = {key: value for key, value in node.attrs.items() if key in CONV_ATTRS}
    result = ctx.float_op("Conv", inputs + ([bias] if bias is not None else []), attrs, node)
    ctx.quantize_into(node, result, y)
    return True


@rule("QLinearMatMul", plain=False)
def qlinear_matmul(ctx: QdqContext, node: gs.Node) -> bool:
    """QLinearMatMul -> DQ(a), DQ(b, per column) -> MatMul -> Q."""
    if not domain_is(node, ""):
        return False
    a_type, b_type = eight_bit(node.inputs[0], "input A", optional_input(node, 2)), eight_bit(node.inputs[3], "input B", optional_input(node, 5))
    b_shape = shape_of(node.inputs[3])
    a = ctx.per_tensor(node, 1, 2, a_type, "input A")
    b = ctx.per_axis(node, 4, 5, b_type, len(b_shape) - 1 if b_shape else -1, b_shape[-1] if b_shape else None, "input B")
    if b.axis == -1:
        raise NearMiss("shape", "input B is per column but its rank is unknown", "run shape inference (fix-shapes)")
    y = ctx.per_tensor(node, 6, 7, eight_bit(node.inputs[7], "output zero point"), "output")
    _check_products(ctx, _static(b_shape, -2) if b_shape and len(b_shape) > 1 else None, a, a_type, b, b_type)
    inputs = [ctx.dequantize(node.inputs[0], a, "a_dequantized"), ctx.dequantize(node.inputs[3], b, "b_dequantized")]
    ctx.quantize_into(node, ctx.float_op("MatMul", inputs, None, node), y)
    return True


@rule("QGemm", plain=False)
def qgemm(ctx: QdqContext, node: gs.Node) -> bool:
    """com.microsoft QGemm -> DQ(A), DQ(B, per column), DQ(int32 C, scale alpha·a_scale·b_scale) -> Gemm [-> Q]."""
    if not domain_is(node, ORT_DOMAIN):
        return False
    a_type, b_type = eight_bit(node.inputs[0], "input A", optional_input(node, 2)), eight_bit(node.inputs[3], "input B", optional_input(node, 5))
    trans_b = int(node.attrs.get("transB", 0))
    alpha = float(node.attrs.get("alpha", 1.0))
    b_shape = shape_of(node.inputs[3])
    column_axis = 0 if trans_b else 1
    a = ctx.per_tensor(node, 1, 2, a_type, "input A")
    b = ctx.per_axis(node, 4, 5, b_type, column_axis, b_shape[column_axis] if b_shape else None, "input B")
    y = None
    if optional_input(node, 7) is not None:
        zero = optional_input(node, 8)
        if zero is None:
            raise NearMiss("parameters", "the output has a scale but no zero point, so its type is unknown")
        y = ctx.per_tensor(node, 7, 8, eight_bit(zero, "output zero point"), "output")
    _check_products(ctx, product(_static(b_shape, 1 if trans_b else 0), abs(alpha) or 1.0), a, a_type, b, b_type)
    bias = _bias(ctx, node, 6, a, b, alpha)
    inputs = [ctx.dequantize(node.inputs[0], a, "a_dequantized"), ctx.dequantize(node.inputs[3], b, "b_dequantized")]
    attrs = {"alpha": alpha, "transA": int(node.attrs.get("transA", 0)), "transB": trans_b}
    if y is None:
        ctx.become(node, "Gemm", inputs + ([bias] if bias is not None else []), attrs)
        return True
    ctx.quantize_into(node, ctx.float_op("Gemm", inputs + ([bias] if bias is not None else []), attrs, node), y)
    return True


LINEAR_RULES = [qlinear_conv, qlinear_matmul, qgemm]
