"""QLinearConv, QLinearMatMul and QGemm become DQ -> Conv/MatMul/Gemm -> Q (see common.py for the tolerance)."""

from __future__ import annotations

import numpy as np
import pytest

from mapc.ir import run
from tests.passes.qoperator.common import OneOp, assert_matches, code_samples, codes, convert, misses, ops, quant_params

U8, I8 = np.dtype(np.uint8), np.dtype(np.int8)
#: Typical magnitude of a dequantized 8-bit code over its whole range, in steps (uniform codes: ~74).
CODE_STD = 74.0


def _output_scale(x_scale: float, w_scale: np.ndarray, reduction: int) -> np.float32:
    """An output scale that maps about four standard deviations of the result onto the 8-bit range."""
    return np.float32(4 * np.sqrt(reduction) * CODE_STD**2 * x_scale * float(np.max(w_scale)) / 128)


def qlinear_conv(x_type, w_type, per_channel: bool, bias: bool, *, group: int = 1, opset: int = 17, seed: int = 0):
    rng = np.random.default_rng(seed)
    channels, out_channels = 4, 6
    b = OneOp(opset)
    b.input("x", x_type, [2, channels, 9, 9])
    xs, xz = quant_params(rng, x_type)
    ws, wz = quant_params(rng, w_type, out_channels if per_channel else None, symmetric=w_type == I8)
    kernel = [out_channels, channels // group, 3, 3]
    ys = _output_scale(float(xs), ws, int(np.prod(kernel[1:])))
    yz = np.asarray(120 if x_type == U8 else -5, x_type)
    inputs = ["x", b.const("xs", xs, np.float32), b.const("xz", xz, x_type), b.const("w", codes(rng, w_type, kernel), w_type),
              b.const("ws", ws, np.float32), b.const("wz", wz, w_type), b.const("ys", ys, np.float32), b.const("yz", yz, x_type)]
    if bias:
        inputs.append(b.const("bias", rng.integers(-20000, 20000, size=out_channels), np.int32))
    b.node("QLinearConv", inputs, ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 1], group=group)
    b.output("y", x_type)
    return b.model()


@pytest.mark.parametrize("x_type,w_type", [(U8, U8), (U8, I8), (I8, I8)])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_qlinear_conv(x_type, w_type, per_channel, bias):
    model = qlinear_conv(x_type, w_type, per_channel, bias)
    converted, record = convert(model)
    assert record.counters["qlinear-conv"] == 1
    assert ops(converted) == {"DequantizeLinear": 2 + bias, "Conv": 1, "QuantizeLinear": 1}
    if per_channel:
        weight_dq = next(n for n in converted.graph.nodes if n.op == "DequantizeLinear" and n.inputs[0].name == "w")
        assert weight_dq.attrs["axis"] == 0
    samples = code_samples(model)
    assert_matches(model, converted, samples)
    out = np.concatenate([run(converted, feeds)["y"].ravel() for feeds in samples])
    info = np.iinfo(x_type)
    assert np.mean((out == info.min) | (out == info.max)) < 0.2, "the test's output scale saturates most codes"


def test_grouped_qlinear_conv():
    model = qlinear_conv(U8, I8, True, True, group=2)
    converted, _ = convert(model)
    assert_matches(model, converted, code_samples(model))


def test_per_channel_needs_opset_13():
    model = qlinear_conv(U8, I8, True, False, opset=11)
    converted, record = convert(model)
    assert ops(converted) == {"QLinearConv": 1}
    (miss,) = misses(record, "qlinear-conv")
    assert miss["code"] == "opset" and "opset 13" in miss["message"] and miss["fix"] == "--target-opset 13"


def test_per_tensor_at_opset_10():
    model = qlinear_conv(U8, U8, False, True, opset=10)
    converted, _ = convert(model)
    assert "QLinearConv" not in ops(converted)
    assert_matches(model, converted, code_samples(model))


def test_bias_with_a_run_time_scale_stays():
    b = OneOp()
    b.input("x", U8, [1, 2, 5, 5])
    b.input("xs", np.float32, [])
    inputs = ["x", "xs", b.const("xz", 128, U8), b.const("w", np.ones((3, 2, 1, 1)), U8), b.const("ws", 0.01, np.float32),
              b.const("wz", 0, U8), b.const("ys", 0.1, np.float32), b.const("yz", 0, U8), b.const("bias", [1, 2, 3], np.int32)]
    b.node("QLinearConv", inputs, ["y"], kernel_shape=[1, 1])
    b.output("y", U8)
    converted, record = convert(b.model())
    assert ops(converted) == {"QLinearConv": 1}
    (miss,) = misses(record, "qlinear-conv")
    assert miss["code"] == "bias" and "run time" in miss["message"]


