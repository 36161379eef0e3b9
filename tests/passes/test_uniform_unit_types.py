"""uniform-unit-types: a QDQ node unit whose activation types mix 8 and 16 bits computes in 16 bits,
converted exactly at its narrow inputs and rounded down after its narrow outputs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import Runner, load
from mapc.passes import PassContext
from mapc.passes.pipeline import PassManager
from mapc.passes.uniform_unit_types import activation_types, unit_types
from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model
from tests.passes.quantize.support import quantize

F = TensorProto.FLOAT
U8 = (np.uint8, 0.02, 128)
U16 = (np.uint16, 0.02 / 257, 128 * 257)


def qdq(name: str, qtype, out: str) -> tuple[list, list]:
    """Q -> DQ of tensor ``name`` at ``qtype`` = (dtype, scale, zero point), ending in ``out``."""
    dtype, scale, zero = qtype
    inits = [numpy_helper.from_array(np.array(scale, np.float32), f"{out}_s"), numpy_helper.from_array(np.array(zero, dtype), f"{out}_z")]
    nodes = [helper.make_node("QuantizeLinear", [name, f"{out}_s", f"{out}_z"], [f"{out}_q"]),
             helper.make_node("DequantizeLinear", [f"{out}_q", f"{out}_s", f"{out}_z"], [out])]
    return nodes, inits


def stem(name: str, qtype, out: str) -> tuple[list, list]:
    """Graph input ``name`` -> Q8/DQ8 -> Tanh -> Q/DQ at ``qtype``, ending in ``out``: an inner
    quantized tensor (a graph input's own boundary pair is handled differently)."""
    first_nodes, first_inits = qdq(name, qtype, f"{out}_in")
    second_nodes, second_inits = qdq(f"{out}_tanh", qtype, out)
    return first_nodes + [helper.make_node("Tanh", [f"{out}_in"], [f"{out}_tanh"])] + second_nodes, first_inits + second_inits


def model_of(pieces, op_nodes, inputs, output="y", extra_inits=()):
    nodes, inits = [], list(extra_inits)
    for piece_nodes, piece_inits in pieces[:-1]:
        nodes += piece_nodes
        inits += piece_inits
    nodes += op_nodes + pieces[-1][0]
    inits += pieces[-1][1]
    return make_model(nodes, [helper.make_tensor_value_info(n, F, s) for n, s in inputs.items()], [helper.make_tensor_value_info(output, F, None)], inits, opset=21)


def feeds_for(proto, scale=2.0, seed=0):
    rng = np.random.default_rng(seed)
    return {i.name: (scale * rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim])).astype(np.float32) for i in proto.graph.input}


def rewrite(proto, feeds=None):
    """The pass's model, its counters, and both models' outputs on ``feeds``."""
    feeds = feeds or feeds_for(proto)
    model = load(proto)
    records = PassManager(["uniform-unit-types"]).run(model, PassContext(seed=0))
    before, after = Runner(load(proto)).run(feeds), Runner(model).run(feeds)
    return model, records[0].counters, before, after


def mixed_units(model) -> list[str]:
    """Ops whose activation inputs and outputs still carry more than one integer type."""
    return [node.name for node in model.graph.nodes if unit_types(model.graph, node) is not None and len(activation_types(node)) > 1]


def test_an_op_reading_8_bits_and_writing_16_reads_its_input_converted_exactly():
    proto = model_of([stem("x", U8, "xd"), qdq("r", U16, "y")], [helper.make_node("Relu", ["xd"], ["r"])], {"x": [2, 64]})
    model, counters, before, after = rewrite(proto)
    assert counters == {"units_widened": 1, "inputs_converted": 1, "outputs_converted": 0, "units_left_mixed": 0}
    assert mixed_units(model) == []
    assert np.abs(after["y"] - before["y"]).max() <= U16[1] * 1.001  # the same codes (a float ulp may flip one)
    assert np.mean(after["y"] == before["y"]) > 0.99


