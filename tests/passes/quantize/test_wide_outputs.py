"""wide_outputs: graph outputs at 16 bits under 8-bit activations, the int32 bias of a weighted
producer at the scale it reads once converted, and a graph output tied to a graph input (a KV
cache) left at its width."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from mapc.passes.quantize import resolve
from mapc.targets import get_target
from tests.conftest import make_model
from tests.passes.quantize.support import quantize

F = TensorProto.FLOAT

def classifier():
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array((0.3 * rng.standard_normal([8, 3, 3, 3])).astype(np.float32), "w")
    gw = numpy_helper.from_array((0.3 * rng.standard_normal([10, 8])).astype(np.float32), "gw")
    gb = numpy_helper.from_array((0.1 * rng.standard_normal([10])).astype(np.float32), "gb")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1)]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])], [helper.make_tensor_value_info("y", F, [1, 10])], [w, gw, gb])


def zero_point_type(model, output_name: str):
    """The integer type of the DequantizeLinear that writes graph output ``output_name``."""
    [dq] = [n for n in model.graph.nodes if n.op == "DequantizeLinear" and n.outputs[0].name == output_name]
    return dq.inputs[2].values.dtype


def test_the_output_is_16_bit_and_its_gemms_bias_at_the_scale_the_gemm_will_read(tmp_path):
    samples = tmp_path / "samples.npz"
    np.savez(samples, x=np.random.default_rng(1).uniform(-1, 1, [64, 1, 3, 8, 8]).astype(np.float32))
    options = {"scheme": "a8w8", "wide_activation_type": "uint16", "calibration": str(samples)}
    model, record = quantize(classifier(), wide_outputs=True, **options)
    assert zero_point_type(model, "y") == np.uint16
    [gemm] = [n for n in model.graph.nodes if n.op == "Gemm"]
    data, weight, bias = (t.inputs[0] for t in gemm.inputs)
    assert data.inputs[2].values.dtype == np.uint8  # uniform-unit-types converts it exactly later
    expected = np.float32(np.float64(data.inputs[1].values) / 257) * weight.inputs[1].values
    np.testing.assert_allclose(bias.inputs[1].values, expected, rtol=1e-6)  # the scale the Gemm will read
    assert {n.inputs[0].inputs[0].inputs[2].values.dtype for n in model.graph.nodes if n.op == "Conv"} == {np.dtype(np.uint8)}
    assert record.counters["outputs_widened"] == 1
    narrow, narrow_record = quantize(classifier(), **options)
    assert zero_point_type(narrow, "y") == np.uint8 and "outputs_widened" not in narrow_record.counters
    wide_db = record.details["accuracy"]["outputs"][0]["sqnr_db"]
    narrow_db = narrow_record.details["accuracy"]["outputs"][0]["sqnr_db"]
    assert wide_db > narrow_db + 1  # the output's own 8-bit rounding was a share of the error (44.4 -> 46.5 dB)


def test_an_output_tied_to_a_graph_input_keeps_the_activation_type():
    """An LLM's cache: past (input) and the new entry concatenated, the result an output."""
    nodes = [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Concat", ["past", "t"], ["present"], axis=1),
             helper.make_node("ReduceMean", ["present"], ["m"], keepdims=1), helper.make_node("Mul", ["m", "m"], ["y"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("past", F, [1, 4, 8]), helper.make_tensor_value_info("x", F, [1, 1, 8])],
                       [helper.make_tensor_value_info("present", F, [1, 5, 8]), helper.make_tensor_value_info("y", F, None)], opset=21)
    model, record = quantize(proto, scheme="a8w8", wide_activation_type="uint16", wide_outputs=True)
    assert zero_point_type(model, "present") == np.uint8
    assert zero_point_type(model, "y") == np.uint16
    assert record.counters["outputs_widened"] == 1


def test_qnn_htp_asks_for_it_under_8_bit_activations_only():
    support = get_target("qnn-htp").quantization
    assert resolve("a8w8", support)["wide_outputs"] is True
    assert "wide_outputs" not in resolve("a16w8", support)
    assert "wide_outputs" not in resolve("a8w8", get_target("npu").quantization)
