"""onnxruntime's quantized contrib ops (``com.microsoft``) -> DequantizeLinear, standard op, QuantizeLinear.

Each op is defined as its float op between a dequantization of its inputs and a quantization of
its output (onnxruntime's kernels compute that through lookup tables or fixed-point steps that
round once), so each becomes exactly that, with the node's own per-tensor scales and zero points:

* ``QLinearAdd``, ``QLinearMul`` (A, B; broadcasting) -> ``Add`` / ``Mul``;
* ``QLinearSigmoid`` -> ``Sigmoid``; ``QLinearLeakyRelu`` -> ``LeakyRelu`` with its ``alpha``;
* ``QLinearGlobalAveragePool``, ``QLinearAveragePool`` -> ``GlobalAveragePool`` /
  ``AveragePool`` with its window attributes; a channels-last one (``channels_last`` 1: NHWC, as
  TFLite-derived models have) between Transposes of its 8-bit codes to NCHW and back (exact: a
  Transpose moves codes), so Q and DQ still sit right around the pool;
* ``QLinearConcat(ys, yz, (x, xs, xz)...)`` -> ``Concat`` of the dequantized inputs;
* ``QLinearSoftmax`` -> ``Softmax`` over its axis, when the op's ``opset`` semantics (before 13:
  the axes from ``axis`` on flattened) agree with the model's ``Softmax``.

A missing zero point is 0 of the input's type.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import NearMiss, optional_input, rule
from mapc.passes.qoperator.context import ORT_DOMAIN, QdqContext, QParams, domain_is, eight_bit, product, shape_of

#: Opset in which Softmax works on one axis instead of the flattened trailing axes.
SOFTMAX_ONE_AXIS_SINCE = 13
POOL_ATTRS = ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides")


def _unary_params(ctx: QdqContext, node: gs.Node, extent: float | None = 1.0) -> tuple[QParams, QParams]:
    """The input's and the output's parameters of ``X, xs, xz, ys, yz``; the dequantized input,
    summed over ``extent`` elements (a pooling window), must stay inside float32."""
    dtype = eight_bit(node.inputs[0], "input", optional_input(node, 2))
    x = ctx.per_tensor(node, 1, 2, dtype, "input")
    ctx.require_finite(ctx.magnitude(x, dtype), "dequantized input values")
    ctx.require_finite(product(ctx.magnitude(x, dtype), extent), "sums over the pooling window")
    return x, ctx.per_tensor(node, 3, 4, dtype, "output")


def _unary(ctx: QdqContext, node: gs.Node, op: str, attrs: dict | None = None, extent: float | None = 1.0) -> bool:
    """``X, xs, xz, ys, yz`` -> ``Q(op(DQ(X)))``."""
    x, y = _unary_params(ctx, node, extent)
    result = ctx.float_op(op, [ctx.dequantize(node.inputs[0], x, "x_dequantized")], attrs, node)
    ctx.quantize_into(node, result, y)
    return True


def _binary(ctx: QdqContext, node: gs.Node, op: str) -> bool:
    """``A, as, az, B, bs, bz, cs, cz`` -> ``Q(op(DQ(A), DQ(B)))``."""
    dtype = eight_bit(node.inputs[0], "input A", optional_input(node, 2))
    if eight_bit(node.inputs[3], "input B", optional_input(node, 5)) != dtype:
        raise NearMiss("dtype", "inputs A and B have different types")
    a = ctx.per_tensor(node, 1, 2, dtype, "input A")
    b = ctx.per_tensor(node, 4, 5, dtype, "input B")
    c = ctx.per_tensor(node, 6, 7, dtype, "output")
    a_bound, b_bound = ctx.magnitude(a, dtype), ctx.magnitude(b, dtype)
    ctx.require_finite(product(a_bound, b_bound) if op == "Mul" else None if None in (a_bound, b_bound) else a_bound + b_bound,
                       f"dequantized inputs and their {'product' if op == 'Mul' else 'sum'}")
    ctx.require_finite(max(a_bound or 0.0, b_bound or 0.0), "dequantized input values")
    inputs = [ctx.dequantize(node.inputs[0], a, "a_dequantized"), ctx.dequantize(node.inputs[3], b, "b_dequantized")]
    ctx.quantize_into(node, ctx.float_op(op, inputs, None, node), c)
    return True


def _pool(ctx: QdqContext, node: gs.Node, op: str, attrs: dict) -> bool:
    """A pooling op: NCHW as it is; NHWC with its codes transposed to NCHW before and back after."""
    channels_last = bool(int(node.attrs.get("channels_last", 0)))
    shape = shape_of(node.inputs[0])
    extent = _window(shape, attrs, channels_last)
    if not channels_last:
        return _unary(ctx, node, op, attrs, extent)
    if shape is None or len(shape) < 3:
        raise NearMiss("shape", f"the channels-last input's rank is unknown ({shape})", "run shape inference (fix-shapes)")
    x, y = _unary_params(ctx, node, extent)
    rank, dtype = len(shape), node.inputs[0].dtype
    codes = ctx.node("Transpose", [node.inputs[0]], attrs={"perm": [0, rank - 1, *range(1, rank - 1)]}, name="channels_first", dtype=dtype)
    result = ctx.float_op(op, [ctx.dequantize(codes, x, "x_dequantized")], attrs, node)
    quantized = ctx.node("QuantizeLinear", [result, y.scale, y.zero_point], name="pooled_quantized", dtype=dtype)
    ctx.become(node, "Transpose", [quantized], {"perm": [0, *range(2, rank), 1]})
    return True


def _window(shape: list | None, attrs: dict, channels_last: bool) -> float | None:
    """Elements one output of the pool sums: its window, or the spatial dims (None: unknown)."""
    if "kernel_shape" in attrs:
        return float(np.prod(attrs["kernel_shape"]))
    if shape is None or len(shape) < 3:
        return None
    spatial = shape[1:-1] if channels_last else shape[2:]
    return float(np.prod(spatial)) if all(isinstance(d, (int, np.integer)) for d in spatial) else None


@rule("QLinearAdd", plain=False)
def qlinear_add(ctx: QdqContext, node: gs.Node) -> bool:
    """com.microsoft QLinearAdd -> DQ(A) + DQ(B) -> Q."""
    return domain_is(node, ORT_DOMAIN) and _binary(ctx, node, "Add")


@rule("QLinearMul", plain=False)
def qlinear_mul(ctx: QdqContext, node: gs.Node) -> bool:
    """com.microsoft QLinearMul -> DQ(A) * DQ(B) -> Q."""
    return domain_is(node, ORT_DOMAIN) and _binary(ctx, node, "Mul")


@rule("QLinearSigmoid", plain=False)
def qlinear_sigmoid(ctx: QdqContext, node: gs.Node) -> bool:
    """com.microsoft QLinearSigmoid -> Sigmoid(DQ(X)) -> Q."""
    return domain_is(node, ORT_DOMAIN) and _unary(ctx, node, "Sigmoid")


@rule("QLinearLeakyRelu", plain=False)
def qlinear_leaky_relu(ctx: QdqContext, node: gs.Node) -> bool:
    """com.microsoft QLinearLeakyRelu -> LeakyRelu(DQ(X), alpha) -> Q."""
    return domain_is(node, ORT_DOMAIN) and _unary(ctx, node, "LeakyRelu", {"alpha": float(node.attrs.get("alpha", 0.01))})


@rule("QLinearGlobalAveragePool", plain=False)
def qlinear_global_average_pool(ctx: QdqContext, node: gs.Node) -> bool:
    """com.microsoft QLinearGlobalAveragePool -> [Transpose to NCHW] GlobalAveragePool(DQ(X)) -> Q [-> Transpose back]."""
    return domain_is(node, ORT_DOMAIN) and _pool(ctx, node, "GlobalAveragePool", {})


@rule("QLinearAveragePool", plain=False)
def qlinear_average_pool(ctx: QdqContext, node: gs.Node) -> bool:
    """com.microsoft QLinearAveragePool -> [Transpose to NCHW] AveragePool(DQ(X)) with its window attributes -> Q [-> Transpose back]."""
    return domain_is(node, ORT_DOMAIN) and _pool(ctx, node, "AveragePool", {k: v for k, v in node.attrs.items() if k in POOL_ATTRS})


@rule("QLinearConcat", plain=False)
def qlinear_concat(ctx: QdqContext, node: gs.Node) -> bool:
    """com.microsoft QLinearConcat(ys, yz, (x, xs, xz)...) -> Concat(DQ(x)...) -> Q."""
    if not domain_is(node, ORT_DOMAIN):
        return False
    if len(node.inputs) < 5 or (len(node.inputs) - 2) % 3:
        raise NearMiss("inputs", "the inputs are not an output scale and zero point followed by (tensor, scale, zero point) triples")
    zero = optional_input(node, 1)
    if zero is None:
        raise NearMiss("parameters", "the output zero point is missing, so the output type is unknown")
    dtype = eight_bit(zero, "output zero point")
    y = ctx.per_tensor(node, 0, 1, dtype, "output")
    slots = range(2, len(node.inputs), 3)
    types = [eight_bit(node.inputs[slot], f"input {index}", optional_input(node, slot + 2)) for index, slot in enumerate(slots)]
    params = [ctx.per_tensor(node, slot + 1, slot + 2, dtype, f"input {index}") for index, (slot, dtype) in enumerate(zip(slots, types))]
    for part, dtype in zip(params, types):
        ctx.require_finite(ctx.magnitude(part, dtype), "dequantized input values")
    parts = [ctx.dequantize(node.inputs[slot], part, "part_dequantized") for slot, part in zip(slots, params)]
    ctx.quantize_into(node, ctx.float_op("Concat", parts, {"axis": int(node.attrs["axis"])}, node), y)
    return True


@rule("QLinearSoftmax", plain=False)
def qlinear_softmax(ctx: QdqContext, node: gs.Node) -> bool:
    """com.microsoft QLinearSoftmax -> Softmax(DQ(X)) over its axis -> Q (when its opset semantics match the model's)."""
    if not domain_is(node, ORT_DOMAIN):
        return False
    axis = int(node.attrs.get("axis", -1))
    shape = shape_of(node.inputs[0])
    last = axis == -1 or (shape is not None and axis == len(shape) - 1)
    one_axis = int(node.attrs.get("opset", ctx.model.opset)) >= SOFTMAX_ONE_AXIS_SINCE
    if not last and one_axis != (ctx.model.opset >= SOFTMAX_ONE_AXIS_SINCE):
        raise NearMiss("axis", f"the softmax over axis {axis} follows opset {node.attrs.get('opset')} semantics, "
                       f"which the model's Softmax (opset {ctx.model.opset}) does not share", "upgrade or downgrade the model's opset")
    return _unary(ctx, node, "Softmax", {"axis": axis})


CONTRIB_RULES = [qlinear_add, qlinear_mul, qlinear_sigmoid, qlinear_leaky_relu, qlinear_global_average_pool,
                 qlinear_average_pool, qlinear_concat, qlinear_softmax]
