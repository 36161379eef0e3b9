"""quantize: ``matmul_bias_as_gemm`` (MatMul + constant bias Add as one Gemm, the bias int32 in it).

The rewrite (:mod:`mapc.passes.quantize.matmul_bias`) is checked in float, on random shapes and
bias layouts, against onnxruntime; then the quantized model: no requantization between the
product and its bias, an int32 bias at ``s_in · s_w``, and the graph's outputs keep their names.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import Runner, UsageError, infer_shapes, load
from mapc.ir.compare import check_valid
from mapc.passes.quantize import resolve
from mapc.passes.quantize.matmul_bias import fold_matmul_biases
from mapc.targets import get_target, load_target_file
from tests.conftest import make_model
from mapc.testing import onnx_models
from tests.passes.quantize.support import calibration_samples, quantize, sqnr_by_output, structure_problems

F = TensorProto.FLOAT


def linear_model(lead=(1, 8), k=16, n=12, bias_shape=None, bias_first=False, residual=True, seed=0, extra_nodes=(), outputs=None):
    """``y = x @ W + b`` (+ x @ R, a second MatMul without bias, as a residual branch)."""
    rng = np.random.default_rng(seed)
    bias_shape = (n,) if bias_shape is None else bias_shape
    weight = numpy_helper.from_array((0.3 * rng.standard_normal((k, n))).astype(np.float32), "W")
    bias = numpy_helper.from_array((0.5 * rng.standard_normal(bias_shape)).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"], name="fc"),
             helper.make_node("Add", ["b", "xw"] if bias_first else ["xw", "b"], ["h" if residual else "y"], name="fc_bias")]
    initializers = [weight, bias]
    if residual:
        initializers.append(numpy_helper.from_array((0.3 * rng.standard_normal((k, n))).astype(np.float32), "R"))
        nodes += [helper.make_node("MatMul", ["x", "R"], ["xr"], name="skip"), helper.make_node("Add", ["h", "xr"], ["y"], name="sum")]
    nodes += list(extra_nodes)
    out_shape = [*lead, n]
    outputs = outputs or [helper.make_tensor_value_info("y", F, out_shape)]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, [*lead, k])], outputs, initializers)


def samples(shape, count=4, seed=1):
    rng = np.random.default_rng(seed)
    return [{"x": (scale * rng.standard_normal(shape)).astype(np.float32)} for scale in (0.1, 1.0, 10.0, 100.0)[:count]]


def loaded(proto):
    """``proto`` loaded with its shapes inferred (what the quantize pass requires)."""
    model = load(proto)
    assert infer_shapes(model)
    return model


def ops(model) -> list[str]:
    return [node.op for node in model.graph.nodes]


@settings(max_examples=30, deadline=None)
@given(
    lead=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
    k=st.integers(1, 9),
    n=st.integers(1, 9),
    layout=st.sampled_from(["n", "1n", "11n", "scalar", "one"]),
    bias_first=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_the_gemm_computes_what_matmul_and_add_do_for_every_shape_and_bias_layout(lead, k, n, layout, bias_first, seed):
    rank = len(lead) + 1
    bias_shape = {"n": (n,), "1n": (1, n), "11n": (1, 1, n), "scalar": (), "one": (1,)}[layout]
    if len(bias_shape) > rank:
        bias_shape = (n,)
    proto = linear_model(lead, k, n, bias_shape, bias_first, seed=seed)
    model = loaded(proto)
    count, notes = fold_matmul_biases(model)
    assert (count, notes) == (1, [])
    assert "Gemm" in ops(model) and ops(model).count("MatMul") == 1  # the residual branch's MatMul has no bias
    assert ops(model).count("Reshape") == (2 if rank > 2 else 0)
    expected, actual = Runner(load(proto)), Runner(model)
    for feeds in samples((*lead, k)):
        reference = expected.run(feeds)["y"]
        np.testing.assert_allclose(actual.run(feeds)["y"], reference, rtol=1e-5, atol=1e-5 * float(np.abs(reference).max()))


def test_projections_of_one_input_share_its_reshape():
    rng = np.random.default_rng(3)
    initializers = [numpy_helper.from_array((0.3 * rng.standard_normal(s)).astype(np.float32), name) for name, s in
                    (("Wq", (8, 8)), ("bq", (8,)), ("Wk", (8, 8)), ("bk", (8,)))]
    nodes = [helper.make_node("MatMul", ["x", "Wq"], ["q0"]), helper.make_node("Add", ["q0", "bq"], ["q"]),
             helper.make_node("MatMul", ["x", "Wk"], ["k0"]), helper.make_node("Add", ["k0", "bk"], ["k"]),
             helper.make_node("Mul", ["q", "k"], ["y"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [1, 4, 8])], [helper.make_tensor_value_info("y", F, [1, 4, 8])], initializers)
    model = loaded(proto)
    assert fold_matmul_biases(model)[0] == 2
    assert ops(model).count("Reshape") == 3  # one to 2-D for x, one back per Gemm


@pytest.mark.parametrize(("case", "why"), [
    ("row-bias", "is not a bias of the last axis"),
    ("two-readers", "also read elsewhere"),
    ("graph-output", "also read elsewhere"),
    ("dynamic", "not static"),
])
def test_a_constant_add_that_is_not_a_bias_of_one_reader_stays_with_a_note(case, why):
    if case == "row-bias":
        proto = linear_model((1, 8), bias_shape=(8, 1))
    elif case == "two-readers":
        proto = linear_model(extra_nodes=[helper.make_node("Neg", ["xw"], ["z"])],
                             outputs=[helper.make_tensor_value_info("y", F, [1, 8, 12]), helper.make_tensor_value_info("z", F, [1, 8, 12])])
    elif case == "graph-output":
        proto = linear_model(outputs=[helper.make_tensor_value_info("y", F, [1, 8, 12]), helper.make_tensor_value_info("xw", F, [1, 8, 12])])
    else:
        proto = linear_model()
        proto.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "sequence"
    model = loaded(proto)
    count, notes = fold_matmul_biases(model)
    assert count == 0 and ops(model).count("MatMul") == 2 and "Gemm" not in ops(model)
    [note] = notes
    assert note.code == "quantize.matmul-bias-kept" and note.node == "fc" and why in note.message
    assert "requantized before the bias" in note.message


def test_kept_nodes_stay_and_an_add_of_two_activations_is_no_candidate():
    model = loaded(linear_model())
    assert fold_matmul_biases(model, keep=lambda node: node.name == "fc") == (0, [])
    assert "Gemm" not in ops(model)
    assert fold_matmul_biases(model) == (1, [])  # 'sum' adds two activations: no note about it


def test_quantized_the_bias_is_int32_inside_the_gemm_with_no_requantization_before_it():
    proto = linear_model((1, 8), residual=False)
    model, record = quantize(proto, scheme="a16w8", matmul_bias_as_gemm=True, activation_type="uint16")
    [gemm] = [node for node in model.graph.nodes if node.op == "Gemm"]
    bias_dq = gemm.inputs[2].inputs[0]
    assert bias_dq.op == "DequantizeLinear" and bias_dq.inputs[0].values.dtype == np.int32
    input_scale = gemm.inputs[0].inputs[0].inputs[1].values
    weight_scale = gemm.inputs[1].inputs[0].inputs[1].values
    np.testing.assert_allclose(bias_dq.inputs[1].values, input_scale * weight_scale, rtol=1e-6)
    assert "MatMul" not in ops(model) and "Add" not in ops(model)
    assert [t.name for t in model.graph.outputs] == ["y"]
    assert record.counters["matmul_biases_as_gemm"] == 1
    assert min(sqnr_by_output(proto, model, samples((1, 8, 16), count=2)).values()) > 40


def test_without_the_option_the_product_is_requantized_before_its_bias():
    model, record = quantize(linear_model(residual=False), scheme="a16w8")
    assert ops(model).count("MatMul") == 1 and record.counters["matmul_biases_as_gemm"] == 0
    [add] = [node for node in model.graph.nodes if node.op == "Add"]
    assert any(t.inputs and t.inputs[0].op == "DequantizeLinear" and t.inputs[0].inputs[0].inputs[0].op == "QuantizeLinear" for t in add.inputs)


def test_weight_only_int4_and_excluded_matmuls_keep_their_form():
    proto = linear_model(residual=False)
    for options in ({"scheme": "w4"}, {"scheme": "a16w4", "int4_ops": ["MatMul"]}, {"scheme": "a8w8", "exclude_nodes": ["fc"]},
                    {"scheme": "a8w8", "exclude_op_types": ["Gemm"]}):
        model, record = quantize(proto, matmul_bias_as_gemm=True, **options)
        assert "Gemm" not in ops(model), options
        assert record.counters.get("matmul_biases_as_gemm", 0) == 0


def test_qnn_htp_asks_for_it_and_the_other_builtin_targets_do_not():
    assert resolve("a8w8", get_target("qnn-htp").quantization)["matmul_bias_as_gemm"] is True
    assert "matmul_bias_as_gemm" not in resolve("a8w8", get_target("npu").quantization)


def with_linear_layer(proto, n: int, seed: int):
    """``proto`` with ``MatMul + bias Add`` (``n`` outputs) appended after its first output,
    which it replaces (None if that output is not float32 of static rank >= 2)."""
    output = proto.graph.output[0]
    tensor_type = output.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    if tensor_type.elem_type != F or len(dims) < 2 or None in dims:
        return None
    rng = np.random.default_rng(seed)
    linear = onnx.ModelProto()
    linear.CopyFrom(proto)
    graph = linear.graph
    graph.initializer.extend([numpy_helper.from_array((rng.standard_normal((dims[-1], n)) / np.sqrt(dims[-1])).astype(np.float32), "linear_w"),
                              numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "linear_b")])
    graph.node.extend([helper.make_node("MatMul", [output.name, "linear_w"], ["linear_product"]),
                       helper.make_node("Add", ["linear_product", "linear_b"], ["linear_out"])])
    graph.output[0].CopyFrom(helper.make_tensor_value_info("linear_out", F, [*dims[:-1], n]))
    return linear


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(onnx_models(families=("matmul", "elementwise", "unary", "reshape", "transpose"), discontinuous=False, symbolic=False), st.integers(1, 6), st.integers(0, 100))
def test_after_random_graphs_the_gemm_form_keeps_the_qdq_model_valid_and_accurate(proto, n, seed):
    """A linear layer after a random graph: it is rewritten, the QDQ model stays valid and keeps
    its outputs, and it keeps the accuracy bound of the a8w8 property
    (tests/passes/quantize/test_properties.py: 20 dB on the calibration samples)."""
    linear = with_linear_layer(proto, n, seed)
    assume(linear is not None)
    model, record = quantize(linear, matmul_bias_as_gemm=True, random_samples=8, holdout=0.0, sensitivity_samples=0)
    assert record.counters["matmul_biases_as_gemm"] >= 1
    check_valid(model)
    assert not structure_problems(model.to_proto())
    assert [t.name for t in model.graph.outputs] == [o.name for o in linear.graph.output]
    sqnr = sqnr_by_output(linear, model, calibration_samples(linear, 8))
    assert min(sqnr.values(), default=np.inf) >= 20, sqnr


def test_a_toml_target_turns_it_on_and_a_non_boolean_is_refused(tmp_path):
    path = tmp_path / "npu_gemm.toml"
    path.write_text('base = "npu"\nname = "npu-gemm"\n[quantization]\nmatmul_bias_as_gemm = true\n')
    assert resolve("a8w8", load_target_file(path).quantization)["matmul_bias_as_gemm"] is True
    path.write_text('base = "npu"\nname = "npu-gemm"\n[quantization]\nmatmul_bias_as_gemm = "yes"\n')
    with pytest.raises(UsageError, match="'quantization.matmul_bias_as_gemm' must be true or false"):
        load_target_file(path)
