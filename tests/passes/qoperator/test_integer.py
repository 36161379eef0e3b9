"""MatMulInteger and ConvInteger: exact int32 results through scale-1 DQs, and the dynamic quantizer's chain as a float MatMul."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from mapc.ir import run
from tests.passes.qoperator.common import OneOp, assert_matches, code_samples, codes, convert, misses, ops, quant_params

U8, I8 = np.dtype(np.uint8), np.dtype(np.int8)


def matmul_integer(a_type, b_type, per_column: bool, *, k: int = 32, cast_to_float: bool = False, constant_b: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = 6
    b = OneOp()
    b.input("a", a_type, [2, 3, k])
    _, a_zero = quant_params(rng, a_type)
    _, b_zero = quant_params(rng, b_type, n if per_column else None)
    weight = b.const("b", codes(rng, b_type, (k, n)), b_type) if constant_b else b.input("b", b_type, [k, n])
    b.node("MatMulInteger", ["a", weight, b.const("az", a_zero, a_type), b.const("bz", b_zero, b_type)], ["y"])
    if cast_to_float:
        b.node("Cast", ["y"], ["y_float"], to=onnx.TensorProto.FLOAT)
        b.output("y_float", np.float32, [2, 3, n])
    else:
        b.output("y", np.int32, [2, 3, n])
    return b.model()


@pytest.mark.parametrize("a_type,b_type", [(U8, U8), (U8, I8), (I8, I8)])
@pytest.mark.parametrize("per_column", [False, True])
def test_matmul_integer_is_exact(a_type, b_type, per_column):
    model = matmul_integer(a_type, b_type, per_column)
    converted, record = convert(model)
    assert record.counters["integer-product"] == 1
    assert ops(converted) == {"DequantizeLinear": 2, "MatMul": 1, "Cast": 1}
    for feeds in code_samples(model):
        np.testing.assert_array_equal(run(converted, feeds)["y"], run(model, feeds)["y"])


def test_matmul_integer_read_as_float_needs_no_cast():
    model = matmul_integer(U8, I8, True, cast_to_float=True)
    converted, _ = convert(model)
    assert ops(converted) == {"DequantizeLinear": 2, "MatMul": 1}
    for feeds in code_samples(model):
        np.testing.assert_array_equal(run(converted, feeds)["y_float"], run(model, feeds)["y_float"])


def test_matmul_integer_beyond_float32_stays():
    model = matmul_integer(U8, U8, False, k=1000, constant_b=False)
    converted, record = convert(model)
    assert ops(converted) == {"MatMulInteger": 1}
    (miss,) = misses(record, "integer-product")
    assert miss["code"] == "exactness" and "2^24" in miss["message"] and "dynamic quantizer" in miss["fix"]


def test_matmul_integer_with_a_run_time_weight_within_the_bound():
    model = matmul_integer(I8, I8, False, k=64, constant_b=False)
    converted, _ = convert(model)
    assert "MatMulInteger" not in ops(converted)
    for feeds in code_samples(model):
        np.testing.assert_array_equal(run(converted, feeds)["y"], run(model, feeds)["y"])


@pytest.mark.parametrize("w_type", [U8, I8])
def test_conv_integer_is_exact(w_type):
    """(onnxruntime's ConvInteger takes per-tensor zero points only, so no model has others.)"""
    rng = np.random.default_rng(3)
    b = OneOp()
    b.input("x", U8, [1, 3, 8, 8])
    _, w_zero = quant_params(rng, w_type)
    b.node("ConvInteger", ["x", b.const("w", codes(rng, w_type, (5, 3, 3, 3)), w_type), b.const("xz", 131, U8), b.const("wz", w_zero, w_type)], ["y"],
           kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])
    b.output("y", np.int32, [1, 5, 4, 4])
    model = b.model()
    converted, record = convert(model)
    assert record.counters["integer-product"] == 1 and "ConvInteger" not in ops(converted)
    for feeds in code_samples(model):
        np.testing.assert_array_equal(run(converted, feeds)["y"], run(model, feeds)["y"])


def dynamic_chain(per_column: bool, b_type=U8, *, scale_first: bool = False, seed: int = 0):
    """What onnxruntime's quantize_dynamic writes for MatMul(x, W)."""
    rng = np.random.default_rng(seed)
    k, n = 16, 8
    b = OneOp()
    b.input("x", np.float32, [2, 5, k])
    scale, zero = quant_params(rng, b_type, n if per_column else None, symmetric=b_type == I8)
    b.node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"])
    b.node("Mul", ["xs", b.const("ws", scale, np.float32)], ["scales"])
    b.node("MatMulInteger", ["xq", b.const("w", codes(rng, b_type, (k, n)), b_type), "xz", b.const("wz", zero, b_type)], ["acc"])
    b.node("Cast", ["acc"], ["acc_float"], to=onnx.TensorProto.FLOAT)
    b.node("Mul", ["scales", "acc_float"] if scale_first else ["acc_float", "scales"], ["y"])
    b.output("y", np.float32, [2, 5, n])
    return b.model()


@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("b_type", [U8, I8])
def test_dynamic_chain_becomes_a_float_matmul(per_column, b_type):
    model = dynamic_chain(per_column, b_type, scale_first=per_column)
    converted, record = convert(model)
    assert record.counters["dynamic-integer-product"] == 1
    assert ops(converted) == {"DynamicQuantizeLinear": 1, "DequantizeLinear": 2, "MatMul": 1}
    matmul = next(node for node in converted.graph.nodes if node.op == "MatMul")
    weight_dq = matmul.inputs[1].inputs[0]
    assert weight_dq.op == "DequantizeLinear" and weight_dq.inputs[0].name == "w"
    assert weight_dq.attrs.get("axis") == (1 if per_column else None)
    assert_matches(model, converted, code_samples(model))