def test_a_graph_input_read_at_16_bits_is_quantized_at_16_bits_directly():
    """Its 8-bit boundary pair stays for the other readers; a convert after it is what QNN refuses."""
    proto = model_of([qdq("x", U8, "xd"), qdq("r", U16, "y")], [helper.make_node("Relu", ["xd"], ["r"])], {"x": [2, 64]})
    feeds = feeds_for(proto, scale=1.0)
    model, counters, before, after = rewrite(proto, feeds)
    assert counters["inputs_converted"] == 1 and mixed_units(model) == []
    [relu] = [n for n in model.graph.nodes if n.op == "Relu"]
    wide_q = relu.inputs[0].inputs[0].inputs[0].inputs[0]
    assert wide_q.op == "QuantizeLinear" and wide_q.inputs[0].name == "x"
    np.testing.assert_allclose(after["y"], np.clip(np.maximum(feeds["x"], 0), 0, 2.54), atol=U16[1] * 1.001)
    assert np.abs(after["y"] - np.maximum(feeds["x"], 0)).mean() < np.abs(before["y"] - np.maximum(feeds["x"], 0)).mean()


def test_a_16_bit_operand_meeting_an_8_bit_output_is_rounded_down_after_the_op():
    """An 8-bit activation plus a 16-bit one (a mask path) into an 8-bit output."""
    proto = model_of([stem("x", U8, "xd"), stem("m", U16, "md"), qdq("s", U8, "y")], [helper.make_node("Add", ["xd", "md"], ["s"])], {"x": [4, 256], "m": [4, 256]})
    model, counters, before, after = rewrite(proto)
    assert counters == {"units_widened": 1, "inputs_converted": 1, "outputs_converted": 1, "units_left_mixed": 0}
    assert mixed_units(model) == []
    [add] = [n for n in model.graph.nodes if n.op == "Add"]
    reader = add.outputs[0].outputs[0]
    assert reader.op == "QuantizeLinear" and reader.inputs[2].values.dtype == np.uint16
    difference = np.abs(after["y"] - before["y"])
    assert difference.max() <= U8[1] * 1.001  # rounding twice moves a value by one 8-bit step at most
    assert np.mean(difference > 0) < 0.01  # and only near a rounding boundary


def gemm_proto(bias_codes):
    w = numpy_helper.from_array(np.random.default_rng(1).integers(-127, 128, (16, 32)).astype(np.int8), "w_q")
    ws = numpy_helper.from_array(np.full(16, 0.01, np.float32), "w_s")
    wz = numpy_helper.from_array(np.zeros(16, np.int8), "w_z")
    b = numpy_helper.from_array(np.asarray(bias_codes, np.int32), "b_q")
    bs = numpy_helper.from_array(np.full(16, U8[1] * 0.01, np.float32), "b_s")
    bz = numpy_helper.from_array(np.zeros(16, np.int32), "b_z")
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["bd"], axis=0),
             helper.make_node("Gemm", ["xd", "wd", "bd"], ["g"], transB=1)]
    out = (np.uint16, 0.5 / 257, 128 * 257)
    return model_of([stem("x", U8, "xd"), qdq("g", out, "y")], nodes, {"x": [3, 32]}, extra_inits=[w, ws, wz, b, bs, bz])


def test_a_gemm_writing_16_bits_reads_16_bits_and_its_int32_bias_follows_the_input_scale():
    proto = gemm_proto(np.arange(-8, 8) * 1000)
    model, counters, before, after = rewrite(proto)
    assert counters["units_widened"] == 1 and counters["inputs_converted"] == 1
    assert mixed_units(model) == []
    [gemm] = [n for n in model.graph.nodes if n.op == "Gemm"]
    x_dq, bias_dq = gemm.inputs[0].inputs[0], gemm.inputs[2].inputs[0]
    assert x_dq.inputs[0].dtype == np.uint16
    assert np.array_equal(bias_dq.inputs[0].values, (np.arange(-8, 8) * 1000 * 257).astype(np.int32))
    np.testing.assert_allclose(bias_dq.inputs[1].values, np.full(16, U8[1] * 0.01 / 257, np.float32), rtol=1e-6)
    assert gemm.inputs[1].inputs[0].inputs[0].values.dtype == np.int8  # the weight keeps its type
    assert np.abs(after["y"] - before["y"]).max() <= 0.5 / 257 * 1.001


