"""onnxruntime's com.microsoft QLinear* ops become DQ -> standard op -> Q (see common.py for the tolerance)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.passes.qoperator.common import EXACT_SHARE, OneOp, assert_matches, code_samples, convert, misses, ops, quant_params

U8, I8 = np.dtype(np.uint8), np.dtype(np.int8)
MS = "com.microsoft"
#: onnxruntime's QLinearSoftmax reads exponentials from a table per input code and divides in
#: its own order: still within one step everywhere, but about 1.5% of the codes land on the
#: other side of a half step (measured: 98.6% identical on these samples).
SOFTMAX_EXACT_SHARE = 0.97


def unary(op: str, dtype, shape=(2, 3, 6, 6), output_scale: float = 0.02, seed: int = 0, output_shape=None, **attrs):
    """One op on ``x`` with an input scale near 0.05 and an output scale near ``output_scale``
    (both off round numbers, as calibrated scales are: round ratios make exact ties, where
    onnxruntime's kernels and QuantizeLinear may round differently)."""
    rng = np.random.default_rng(seed)
    b = OneOp()
    b.input("x", dtype, list(shape))
    _, zero = quant_params(rng, dtype)
    out_zero = 0 if dtype == I8 else 128
    x_scale, y_scale = np.float32(0.05 * rng.uniform(0.9, 1.1)), np.float32(output_scale * rng.uniform(0.95, 1.05))
    b.node(op, ["x", b.const("xs", x_scale, np.float32), b.const("xz", zero, dtype), b.const("ys", y_scale, np.float32),
                b.const("yz", out_zero, dtype)], ["y"], domain=MS, **attrs)
    b.output("y", dtype, output_shape)
    return b.model()


@pytest.mark.parametrize("dtype", [U8, I8])
@pytest.mark.parametrize("op,standard,attrs,output_scale", [
    ("QLinearSigmoid", "Sigmoid", {}, 1 / 256),
    ("QLinearLeakyRelu", "LeakyRelu", {"alpha": 0.1}, 0.03),
    ("QLinearGlobalAveragePool", "GlobalAveragePool", {"channels_last": 0}, 0.01),
    ("QLinearAveragePool", "AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 0}, 0.02),
    ("QLinearAveragePool", "AveragePool", {"kernel_shape": [2, 2], "ceil_mode": 1, "count_include_pad": 1}, 0.02),
    ("QLinearSoftmax", "Softmax", {"axis": -1, "opset": 13}, 1 / 256),
])
def test_unary(dtype, op, standard, attrs, output_scale):
    model = unary(op, dtype, output_scale=output_scale, **attrs)
    converted, record = convert(model)
    assert sum(record.counters.values()) == 1
    assert ops(converted) == {"DequantizeLinear": 1, standard: 1, "QuantizeLinear": 1}
    assert_matches(model, converted, code_samples(model), exact_share=SOFTMAX_EXACT_SHARE if standard == "Softmax" else EXACT_SHARE)


def binary(op: str, dtype, a_shape=(2, 3, 4), b_shape=(3, 1), seed: int = 0):
    rng = np.random.default_rng(seed)
    b = OneOp()
    b.input("a", dtype, list(a_shape))
    b.input("b", dtype, list(b_shape))
    (a_scale, a_zero), (b_scale, b_zero) = quant_params(rng, dtype), quant_params(rng, dtype)
    c_scale = np.float32(a_scale + b_scale) * 128 / 100 if op == "QLinearAdd" else np.float32(a_scale * b_scale) * 128 * 40
    b.node(op, ["a", b.const("as", a_scale, np.float32), b.const("az", a_zero, dtype), "b", b.const("bs", b_scale, np.float32),
                b.const("bz", b_zero, dtype), b.const("cs", c_scale, np.float32), b.const("cz", 0 if dtype == I8 else 128, dtype)],
           ["c"], domain=MS)
    b.output("c", dtype)
    return b.model()


@pytest.mark.parametrize("dtype", [U8, I8])
@pytest.mark.parametrize("op,standard", [("QLinearAdd", "Add"), ("QLinearMul", "Mul")])
def test_binary_with_broadcasting(dtype, op, standard):
    model = binary(op, dtype)
    converted, _ = convert(model)
    assert ops(converted) == {"DequantizeLinear": 2, standard: 1, "QuantizeLinear": 1}
    assert_matches(model, converted, code_samples(model))


@pytest.mark.parametrize("dtype", [U8, I8])
def test_concat(dtype):
    rng = np.random.default_rng(1)
    b = OneOp()
    inputs = [b.const("ys", 0.04, np.float32), b.const("yz", 0 if dtype == I8 else 128, dtype)]
    for index, width in enumerate((2, 3, 1)):
        scale, zero = quant_params(rng, dtype)
        inputs += [b.input(f"x{index}", dtype, [2, width, 4]), b.const(f"s{index}", scale * 5, np.float32), b.const(f"z{index}", zero, dtype)]
    b.node("QLinearConcat", inputs, ["y"], domain=MS, axis=1)
    b.output("y", dtype)
    model = b.model()
    converted, _ = convert(model)
    assert ops(converted) == {"DequantizeLinear": 3, "Concat": 1, "QuantizeLinear": 1}
    assert_matches(model, converted, code_samples(model))


def test_softmax_with_opset_12_semantics_on_the_last_axis():
    model = unary("QLinearSoftmax", U8, output_scale=1 / 256, axis=3, opset=12)
    converted, _ = convert(model)
    assert "QLinearSoftmax" not in ops(converted)
    assert_matches(model, converted, code_samples(model), exact_share=SOFTMAX_EXACT_SHARE)


def test_softmax_with_opset_12_semantics_on_an_inner_axis_stays():
    model = unary("QLinearSoftmax", U8, output_scale=1 / 256, output_shape=[2, 3, 6, 6], axis=1, opset=12)
    converted, record = convert(model)
    assert ops(converted) == {"QLinearSoftmax": 1}
    (miss,) = misses(record, "qlinear-softmax")
    assert miss["code"] == "axis" and "opset 12" in miss["message"]


@pytest.mark.parametrize("op,standard,attrs", [
    ("QLinearGlobalAveragePool", "GlobalAveragePool", {}),
    ("QLinearAveragePool", "AveragePool", {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [1, 0, 0, 1]}),
])
def test_channels_last_pools_between_transposes_of_the_codes(op, standard, attrs):
    model = unary(op, U8, shape=(2, 5, 6, 3), output_scale=0.02, channels_last=1, **attrs)
    converted, _ = convert(model)
    assert ops(converted) == {"Transpose": 2, "DequantizeLinear": 1, standard: 1, "QuantizeLinear": 1}
    (pool,) = [node for node in converted.graph.nodes if node.op == standard]
    assert pool.inputs[0].inputs[0].op == "DequantizeLinear" and pool.outputs[0].outputs[0].op == "QuantizeLinear"
    assert_matches(model, converted, code_samples(model))


def test_channels_last_pool_of_unknown_rank_stays():
    b = OneOp()
    b.input("codes", U8, [72])
    b.inputs.append(onnx.helper.make_tensor_value_info("dims", onnx.TensorProto.INT64, ["rank"]))
    b.node("Reshape", ["codes", "dims"], ["x"])
    b.node("QLinearGlobalAveragePool", ["x", b.const("xs", 0.05, np.float32), b.const("xz", 3, U8), b.const("ys", 0.01, np.float32),
                                        b.const("yz", 0, U8)], ["y"], domain=MS, channels_last=1)
    b.output("y", U8, [2, 1, 1, 6])
    converted, record = convert(b.model())
    assert ops(converted) == {"Reshape": 1, "QLinearGlobalAveragePool": 1}
    (miss,) = misses(record, "qlinear-global-average-pool")
    assert miss["code"] == "shape" and "channels-last" in miss["message"]


def _sigmoid(zero_points: bool):
    b = OneOp()
    b.input("x", I8, [2, 8])
    zero = [b.const("xz", 0, I8)] if zero_points else [""]
    inputs = ["x", b.const("xs", 0.05, np.float32), *zero, b.const("ys", 1 / 128, np.float32)]
    b.node("QLinearSigmoid", inputs + ([b.const("yz", 0, I8)] if zero_points else []), ["y"], domain=MS)
    b.output("y", I8, [2, 8])
    return b.model()


def test_missing_zero_points_are_zero():
    """(onnxruntime itself aborts on a QLinearSigmoid without zero points, so the reference is
    the same op with explicit zeros.)"""
    converted, record = convert(_sigmoid(False))
    assert record.counters["qlinear-sigmoid"] == 1
    quantize = next(node for node in converted.graph.nodes if node.op == "QuantizeLinear")
    assert np.dtype(quantize.inputs[2].dtype) == I8
    assert_matches(_sigmoid(True), converted, code_samples(_sigmoid(True)))


def test_no_qdq_before_opset_10():
    b = OneOp(opset=9)
    b.input("x", U8, [2, 8])
    b.node("QLinearSigmoid", ["x", b.const("xs", 0.05, np.float32), b.const("xz", 3, U8), b.const("ys", 1 / 256, np.float32),
                              b.const("yz", 0, U8)], ["y"], domain=MS)
    b.output("y", U8, [2, 8])
    converted, record = convert(b.model())
    assert ops(converted) == {"QLinearSigmoid": 1}
    (miss,) = misses(record, "qlinear-sigmoid")
    assert miss["code"] == "opset" and miss["fix"] == "--target-opset 10"


def test_float_overflow_stays():
    """(1 - mask) times float32's lowest, as quantize_static writes an attention mask: the
    integer kernel is fine, the float form would overflow to -inf and make NaN of 0·inf."""
    b = OneOp()
    b.input("keep", I8, [2, 8])
    inputs = ["keep", b.const("ks", 1 / 255, np.float32), b.const("kz", -128, I8), b.const("low", -127, I8),
              b.const("ls", 2.6793887e36, np.float32), b.const("lz", 0, I8), b.const("ys", 1.3344406e36, np.float32), b.const("yz", 127, I8)]
    b.node("QLinearMul", inputs, ["y"], domain=MS)
    b.output("y", I8, [2, 8])
    converted, record = convert(b.model())
    assert ops(converted) == {"QLinearMul": 1}
    (miss,) = misses(record, "qlinear-mul")
    assert miss["code"] == "range" and "float32" in miss["message"]


def test_pool_sums_beyond_float32_stay():
    model = unary("QLinearGlobalAveragePool", U8, shape=(1, 2, 8, 8), output_scale=1e36, output_shape=[1, 2, 1, 1])
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(np.asarray(1e36, np.float32), "xs"))
    converted, record = convert(model)
    assert ops(converted) == {"QLinearGlobalAveragePool": 1}
    (miss,) = misses(record, "qlinear-global-average-pool")
    assert miss["code"] == "range" and "pooling window" in miss["message"]
