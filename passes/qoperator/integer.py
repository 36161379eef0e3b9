"""Integer-output ops (``MatMulInteger``, ``ConvInteger``) -> DequantizeLinear and a float op.

Two rules, tried in this order:

* ``dynamic-integer-product``: the dequantization chain onnxruntime's dynamic quantizer writes,
  ``Mul(Cast<float>(MatMulInteger(a, b, az, bz)), s)`` with ``s`` the product of a's and b's
  scales (``Mul(a_scale, b_scale)``, or one constant), becomes ``MatMul(DQ(a, a_scale, az),
  DQ(b, b_scale, bz))``: a plain float MatMul of dequantized operands (a weight per column when
  b's scale is). The same for ``ConvInteger`` with per-tensor scales. Float results differ from
  the chain's only by float32 rounding (the chain rounds the exact integer sum once to float and
  once in the Mul; the float op rounds each product and partial sum). With
  ``dynamic_activations="float"``, an ``a`` that ``DynamicQuantizeLinear(x)`` computes (with its
  own scale and zero point) is replaced by ``x`` itself: ``MatMul(x, DQ(b))``, weight-only
  quantization. That is not exact: it drops the activation's rounding, at most half its run-time
  scale per element.
* ``integer-product``: any other ``MatMulInteger`` / ``ConvInteger`` becomes the float op on
  ``DQ(q, scale 1, zero point)``, whose operands are the integers ``q - zero point``. Its result
  equals the int32 one exactly when every partial sum is an integer float32 holds exactly: when
  ``max|a - az| · max over outputs of Σ|b - bz|`` is at most 2^24 (checked from the types' ranges
  and the reduction length, and when that is not enough from a constant weight's values). Readers that cast the
  result to float read the float op directly; any other reader (or a graph output) reads
  ``Cast<int32>`` of it. Beyond the bound the node stays, with a near-miss.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import NearMiss, NoMatch, constant_value, is_graph_output, optional_input, producer, rule, sole_reader
from mapc.passes.qoperator.context import QdqContext, QParams, domain_is, dynamic_source, eight_bit, product, shape_of
from mapc.passes.qoperator.linear import CONV_ATTRS

#: Integers up to this magnitude are exact in float32 (24-bit significand).
EXACT_LIMIT = 2**24


def _channel_axis(node: gs.Node) -> tuple[int, int | None]:
    """The weight's output-channel axis (MatMul: its last, Conv: 0) and the channel count."""
    shape = shape_of(node.inputs[1])
    if node.op == "ConvInteger":
        return 0, shape[0] if shape else None
    if not shape:
        raise NearMiss("shape", "input B's rank is unknown", "run shape inference (fix-shapes)")
    return len(shape) - 1, shape[-1]


def _float_product(ctx: QdqContext, node: gs.Node, a: QParams, b: QParams, float_input: gs.Tensor | None = None) -> gs.Tensor:
    """The float op on ``DQ(a)`` (or ``float_input`` instead) and ``DQ(b)``."""
    first = float_input if float_input is not None else ctx.dequantize(node.inputs[0], a, "a_dequantized")
    inputs = [first, ctx.dequantize(node.inputs[1], b, "b_dequantized")]
    if node.op == "ConvInteger":
        return ctx.float_op("Conv", inputs, {key: value for key, value in node.attrs.items() if key in CONV_ATTRS}, node)
    return ctx.float_op("MatMul", inputs, None, node)


def _split_scales(ctx: QdqContext, node: gs.Node, scale: gs.Tensor) -> tuple[gs.Tensor, gs.Tensor]:
    """Which factor of the chain's scale is a's and which is b's."""
    source = producer(scale)
    if source is None or source.op != "Mul" or not domain_is(source, ""):
        if constant_value(scale) is None:
            raise NearMiss("scale", "the scale multiplying the integer result is neither a constant nor a product of two scales")
        return ctx.const(np.ones((), np.float32), "unit_scale"), scale
    first, second = source.inputs
    sizes = [shape_of(tensor) for tensor in (first, second)]
    if any(shape is None for shape in sizes):
        raise NearMiss("parameters", "a scale's shape is unknown", "run shape inference (fix-shapes)")
    large = [int(np.prod(shape, dtype=np.int64)) > 1 for shape in sizes]
    if all(large):
        raise NearMiss("scale", "both factors of the scale have several values")
    if large[0]:
        return second, first
    if large[1]:
        return first, second
    a_source = producer(node.inputs[0])
    from_dynamic = a_source is not None and a_source.op == "DynamicQuantizeLinear" and second is a_source.outputs[1]
    return (second, first) if from_dynamic else (first, second)


def _scalar(ctx: QdqContext, tensor: gs.Tensor) -> gs.Tensor:
    shape = shape_of(tensor)
    if shape == []:
        return tensor
    value = constant_value(tensor)
    if value is None or value.size != 1:
        raise NearMiss("scale", f"a's scale has shape {shape}, not one value")
    return ctx.const(np.asarray(value, np.float32).reshape(()), "scale")