def qlinear_matmul(a_type, b_type, per_column: bool, a_shape=(2, 3, 16), seed: int = 0):
    rng = np.random.default_rng(seed)
    k, n = a_shape[-1], 8
    b = OneOp()
    b.input("a", a_type, list(a_shape))
    a_scale, a_zero = quant_params(rng, a_type)
    b_scale, b_zero = quant_params(rng, b_type, n if per_column else None, symmetric=b_type == I8)
    inputs = ["a", b.const("as", a_scale, np.float32), b.const("az", a_zero, a_type), b.const("b", codes(rng, b_type, (k, n)), b_type),
              b.const("bs", b_scale, np.float32), b.const("bz", b_zero, b_type),
              b.const("ys", _output_scale(float(a_scale), b_scale, k), np.float32), b.const("yz", 0 if a_type == I8 else 128, a_type)]
    b.node("QLinearMatMul", inputs, ["y"])
    b.output("y", a_type)
    return b.model()


@pytest.mark.parametrize("a_type,b_type", [(U8, U8), (U8, I8), (I8, I8)])
@pytest.mark.parametrize("per_column", [False, True])
def test_qlinear_matmul(a_type, b_type, per_column):
    model = qlinear_matmul(a_type, b_type, per_column)
    converted, record = convert(model)
    assert record.counters["qlinear-matmul"] == 1
    assert ops(converted) == {"DequantizeLinear": 2, "MatMul": 1, "QuantizeLinear": 1}
    assert_matches(model, converted, code_samples(model))


def test_qlinear_matmul_per_row_input_scale_stays():
    b = OneOp()
    b.input("a", U8, [4, 8])
    inputs = ["a", b.const("as", np.full(4, 0.1), np.float32), b.const("az", np.zeros(4), U8), b.const("b", np.ones((8, 2)), U8),
              b.const("bs", 0.1, np.float32), b.const("bz", 0, U8), b.const("ys", 1.0, np.float32), b.const("yz", 0, U8)]
    b.node("QLinearMatMul", inputs, ["y"])
    b.output("y", U8)
    converted, record = convert(b.model())
    assert ops(converted) == {"QLinearMatMul": 1}
    (miss,) = misses(record, "qlinear-matmul")
    assert miss["code"] == "parameters" and "input A scale" in miss["message"]


def qgemm(per_column: bool, bias: bool, quantized_output: bool, *, trans_b: int = 1, alpha: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    m, k, n = 3, 24, 10
    b = OneOp()
    b.input("a", U8, [m, k])
    a_scale, a_zero = quant_params(rng, U8)
    b_scale, b_zero = quant_params(rng, I8, n if per_column else None, symmetric=True)
    weight = codes(rng, I8, (n, k) if trans_b else (k, n))
    inputs = ["a", b.const("as", a_scale, np.float32), b.const("az", a_zero, U8), b.const("b", weight, I8),
              b.const("bs", b_scale, np.float32), b.const("bz", b_zero, I8)]
    inputs.append(b.const("c", rng.integers(-30000, 30000, size=n), np.int32) if bias else "")
    if quantized_output:
        inputs += [b.const("ys", alpha * _output_scale(float(a_scale), b_scale, k), np.float32), b.const("yz", 128, U8)]
    b.node("QGemm", [name for name in inputs] if bias or quantized_output else inputs[:6], ["y"], domain="com.microsoft",
           transB=trans_b, alpha=alpha)
    b.output("y", U8 if quantized_output else np.float32)
    return b.model()


@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("quantized_output", [False, True])
def test_qgemm(per_column, bias, quantized_output):
    model = qgemm(per_column, bias, quantized_output)
    converted, record = convert(model)
    assert record.counters["qgemm"] == 1
    histogram = ops(converted)
    assert histogram["Gemm"] == 1 and histogram["QuantizeLinear"] == int(quantized_output)
    assert not {"QGemm"} & set(histogram)
    assert_matches(model, converted, code_samples(model))


@pytest.mark.parametrize("alpha,trans_b", [(0.5, 1), (1.0, 0)])
def test_qgemm_alpha_and_layout(alpha, trans_b):
    model = qgemm(True, True, True, trans_b=trans_b, alpha=alpha)
    converted, _ = convert(model)
    assert_matches(model, converted, code_samples(model))


def test_sums_beyond_float32_stay():
    b = OneOp()
    b.input("a", U8, [2, 64])
    inputs = ["a", b.const("as", 1e18, np.float32), b.const("az", 128, U8), b.const("b", np.full((64, 4), 200), U8),
              b.const("bs", 1e18, np.float32), b.const("bz", 0, U8), b.const("ys", 3e38, np.float32), b.const("yz", 128, U8)]
    b.node("QLinearMatMul", inputs, ["y"])
    b.output("y", U8, [2, 4])
    converted, record = convert(b.model())
    assert ops(converted) == {"QLinearMatMul": 1}
    (miss,) = misses(record, "qlinear-matmul")
    assert miss["code"] == "range" and "sums of products" in miss["message"]