def test_a_bias_that_would_overflow_int32_leaves_the_unit_as_it_was():
    proto = gemm_proto(np.full(16, 2**31 // 200))
    model, counters, before, after = rewrite(proto)
    assert counters == {"units_widened": 0, "inputs_converted": 0, "outputs_converted": 0, "units_left_mixed": 1}
    assert np.array_equal(after["y"], before["y"])


def test_units_of_one_type_and_weights_of_another_are_left_alone():
    proto = gemm_proto(np.zeros(16))
    for node in proto.graph.initializer:
        if node.name == "y_z":
            node.CopyFrom(numpy_helper.from_array(np.array(128, np.uint8), "y_z"))
        if node.name == "y_s":
            node.CopyFrom(numpy_helper.from_array(np.array(0.5, np.float32), "y_s"))
    _, counters, before, after = rewrite(proto)
    assert counters["units_widened"] == 0
    assert np.array_equal(after["y"], before["y"])


@settings(max_examples=25, deadline=None)
@given(onnx_models(families=("elementwise", "unary", "matmul", "gemm", "conv", "pool", "reshape", "concat", "softmax"), symbolic=False),
       st.sampled_from([0.1, 1.0, 10.0]))
def test_random_graphs_with_16_bit_outputs_end_with_uniform_units_and_the_same_outputs(proto, scale):
    """The quantizer widens each graph output (and a weighted producer's input) to 16 bits; the
    pass leaves no unit mixed and changes no output by more than one 8-bit step of its tensor."""
    quantized, _ = quantize(proto, scheme="a8w8", wide_activation_type="uint16", wide_outputs=True)
    exported = quantized.to_proto()
    feeds = feeds_for(exported, scale=scale, seed=3)
    model, counters, before, after = rewrite(exported, feeds)
    assert mixed_units(model) == [] or counters["units_left_mixed"] > 0
    for name, value in before.items():
        reference = np.asarray(value, np.float64)
        noise = float(((np.asarray(after[name], np.float64) - reference) ** 2).sum())
        assert noise <= 1e-4 * max(float((reference**2).sum()), 1e-12) or np.allclose(after[name], value, atol=1e-3), name


@given(onnx_models(families=("elementwise", "unary", "matmul", "reshape")))
def test_float_graphs_are_left_alone(proto):
    _, records = assert_pass_preserves(proto, ["uniform-unit-types"])
    assert records[0].counters["units_widened"] == 0


def test_a_matmul_of_two_activations_reads_both_at_the_wide_type():
    """Attention's P·V with an 8-bit P and a 16-bit V: HTP refuses uint8 x uint16 (error 3110)."""
    proto = model_of([stem("a", U8, "ad"), stem("b", U16, "bd"), qdq("p", U16, "y")], [helper.make_node("MatMul", ["ad", "bd"], ["p"])], {"a": [2, 4, 8], "b": [2, 8, 4]})
    model, counters, before, after = rewrite(proto)
    assert counters["inputs_converted"] == 1 and mixed_units(model) == []
    [matmul] = [n for n in model.graph.nodes if n.op == "MatMul"]
    assert {t.inputs[0].inputs[2].values.dtype for t in matmul.inputs} == {np.dtype(np.uint16)}
    assert np.abs(after["y"] - before["y"]).max() <= U16[1] * 1.001


def test_the_convert_moves_before_a_reshape_that_alone_feeds_the_op():
    """Tanh -> (u8) -> Reshape -> (u8) -> Relu -> (u16): the Reshape is re-typed and the convert
    sits before it (QNN fails to finalize a Convert after a graph input's Reshape at [1, 8, 16])."""
    shape = numpy_helper.from_array(np.array([8, 16], np.int64), "shape")
    pieces = [stem("x", U8, "xd"), qdq("r", U8, "rd"), qdq("o", U16, "y")]
    nodes = [helper.make_node("Reshape", ["xd", "shape"], ["r"])] + pieces[1][0] + [helper.make_node("Relu", ["rd"], ["o"])]
    proto = model_of([pieces[0], (pieces[2][0], pieces[1][1] + pieces[2][1])], nodes, {"x": [1, 8, 16]}, extra_inits=[shape])
    model, counters, before, after = rewrite(proto)
    assert counters["inputs_converted"] == 1 and mixed_units(model) == []
    [reshape] = [n for n in model.graph.nodes if n.op == "Reshape"]
    assert reshape.inputs[0].inputs[0].inputs[2].values.dtype == np.uint16
    assert np.abs(after["y"] - before["y"]).max() <= U16[1] * 1.001