@rule("MatMulInteger", "ConvInteger", plain=False)
def dynamic_integer_product(ctx: QdqContext, node: gs.Node) -> bool:
    """Mul(Cast<float>(MatMulInteger/ConvInteger(a, b, az, bz)), a_scale·b_scale) -> MatMul/Conv(DQ(a), DQ(b))."""
    if not domain_is(node, ""):
        return False
    cast = sole_reader(node.outputs[0])
    if is_graph_output(ctx.graph, node.outputs[0]) or cast is None or cast.op != "Cast" or int(cast.attrs.get("to", 0)) != onnx.TensorProto.FLOAT:
        raise NoMatch
    mul = sole_reader(cast.outputs[0])
    if is_graph_output(ctx.graph, cast.outputs[0]) or mul is None or mul.op != "Mul" or not domain_is(mul, ""):
        raise NoMatch
    scale = mul.inputs[1] if mul.inputs[0] is cast.outputs[0] else mul.inputs[0]
    a_type, b_type = eight_bit(node.inputs[0], "input A", optional_input(node, 2)), eight_bit(node.inputs[1], "input B", optional_input(node, 3))
    a_scale, b_scale = _split_scales(ctx, node, scale)
    axis, channels = _channel_axis(node)
    if node.op == "ConvInteger" and int(np.prod(shape_of(b_scale) or [1], dtype=np.int64)) > 1:
        raise NearMiss("scale", "a per-channel scale after ConvInteger is not rewritten (only per-tensor)")
    a = ctx.aligned(_scalar(ctx, a_scale), optional_input(node, 2), a_type, 0, None, "input A")
    if a.axis is not None:
        raise NearMiss("parameters", "input A's zero point has several values (per row); only per-tensor is rewritten")
    b = ctx.aligned(b_scale, optional_input(node, 3), b_type, axis, channels, "input B")
    ctx.require_finite(product(ctx.magnitude(a, a_type), ctx.magnitude(b, b_type)), "dequantized products")
    ctx.require_finite(ctx.magnitude(b, b_type), "dequantized weight values")
    float_input = dynamic_source(node.inputs[0], a_scale, optional_input(node, 2)) if ctx.float_dynamic else None
    result = _float_product(ctx, node, a, b, float_input)
    ctx.bypass(mul, result)  # a new node's output can always take a graph output's name
    ctx.remove(cast)
    ctx.remove(node)
    return True


def _largest_magnitude(zero: gs.Tensor | None, dtype: np.dtype) -> int:
    """max |q - zero| over the type's range (any zero point when it is not a constant)."""
    info = np.iinfo(dtype)
    value = constant_value(zero) if zero is not None else np.zeros((), dtype)
    if value is None:
        return int(info.max) - int(info.min)
    values = np.asarray(value, np.int64)
    return int(max(values.max() - info.min, info.max - values.min()))


def _sum_bound(node: gs.Node, axis: int, b_type: np.dtype, a_magnitude: int) -> int:
    """A bound on every |partial sum| of the int32 result: ``max|a - az| · max Σ|b - bz|`` over
    one output element's inputs; from the types and the reduction length, and, only when that
    is beyond 2^24 and B is a constant, from B's values (a weight is read only then)."""
    weight, zero = node.inputs[1], optional_input(node, 3)
    shape = shape_of(weight)
    if shape is not None and all(isinstance(d, (int, np.integer)) for d in shape):
        reduction = int(np.prod(shape[1:], dtype=np.int64)) if node.op == "ConvInteger" else int(shape[-2])
        worst = a_magnitude * reduction * _largest_magnitude(zero, b_type)
        if worst <= EXACT_LIMIT:
            return worst
    values = constant_value(weight)
    zeros = np.zeros((), np.int64) if zero is None else constant_value(zero)
    if values is None or zeros is None:
        if shape is None or any(not isinstance(d, (int, np.integer)) for d in shape):
            raise NearMiss("shape", "input B's shape is not static, so the int32 sums cannot be bounded", "fix the input shapes (fix-shapes)")
        return worst
    values = np.asarray(values, np.int64)
    zeros = np.asarray(zeros, np.int64)
    if zeros.size > 1:
        zeros = zeros.reshape([-1 if d == axis % values.ndim else 1 for d in range(values.ndim)])
    magnitudes = np.abs(values - zeros)
    if node.op == "ConvInteger":
        return a_magnitude * int(magnitudes.reshape(magnitudes.shape[0], -1).sum(axis=1).max(initial=0))
    return a_magnitude * int(magnitudes.sum(axis=-2).max(initial=0))


@rule("MatMulInteger", "ConvInteger", plain=False)
def integer_product(ctx: QdqContext, node: gs.Node) -> bool:
    """MatMulInteger/ConvInteger -> MatMul/Conv(DQ(a, 1, az), DQ(b, 1, bz)) [-> Cast<int32>], when float32 holds every sum exactly."""
    if not domain_is(node, ""):
        return False
    a_type, b_type = eight_bit(node.inputs[0], "input A", optional_input(node, 2)), eight_bit(node.inputs[1], "input B", optional_input(node, 3))
    axis, channels = _channel_axis(node)
    bound = _sum_bound(node, axis, b_type, _largest_magnitude(optional_input(node, 2), a_type))
    if bound > EXACT_LIMIT:
        raise NearMiss("exactness", f"the int32 sums may reach {bound}, beyond 2^24 where float32 stops holding every integer",
                       "dequantize with the real scales instead (the dynamic quantizer's Cast and Mul after it)")
    one = ctx.const(np.ones((), np.float32), "unit_scale")
    a = ctx.aligned(one, optional_input(node, 2), a_type, 0, None, "input A")
    if a.axis is not None:
        raise NearMiss("parameters", "input A's zero point has several values (per row); only per-tensor is rewritten")
    b = ctx.aligned(one, optional_input(node, 3), b_type, axis, channels, "input B")
    result = _float_product(ctx, node, a, b)
    output = node.outputs[0]
    for reader in list(output.outputs):
        if reader.op == "Cast" and domain_is(reader, "") and int(reader.attrs.get("to", 0)) == onnx.TensorProto.FLOAT:
            ctx.bypass(reader, result)
    if output.outputs or is_graph_output(ctx.graph, output):
        ctx.become(node, "Cast", [result], {"to": onnx.TensorProto.INT32})
    else:
        ctx.remove(node)
    return True


INTEGER_RULES = [dynamic_integer_product, integer_product]
