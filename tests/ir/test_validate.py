"""Every kind of unusable model is refused at load time with one precise sentence."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.defs
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import mapc
from mapc.ir import load, make_session
from mapc.ir.errors import ModelError
from mapc.ir.runtime_limits import runtime_limits
from tests.conftest import make_model

F = TensorProto.FLOAT


def relu_model(**kwargs) -> onnx.ModelProto:
    return make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
        **kwargs,
    )


def refused(source, pattern: str) -> str:
    with pytest.raises(ModelError, match=pattern) as info:
        load(source)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    refused(tmp_path / "nope.onnx", "no such file")


def test_directory(tmp_path):
    refused(tmp_path, "is a directory")


def test_empty_and_garbage_bytes():
    refused(b"", "empty")
    refused(b"\xff\xfe garbage that is not protobuf \x00\x01", "not an ONNX model")


def test_truncated_model():
    data = relu_model().SerializeToString()
    refused(data[: len(data) // 2], "not an ONNX model")


def test_protobuf_without_graph():
    refused(onnx.ModelProto(ir_version=8).SerializeToString(), "no graph")


def test_ir_version_too_new():
    model = relu_model()
    model.ir_version = 99
    refused(model, "IR version 99")


def test_newest_ir_and_opset_the_installed_runtime_runs_are_accepted():
    """The limits come from the installed onnx and onnxruntime, not from constants: a model at
    exactly those versions loads and compiles, and onnxruntime runs it."""
    limits = runtime_limits()
    assert limits.max_ir_version >= 10 and limits.max_opset >= 21
    model = relu_model(opset=limits.max_opset)
    model.ir_version = limits.max_ir_version
    result = mapc.compile(model)
    session = make_session(result.model)
    assert session.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0].tolist() == [0.0, 2.0]


def test_one_above_the_installed_runtime_is_refused_with_the_versions_named():
    limits = runtime_limits()
    newer_ir = relu_model(opset=limits.max_opset)
    newer_ir.ir_version = limits.max_ir_version + 1
    message = refused(newer_ir, f"IR version {limits.max_ir_version + 1} is newer")
    assert f"at most {limits.max_ir_version}" in message
    assert f"onnxruntime {onnxruntime.__version__}" in message and f"onnx {onnx.__version__}" in message
    newer_opset = relu_model(opset=limits.max_opset + 1)
    message = refused(newer_opset, f"unsupported opset: ai.onnx {limits.max_opset + 1}")
    assert f"1 to {limits.max_opset}" in message and f"onnxruntime {onnxruntime.__version__}" in message


def _onnxruntime_loads(ir_version: int, opset: int) -> bool:
    model = relu_model(opset=opset)
    model.ir_version = ir_version
    try:
        onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


def test_the_limits_are_what_onnxruntime_itself_loads():
    """The probe agrees with onnxruntime: the newest versions load; the next ones either do not
    load or are beyond what the installed onnx knows (its checker would refuse them)."""
    limits = runtime_limits()
    assert _onnxruntime_loads(limits.max_ir_version, limits.max_opset)
    assert limits.max_ir_version == onnx.IR_VERSION or not _onnxruntime_loads(limits.max_ir_version + 1, limits.max_opset)
    assert limits.max_opset == onnx.defs.onnx_opset_version() or not _onnxruntime_loads(limits.max_ir_version, limits.max_opset + 1)


@pytest.mark.parametrize("version", [0, 999])
def test_unsupported_opsets(version):
    model = relu_model()
    model.opset_import[0].version = version
    refused(model, f"unsupported opset: ai.onnx {version}|not valid")


def test_duplicate_opset_domain():
    model = relu_model()
    model.opset_import.append(helper.make_opsetid("ai.onnx", 18))
    refused(model, "declared twice")


def test_unknown_operator():
    model = relu_model()
    model.graph.node[0].op_type = "Frobnicate"
    refused(model, "unknown operator 'Frobnicate' in ai.onnx opset 18")


def test_operator_newer_than_the_opset():
    model = make_model(
        [helper.make_node("Gelu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
        opset=17,
    )
    refused(model, "unknown operator 'Gelu' in ai.onnx opset 17")


def test_custom_domain_must_be_imported():
    model = relu_model()
    model.graph.node[0].domain = "com.acme"
    refused(model, "does not import")


def test_custom_domain_ops_are_accepted_when_imported():
    model = relu_model()
    model.graph.node[0].domain = "com.microsoft"
    model.graph.node[0].op_type = "FastGelu"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    load(model)


def test_undefined_tensor():
    model = make_model(
        [helper.make_node("Add", ["x", "ghost"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
    )
    assert "'ghost'" in refused(model, "not produced by any node, initializer or graph input")


def test_missing_initializer_and_dangling_output():
    model = relu_model()
    model.graph.output[0].name = "nowhere"
    refused(model, "graph output 'nowhere' is not produced")


def test_tensor_produced_twice():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
    )
    refused(model, "produced by two nodes")


def test_cycle_is_named():
    model = make_model(
        [helper.make_node("Add", ["x", "c"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["c"], name="second")],
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("a", F, [2])],
    )
    message = refused(model, "cycle")
    assert "'first'" in message and "'second'" in message


def test_self_loop():
    model = make_model(
        [helper.make_node("Add", ["x", "a"], ["a"], name="loop")],
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("a", F, [2])],
    )
    refused(model, "cycle")


def test_unsorted_but_acyclic_graph_is_accepted_and_sorted():
    model = make_model(
        [helper.make_node("Neg", ["a"], ["y"]), helper.make_node("Relu", ["x"], ["a"])],
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
    )
    assert [node.op for node in load(model).graph.nodes] == ["Relu", "Neg"]


def test_short_raw_data():
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    weight.raw_data = weight.raw_data[:6]
    model = make_model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", F, [4])],
        [helper.make_tensor_value_info("y", F, [4])],
        [weight],
    )
    refused(model, "holds 6 bytes but its shape and type need 16")


@pytest.mark.parametrize("dims", [[-3], [1 << 41]])
def test_absurd_initializer_dims(dims):
    weight = onnx.TensorProto(name="w", data_type=F, dims=dims)
    model = make_model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", F, [4])],
        [helper.make_tensor_value_info("y", F, [4])],
        [weight],
    )
    refused(model, "absurd")


def test_absurd_input_dims():
    model = relu_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1 << 45
    refused(model, "absurd dimension")


def test_invalid_element_type():
    weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
    weight.data_type = 77
    model = make_model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", F, [4])],
        [helper.make_tensor_value_info("y", F, [4])],
        [weight],
    )
    refused(model, "element type")


def test_checker_catches_the_rest():
    model = relu_model()
    model.graph.node[0].attribute.append(helper.make_attribute("alpha", 1.0))
    refused(model, "invalid ONNX model")


def test_subgraph_outer_scope_names_are_valid():
    then_branch = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", F, [2])])
    else_branch = helper.make_graph([helper.make_node("Neg", ["ghost"], ["e"])], "else", [], [helper.make_tensor_value_info("e", F, [2])])
    model = make_model(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
    )
    refused(model, "'ghost'")


def test_an_operator_of_an_imported_domain_nobody_defines_is_refused():
    model = relu_model()
    model.graph.node[0].domain = "com.acme"
    model.opset_import.append(helper.make_opsetid("com.acme", 1))
    refused(model, "unknown operator 'Relu' in domain 'com.acme': neither onnx nor onnxruntime defines it")


def test_an_operator_version_onnxruntime_dropped_is_refused():
    model = relu_model(opset=1)
    model.ir_version = 3
    refused(model, r"onnxruntime has no implementation of Relu-1 \(ai.onnx opset 1")


def test_function_ops_without_a_kernel_are_accepted():
    model = make_model(
        [helper.make_node("MeanVarianceNormalization", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", F, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("y", F, [1, 2, 3, 3])],
        opset=13,
    )
    load(model)


def test_type_mismatches_are_refused():
    model = make_model(
        [helper.make_node("Add", ["x", "i"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2]), helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
    )
    refused(model, "invalid ONNX model: .*inconsistent type")
    wrong_output = relu_model()
    wrong_output.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    refused(wrong_output, "invalid ONNX model: .*elem type differs")


def test_a_permutation_longer_than_the_rank_is_refused():
    model = relu_model()
    model.graph.node[0].op_type = "Transpose"
    model.graph.node[0].attribute.append(helper.make_attribute("perm", [0, 1]))
    refused(model, "invalid ONNX model: .*Invalid attribute perm")


def test_a_cast_to_no_type_is_refused():
    model = relu_model()
    model.graph.node[0].op_type = "Cast"
    model.graph.node[0].attribute.append(helper.make_attribute("to", 0))
    refused(model, "casts to 0, which is not an element type")


@pytest.mark.parametrize("declared", ["no shape", "no type"])
def test_outputs_without_a_shape_or_type_are_accepted(declared):
    model = relu_model()
    if declared == "no shape":
        model.graph.output[0].type.tensor_type.ClearField("shape")
    else:
        model.graph.output[0].ClearField("type")
    model.graph.value_info.append(helper.make_empty_tensor_value_info("x"))
    load(model)


def test_minus_one_dims_are_unknown_dims_and_other_negatives_absurd():
    model = relu_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = -1
    loaded = load(model)
    assert loaded.graph.inputs[0].shape == [None] and loaded.graph.outputs[0].shape == [None]
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -2
    refused(model, "absurd dimension -2")