def test_dynamic_chain_with_a_folded_constant_scale():
    b = OneOp()
    b.input("a", U8, [4, 8])
    b.node("MatMulInteger", ["a", b.const("w", np.arange(16).reshape(8, 2), U8), b.const("az", 100, U8)], ["acc"])
    b.node("Cast", ["acc"], ["acc_float"], to=onnx.TensorProto.FLOAT)
    b.node("Mul", ["acc_float", b.const("s", 0.25, np.float32)], ["y"])
    b.output("y", np.float32, [4, 2])
    model = b.model()
    converted, record = convert(model)
    assert record.counters["dynamic-integer-product"] == 1 and ops(converted) == {"DequantizeLinear": 2, "MatMul": 1}
    assert_matches(model, converted, code_samples(model))


def test_dynamic_chain_with_a_computed_scale_stays_integer():
    """A scale that is neither constant nor a product of two scales: the lone-op rule takes it,
    exactly, and nothing is left to report."""
    b = OneOp()
    b.input("a", U8, [4, 8])
    b.input("s", np.float32, [])
    b.node("MatMulInteger", ["a", b.const("w", np.arange(16).reshape(8, 2), U8)], ["acc"])
    b.node("Cast", ["acc"], ["acc_float"], to=onnx.TensorProto.FLOAT)
    b.node("Sqrt", ["s"], ["root"])
    b.node("Mul", ["acc_float", "root"], ["y"])
    b.output("y", np.float32, [4, 2])
    model = b.model()
    converted, record = convert(model)
    assert not misses(record)
    assert record.counters["integer-product"] == 1 and ops(converted) == {"DequantizeLinear": 2, "MatMul": 1, "Sqrt": 1, "Mul": 1}
    assert_matches(model, converted, [{"a": feeds["a"], "s": np.asarray(2.0, np.float32)} for feeds in code_samples(model)])


@pytest.mark.parametrize("per_column", [False, True])
def test_float_dynamic_activations_give_weight_only_matmuls(per_column):
    """dynamic_activations=float: MatMul(x, DQ(w)); off the QOperator model by at most the
    activation's rounding, half its run-time scale per element, times Σ|w| of the column."""
    model = dynamic_chain(per_column, U8)
    converted, record = convert(model, "qoperator-to-qdq{dynamic_activations=float}")
    assert record.counters["dynamic-integer-product"] == 1
    assert ops(converted) == {"DequantizeLinear": 1, "MatMul": 1}
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    dequantized = (weights["w"].astype(np.float64) - weights["wz"]) * weights["ws"]
    for feeds in code_samples(model):
        x = feeds["x"].astype(np.float64)
        got = run(converted, feeds)["y"]
        np.testing.assert_allclose(got, x @ dequantized, rtol=1e-4, atol=1e-5 * np.abs(x @ dequantized).max())
        step = (max(x.max(), 0.0) - min(x.min(), 0.0)) / 255
        bound = step / 2 * np.abs(dequantized).sum(axis=0) * (1 + 1e-4)
        assert np.all(np.abs(got - run(model, feeds)["y"]) <= bound + 1e-6 * np.abs(got).max())


def test_matmul_integer_bounded_by_its_weights_values():
    """k=1000: the types alone allow sums beyond 2^24, the constant weight's values do not."""
    rng = np.random.default_rng(5)
    b = OneOp()
    b.input("a", U8, [2, 1000])
    b.node("MatMulInteger", ["a", b.const("b", rng.integers(-3, 4, size=(1000, 4)), I8), b.const("az", 120, U8), b.const("bz", 0, I8)], ["y"])
    b.output("y", np.int32, [2, 4])
    model = b.model()
    converted, record = convert(model)
    assert record.counters["integer-product"] == 1
    for feeds in code_samples(model):
        np.testing.assert_array_equal(run(converted, feeds)["y"], run(model, feeds)["y"])


def test_dynamic_chain_with_an_overflowing_weight_scale_stays_integer():
    """A weight scale whose dequantized values overflow float32: the chain is not folded into the
    DQs; the lone-op rule still makes the integer product exact, and the Mul by the scales stays."""
    b = OneOp()
    b.input("x", np.float32, [2, 8])
    b.node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"])
    b.node("Mul", ["xs", b.const("ws", 1e37, np.float32)], ["scales"])
    b.node("MatMulInteger", ["xq", b.const("w", np.arange(16).reshape(8, 2), U8), "xz"], ["acc"])
    b.node("Cast", ["acc"], ["acc_float"], to=onnx.TensorProto.FLOAT)
    b.node("Mul", ["acc_float", "scales"], ["y"])
    b.output("y", np.float32, [2, 2])
    model = b.model()
    converted, record = convert(model)
    assert record.counters["dynamic-integer-product"] == 0 and record.counters["integer-product"] == 1
    assert ops(converted) == {"DynamicQuantizeLinear": 1, "DequantizeLinear": 2, "MatMul": 1, "Mul": 2}
    feeds = [{"x": np.random.default_rng(i).standard_normal((2, 8)).astype(np.float32) * 1e-30} for i in range(3)]
    assert_matches(model, converted, feeds)
