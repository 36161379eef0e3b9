"""Whole models as onnxruntime's quantizers write them in QOperator form, converted and compared in onnxruntime.

Static quantization of examples/cnn.onnx and of a small graph built here that uses every op the
QOperator quantizer has a QLinear form for; dynamic quantization of examples/transformer.onnx.
Every 8-bit tensor a QOperator node wrote (not only the outputs) is compared, on the realistic
verification samples (floats at scales 1, 1e-3, 1e3, 1), within one step with >= 99% identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import load, verification_samples
from tests.passes.qoperator.common import assert_matches, convert, misses, ops

quantization = pytest.importorskip("onnxruntime.quantization")

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
#: The ops of QOperator form: none may be left.
QOPERATOR_OPS = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "QLinearAdd", "QLinearMul",
                 "QLinearSigmoid", "QLinearLeakyRelu", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat",
                 "QLinearSoftmax"}

#: Input slot of each op's output zero point (4 for the unary contrib ops).
OUTPUT_ZERO_POINT = {"QLinearConv": 7, "QLinearMatMul": 7, "QGemm": 8, "QLinearConcat": 1, "QLinearAdd": 7, "QLinearMul": 7}


class _Reader(quantization.CalibrationDataReader):
    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self.samples = iter(samples)

    def get_next(self):
        return next(self.samples, None)


def quantize_static(source: Path, target: Path, *, per_channel: bool, activations: str) -> onnx.ModelProto:
    """``source`` quantized by onnxruntime in QOperator form, calibrated on eight normal samples."""
    model = onnx.load(source)
    rng = np.random.default_rng(0)
    first = model.graph.input[0]
    shape = [d.dim_value or 1 for d in first.type.tensor_type.shape.dim]
    samples = [{first.name: rng.standard_normal(shape).astype(np.float32)} for _ in range(8)]
    quantization.quantize_static(str(source), str(target), _Reader(samples), quant_format=quantization.QuantFormat.QOperator,
                                 per_channel=per_channel, activation_type=getattr(quantization.QuantType, activations),
                                 weight_type=quantization.QuantType.QInt8)
    return onnx.load(target)


def with_quantized_tensors_as_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every 8-bit tensor a QOperator node writes also a graph output (with the
    shape onnxruntime gives it), so the comparison sees the whole network and not only its
    (float, rounded) result."""
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    names = {output.name for output in extended.graph.output}
    added = []
    for node in extended.graph.node:
        if node.op_type in QOPERATOR_OPS and node.output[0] not in names and node.op_type not in ("MatMulInteger", "ConvInteger"):
            zero = node.input[OUTPUT_ZERO_POINT.get(node.op_type, 4)]
            dtype = next(init.data_type for init in extended.graph.initializer if init.name == zero)
            added.append(helper.make_tensor_value_info(node.output[0], dtype, None))
    extended.graph.output.extend(added)
    session = ort.InferenceSession(extended.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip([info.name for info in added], session.run([info.name for info in added], samples_of(model)[0])))
    for info in extended.graph.output:
        if info.name in values:
            info.type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=d) for d in values[info.name].shape)
    return extended


