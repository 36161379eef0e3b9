"""The model as the constraints see it: effective dtypes, shapes, constness and parameters."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from mapc.ir import load
from mapc.targets.views import SMALL_CONSTANT_BYTES, ModelView, dims_text, node_label, op_name, view_model
from tests.conftest import make_model
from tests.targets.helpers import const, info, qdq_pair


def view_of(nodes, inputs, outputs, initializers=(), opset: int = 18) -> ModelView:
    return view_model(load(make_model(nodes, inputs, outputs, initializers, opset=opset)))


def test_a_dequantized_tensor_counts_as_its_quantized_type_and_a_dequantized_constant_as_a_weight():
    x_nodes, x_consts, x_dq = qdq_pair("x")
    w_q = onnx.numpy_helper.from_array(np.ones((2, 2), dtype=np.int8), "w_q")
    nodes = [
        *x_nodes,
        helper.make_node("DequantizeLinear", ["w_q", "x_scale", "x_zero"], ["w"], name="w_DQ"),
        helper.make_node("MatMul", [x_dq, "w"], ["y"], name="matmul"),
    ]
    view = view_of(nodes, [info("x", [2, 2])], [info("y", [2, 2])], [*x_consts, w_q])
    matmul = view.nodes[3]
    data, weights = matmul.inputs
    assert (data.dtype, data.stored_dtype, data.constant, data.weight) == ("int8", "float32", False, False)
    assert (weights.dtype, weights.stored_dtype, weights.constant, weights.weight) == ("int8", "float32", False, True)


def test_a_float_tensor_read_only_by_quantize_counts_as_the_quantized_type_unless_it_leaves_the_graph():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["q"], name="q"),
    ]
    consts = [const("s", 0.1), onnx.numpy_helper.from_array(np.array(0, dtype=np.uint8), "z")]
    inner = view_of(nodes, [info("x", [4])], [info("q", [4], TensorProto.UINT8)], consts)
    assert (inner.nodes[0].outputs[0].dtype, inner.nodes[0].outputs[0].stored_dtype) == ("uint8", "float32")
    leaving = view_of(nodes, [info("x", [4])], [info("q", [4], TensorProto.UINT8), info("r", [4])], consts)
    assert leaving.nodes[0].outputs[0].dtype == "float32"


def test_initializers_and_constant_node_outputs_are_constants_and_inputs_are_not():
    nodes = [
        helper.make_node("Constant", [], ["k"], name="k", value=const("k", [1.0, 2.0])),
        helper.make_node("Add", ["x", "k"], ["a"], name="add"),
        helper.make_node("Mul", ["a", "w"], ["y"], name="mul"),
    ]
    view = view_of(nodes, [info("x", [2])], [info("y", [2])], [const("w", [3.0, 4.0])])
    add, mul = view.nodes[1], view.nodes[2]
    assert [(t.name, t.constant) for t in add.inputs] == [("x", False), ("k", True)]
    assert [(t.name, t.constant, t.weight) for t in mul.inputs] == [("a", False, False), ("w", True, True)]


def test_symbolic_input_dims_are_traced_to_their_inputs_and_shapes_stay_symbolic():
    nodes = [helper.make_node("Add", ["x", "m"], ["y"], name="add")]
    view = view_of(nodes, [info("x", ["batch", 3]), info("m", ["batch", 1])], [info("y", ["batch", 3])])
    assert view.dim_sources == {"batch": [("x", 0), ("m", 0)]}
    assert view.input_shapes == {"x": ("batch", 3), "m": ("batch", 1)}
    assert view.shapes_inferred and view.opset == 18
    x = view.nodes[0].inputs[0]
    assert (x.shape, x.rank, x.static) == (("batch", 3), 2, False)
    assert view.nodes[0].outputs[0].shape == ("batch", 3)


def test_a_tensor_is_described_once_and_shared_by_its_writer_and_reader():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Neg", ["r"], ["y"], name="neg")]
    view = view_of(nodes, [info("x", [2, 2])], [info("y", [2, 2])])
    assert view.nodes[0].outputs[0] is view.nodes[1].inputs[0]
    assert view.nodes[1].outputs[0].static and view.nodes[1].outputs[0].shape == (2, 2)


def test_omitted_optional_inputs_are_none_and_input_past_the_end_is_none():
    nodes = [helper.make_node("Clip", ["x", "", "hi"], ["y"], name="clip")]
    view = view_of(nodes, [info("x", [4])], [info("y", [4])], [const("hi", 6.0)])
    clip = view.nodes[0]
    assert clip.inputs[1] is None and clip.input(2).name == "hi" and clip.input(7) is None


def test_constant_ints_reads_small_integer_parameters_only():
    big = np.zeros(SMALL_CONSTANT_BYTES // 8 + 1, dtype=np.int64)
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axes"], ["u"], name="small"),
        helper.make_node("Mul", ["u", "scale"], ["m"], name="float"),
        helper.make_node("Gather", ["x", "big"], ["g"], name="big"),
    ]
    initializers = [const("axes", [0, -1], np.int64), const("scale", [2.0] * 4), const("big", big, np.int64)]
    outputs = [info("m", [1, 4, 4]), info("g", [big.size])]
    small, floats, large = view_of(nodes, [info("x", [4])], outputs, initializers).nodes
    assert small.constant_ints(1) == [0, -1]
    assert floats.constant_ints(1) is None  # not integers
    assert large.constant_ints(1) is None  # too big to read
    assert small.constant_ints(5) is None


def test_tensor_roles_skip_parameters_and_biases_where_the_rules_ask():
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv"), helper.make_node("Reshape", ["y", "shape"], ["z"], name="reshape")]
    initializers = [const("w", np.ones((2, 1, 1, 1))), const("b", [0.0, 0.0]), const("shape", [1, 32], np.int64)]
    view = view_of(nodes, [info("x", [1, 1, 4, 4])], [info("z", [1, 32])], initializers)
    conv, reshape = view.nodes
    assert [role for role, _ in conv.data_tensors()] == ["input 'x'", "input 'w'", "output 'y'"]
    assert [role for role, _ in conv.shaped_tensors()] == ["input 'x'", "input 'w'", "input 'b'", "output 'y'"]
    assert [role for role, _ in reshape.shaped_tensors()] == ["input 'y'", "output 'z'"]
    assert [role for role, _ in reshape.all_tensors()] == ["input 'y'", "input 'shape'", "output 'z'"]
    assert conv.attr("group", 1) == 1 and conv.attr("missing") is None


def test_labels_name_unnamed_nodes_by_op_and_index_and_other_domains_prefix_the_op():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"], name="neg")]
    view = view_of(nodes, [info("x", [2])], [info("y", [2])])
    assert [n.label for n in view.nodes] == ["Relu#0", "neg"]
    assert [n.op for n in view.nodes] == ["Relu", "Neg"]
    custom = view.nodes[0].node
    custom.domain, custom.op = "com.example", "Foo"
    assert (op_name(custom), node_label(custom, 3)) == ("com.example::Foo", "Foo#3")


def test_dims_text_names_dims_and_marks_the_unknown():
    assert dims_text(("N", 3, None, "unk__7", 224)) == "[N, 3, ?, ?, 224]"
    assert dims_text(None) == "unknown"
    assert dims_text(()) == "[]"


def test_a_non_tensor_value_is_viewed_by_its_kind():
    """Found by the wild benchmark (onnx's test_identity_opt, test_if_opt): gs holds an optional
    or sequence value's type as a TypeProto, which the cached dtype lookup could not hash, and
    ``--target npu`` crashed in ``partition`` (exit 70)."""
    optional = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [5])
    wrapped = onnx.ValueInfoProto(name="o")
    wrapped.type.optional_type.elem_type.CopyFrom(optional.type)
    out = onnx.ValueInfoProto(name="y")
    out.type.CopyFrom(wrapped.type)
    view = view_of([helper.make_node("Identity", ["o"], ["y"], name="identity")], [wrapped], [out], opset=16)
    assert view.nodes[0].inputs[0].dtype in ("optional", "sequence")  # gs keeps the optional's element type
