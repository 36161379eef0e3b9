"""onnxruntime's fused MatMulIntegerToFloat and DynamicQuantizeMatMul become DQ -> MatMul [+ bias]."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.passes.qoperator.common import OneOp, assert_matches, code_samples, codes, convert, ops, quant_params
from tests.passes.qoperator.test_models import EXAMPLES, quantization, samples_of

U8, I8 = np.dtype(np.uint8), np.dtype(np.int8)
MS = "com.microsoft"


def matmul_integer_to_float(a_type, b_type, per_column: bool, bias: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    k, n = 20, 6
    b = OneOp()
    b.input("a", a_type, [2, 3, k])
    a_scale, a_zero = quant_params(rng, a_type)
    b_scale, b_zero = quant_params(rng, b_type, n if per_column else None, symmetric=b_type == I8)
    inputs = ["a", b.const("b", codes(rng, b_type, (k, n)), b_type), b.const("as", a_scale, np.float32), b.const("bs", b_scale, np.float32),
              b.const("az", a_zero, a_type), b.const("bz", b_zero, b_type)]
    if bias:
        inputs.append(b.const("bias", rng.standard_normal(n), np.float32))
    b.node("MatMulIntegerToFloat", inputs, ["y"], domain=MS)
    b.output("y", np.float32, [2, 3, n])
    return b.model()


@pytest.mark.parametrize("a_type,b_type", [(U8, U8), (U8, I8), (I8, I8)])
@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_matmul_integer_to_float(a_type, b_type, per_column, bias):
    model = matmul_integer_to_float(a_type, b_type, per_column, bias)
    converted, record = convert(model)
    assert record.counters["matmul-integer-to-float"] == 1
    assert ops(converted) == {"DequantizeLinear": 2, "MatMul": 1, **({"Add": 1} if bias else {})}
    assert_matches(model, converted, code_samples(model))


def dynamic_quantize_matmul(b_type, per_column: bool, bias: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    k, n = 20, 6
    b = OneOp()
    b.input("x", np.float32, [2, 3, k])
    scale, zero = quant_params(rng, b_type, n if per_column else None, symmetric=b_type == I8)
    inputs = ["x", b.const("b", codes(rng, b_type, (k, n)), b_type), b.const("bs", scale, np.float32), b.const("bz", zero, b_type)]
    if bias:
        inputs.append(b.const("bias", rng.standard_normal(n), np.float32))
    b.node("DynamicQuantizeMatMul", inputs, ["y"], domain=MS)
    b.output("y", np.float32, [2, 3, n])
    return b.model()


@pytest.mark.parametrize("b_type", [U8, I8])
@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_dynamic_quantize_matmul(b_type, per_column, bias):
    model = dynamic_quantize_matmul(b_type, per_column, bias)
    converted, record = convert(model)
    assert record.counters["dynamic-quantize-matmul"] == 1
    assert ops(converted) == {"DynamicQuantizeLinear": 1, "DequantizeLinear": 2, "MatMul": 1, **({"Add": 1} if bias else {})}
    assert_matches(model, converted, code_samples(model))


def test_dynamic_quantize_matmul_with_float_activations():
    model = dynamic_quantize_matmul(I8, True, True)
    converted, _ = convert(model, "qoperator-to-qdq{dynamic_activations=float}")
    assert ops(converted) == {"DequantizeLinear": 1, "MatMul": 1, "Add": 1}
    matmul = next(node for node in converted.graph.nodes if node.op == "MatMul")
    assert matmul.inputs[0].name == "x"


def test_onnxruntime_optimized_dynamic_transformer(tmp_path):
    """quantize_dynamic, then onnxruntime's extended graph optimizations, which fuse the chains
    into MatMulIntegerToFloat and DynamicQuantizeMatMul."""
    quantization.quantize_dynamic(str(EXAMPLES / "transformer.onnx"), str(tmp_path / "q.onnx"), weight_type=quantization.QuantType.QUInt8)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(tmp_path / "optimized.onnx")
    fused = {op: sum(node.op_type == op for node in optimized.graph.node) for op in ("MatMulIntegerToFloat", "DynamicQuantizeMatMul")}
    assert all(fused.values())
    converted, record = convert(optimized)
    assert record.counters["matmul-integer-to-float"] == fused["MatMulIntegerToFloat"]
    assert record.counters["dynamic-quantize-matmul"] == fused["DynamicQuantizeMatMul"]
    assert not set(fused) & set(ops(converted))
    assert_matches(optimized, converted, samples_of(optimized))