def zoo() -> onnx.ModelProto:
    """Conv+bias, LeakyRelu, AveragePool, a strided 1x1 Conv, Concat, Mul, Sigmoid, Add,
    GlobalAveragePool, Flatten, MatMul, Softmax: every op the QOperator quantizer rewrites."""
    rng = np.random.default_rng(0)

    def weight(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, np.float32), name)

    weights = [weight("w1", rng.standard_normal((8, 3, 3, 3)) * 0.3), weight("b1", rng.standard_normal(8) * 0.1),
               weight("w2", rng.standard_normal((8, 3, 1, 1)) * 0.3), weight("m", rng.standard_normal((16, 10)) * 0.3),
               weight("k", rng.uniform(0.5, 1.5, (1, 16, 1, 1)))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["c1"], ["l1"], alpha=0.1),
        helper.make_node("AveragePool", ["l1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["x", "w2"], ["c2"], strides=[2, 2]),
        helper.make_node("Concat", ["p1", "c2"], ["cat"], axis=1),
        helper.make_node("Mul", ["cat", "k"], ["scaled"]),
        helper.make_node("Sigmoid", ["scaled"], ["gate"]),
        helper.make_node("Add", ["gate", "cat"], ["summed"]),
        helper.make_node("GlobalAveragePool", ["summed"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "m"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "zoo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def samples_of(model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    return [sample.feeds for sample in verification_samples(load(model), seed=0)]


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("activations", ["QUInt8", "QInt8"])
def test_static_cnn(tmp_path, per_channel, activations):
    quantized = quantize_static(EXAMPLES / "cnn.onnx", tmp_path / "q.onnx", per_channel=per_channel, activations=activations)
    assert {"QLinearConv", "QGemm", "QLinearAdd", "QLinearSoftmax"} <= {node.op_type for node in quantized.graph.node}
    reference = with_quantized_tensors_as_outputs(quantized)
    converted, record = convert(reference)
    assert not QOPERATOR_OPS & set(ops(converted)) and not misses(record)
    assert record.counters["qlinear-conv"] == 4
    shares = assert_matches(reference, converted, samples_of(reference))
    assert len(shares) >= 8


@pytest.mark.parametrize("activations", ["QUInt8", "QInt8"])
def test_static_zoo_of_every_qlinear_op(tmp_path, activations):
    onnx.save(zoo(), tmp_path / "zoo.onnx")
    quantized = quantize_static(tmp_path / "zoo.onnx", tmp_path / "q.onnx", per_channel=True, activations=activations)
    reference = with_quantized_tensors_as_outputs(quantized)
    converted, record = convert(reference)
    fired = {name for name, count in record.counters.items() if count}
    assert fired == {"qlinear-conv", "qlinear-matmul", "qlinear-add", "qlinear-mul", "qlinear-sigmoid", "qlinear-leaky-relu",
                     "qlinear-global-average-pool", "qlinear-average-pool", "qlinear-concat", "qlinear-softmax"}
    assert not QOPERATOR_OPS & set(ops(converted))
    # the softmax is onnxruntime's table-driven kernel: see test_contrib.SOFTMAX_EXACT_SHARE
    shares = assert_matches(reference, converted, samples_of(reference), exact_share=0.97)
    assert all(share >= 0.99 for name, share in shares.items() if name != "y_quantized")


def test_dynamic_transformer_becomes_float_matmuls_of_dequantized_weights(tmp_path):
    quantization.quantize_dynamic(str(EXAMPLES / "transformer.onnx"), str(tmp_path / "q.onnx"), weight_type=quantization.QuantType.QUInt8)
    quantized = onnx.load(tmp_path / "q.onnx")
    integer = sum(node.op_type == "MatMulInteger" for node in quantized.graph.node)
    assert integer >= 8
    converted, record = convert(quantized)
    assert record.counters["dynamic-integer-product"] == integer
    histogram = ops(converted)
    assert "MatMulInteger" not in histogram and histogram["Cast"] == sum(n.op_type == "Cast" for n in quantized.graph.node) - integer
    weights = [node.inputs[1].inputs[0] for node in converted.graph.nodes if node.op == "MatMul" and node.inputs[1].inputs]
    dequantized = [dq for dq in weights if dq.op == "DequantizeLinear"]
    assert len(dequantized) == integer and all(isinstance(dq.inputs[0], gs.Constant) for dq in dequantized)
    assert_matches(quantized, converted, samples_of(quantized))


def test_dynamic_cnn_conv_integer_chains(tmp_path):
    quantization.quantize_dynamic(str(EXAMPLES / "cnn.onnx"), str(tmp_path / "q.onnx"), weight_type=quantization.QuantType.QUInt8,
                                  op_types_to_quantize=["Conv"])
    quantized = onnx.load(tmp_path / "q.onnx")
    assert sum(node.op_type == "ConvInteger" for node in quantized.graph.node) == 4
    converted, record = convert(quantized)
    assert record.counters["dynamic-integer-product"] == 4
    assert not {"ConvInteger", "MatMulInteger", "Cast"} & set(ops(converted)) and ops(converted)["Conv"] == 4
    assert_matches(quantized, converted, samples_of(quantized))


def test_static_transformer_every_op_but_the_absurd_mask_scales(tmp_path):
    """quantize_static (QOperator) of the example transformer: its attention mask, (1 - mask) ·
    float32 min, is quantized with a scale of 2.7e36. onnxruntime's integer kernels never form
    those real values; in float they overflow (and 0·inf gives NaN), so the five nodes on that
    path stay, with the range near-miss, and everything else converts within one step."""
    source = EXAMPLES / "transformer.onnx"
    calibration = samples_of(onnx.load(source))
    quantization.quantize_static(str(source), str(tmp_path / "q.onnx"), _Reader(calibration), per_channel=True,
                                 quant_format=quantization.QuantFormat.QOperator)
    reference = with_quantized_tensors_as_outputs(onnx.load(tmp_path / "q.onnx"))
    converted, record = convert(reference)
    left = {(node.op, node.name) for node in converted.graph.nodes if node.op in QOPERATOR_OPS}
    assert sorted(op for op, _ in left) == ["QLinearAdd", "QLinearAdd", "QLinearMul", "QLinearSoftmax", "QLinearSoftmax"]
    assert {(miss["code"], miss["node"]) for miss in misses(record)} == {("range", name) for _, name in left}
    assert record.counters["qlinear-matmul"] == 16
    assert_matches(reference, converted, samples_of(reference))
