"""cleanup: targeted cases for every rule, and the property over random models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given
from onnx import TensorProto, helper, numpy_helper

import mapc
from mapc.ir import load
from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model

F = TensorProto.FLOAT


def ops(model: mapc.Model) -> list[str]:
    return [node.op for node in model.graph.nodes]


def run_cleanup(proto: onnx.ModelProto, **options) -> tuple[mapc.Model, dict[str, int]]:
    model, records = assert_pass_preserves(proto, [("cleanup", options)])
    return model, records[0].counters


@given(onnx_models())
def test_cleanup_preserves_random_models(model):
    assert_pass_preserves(model, "cleanup")


@given(onnx_models(families=("elementwise", "unary", "constant", "shape_chain", "concat"), symbolic=True))
def test_cleanup_preserves_models_rich_in_duplicates(model):
    assert_pass_preserves(model, "cleanup")


def test_removes_identity_chain_and_keeps_output_name():
    proto = make_model(
        [
            helper.make_node("Identity", ["x"], ["a"]),
            helper.make_node("Relu", ["a"], ["b"]),
            helper.make_node("Identity", ["b"], ["c"]),
            helper.make_node("Identity", ["c"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, [2, 3])],
    )
    model, counters = run_cleanup(proto)
    assert ops(model) == ["Relu"]
    assert [t.name for t in model.graph.outputs] == ["y"]
    assert counters["noops_removed"] == 3


def test_keeps_identity_that_forwards_an_input_to_an_output():
    proto = make_model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
    )
    model, counters = run_cleanup(proto)
    assert ops(model) == ["Identity"] and counters["noops_removed"] == 0


def test_keeps_identity_between_two_outputs():
    proto = make_model(
        [helper.make_node("Relu", ["x"], ["y1"]), helper.make_node("Identity", ["y1"], ["y2"])],
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y1", F, [2]), helper.make_tensor_value_info("y2", F, [2])],
    )
    model, _ = run_cleanup(proto)
    assert ops(model) == ["Relu", "Identity"]


@pytest.mark.parametrize("training", [None, False])
def test_removes_inference_dropout(training):
    inputs = ["x"]
    initializers = []
    if training is not None:
        inputs += ["", "mode"]
        initializers.append(numpy_helper.from_array(np.array(training), "mode"))
    proto = make_model(
        [helper.make_node("Dropout", inputs, ["d"]), helper.make_node("Relu", ["d"], ["y"])],
        [helper.make_tensor_value_info("x", F, [4])],
        [helper.make_tensor_value_info("y", F, [4])],
        initializers,
    )
    model, counters = run_cleanup(proto)
    assert ops(model) == ["Relu"] and counters["noops_removed"] == 1


def test_keeps_dropout_whose_mask_is_used():
    proto = make_model(
        [helper.make_node("Dropout", ["x"], ["d", "mask"]), helper.make_node("Cast", ["mask"], ["m"], to=F), helper.make_node("Add", ["d", "m"], ["y"])],
        [helper.make_tensor_value_info("x", F, [4])],
        [helper.make_tensor_value_info("y", F, [4])],
    )
    model, _ = run_cleanup(proto)
    assert "Dropout" in ops(model)


def test_removes_cast_to_the_same_type_only():
    proto = make_model(
        [
            helper.make_node("Cast", ["x"], ["same"], to=F),
            helper.make_node("Cast", ["same"], ["half"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", ["half"], ["y"], to=F),
        ],
        [helper.make_tensor_value_info("x", F, [3])],
        [helper.make_tensor_value_info("y", F, [3])],
    )
    model, counters = run_cleanup(proto)
    assert ops(model) == ["Cast", "Cast"] and counters["noops_removed"] == 1


def test_removes_dead_nodes_and_their_initializers():
    weight = numpy_helper.from_array(np.ones((3, 3), np.float32), "w")
    proto = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["unused"]), helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, [2, 3])],
        [weight],
    )
    model, counters = run_cleanup(proto)
    assert ops(model) == ["Relu"]
    assert counters == {**counters, "dead_nodes_removed": 1, "initializers_removed": 1}
    assert not [init for init in model.to_proto().graph.initializer]


def test_merges_identical_initializers_but_not_different_ones():
    ones = np.ones((2, 2), np.float32)
    proto = make_model(
        [
            helper.make_node("Add", ["x", "a"], ["p"]),
            helper.make_node("Add", ["p", "b"], ["q"]),
            helper.make_node("Add", ["q", "c"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", F, [2, 2])],
        [helper.make_tensor_value_info("y", F, [2, 2])],
        [numpy_helper.from_array(ones, "a"), numpy_helper.from_array(ones, "b"), numpy_helper.from_array(ones * 2, "c")],
    )
    model, counters = run_cleanup(proto)
    assert counters["duplicates_merged"] == 1
    assert sorted(init.name for init in model.to_proto().graph.initializer) == ["a", "c"]


def test_common_subexpressions_merge_and_output_names_stay():
    proto = make_model(
        [
            helper.make_node("Transpose", ["x"], ["t1"], perm=[1, 0]),
            helper.make_node("Transpose", ["x"], ["t2"], perm=[1, 0]),
            helper.make_node("Transpose", ["x"], ["t3"], perm=[0, 1]),
            helper.make_node("Add", ["t1", "t2"], ["y"]),
            helper.make_node("Relu", ["t3"], ["z"]),
        ],
        [helper.make_tensor_value_info("x", F, [2, 2])],
        [helper.make_tensor_value_info("y", F, [2, 2]), helper.make_tensor_value_info("z", F, [2, 2])],
    )
    model, counters = run_cleanup(proto)
    assert counters["cse_merged"] == 1
    assert ops(model).count("Transpose") == 2
    assert [t.name for t in model.graph.outputs] == ["y", "z"]


def test_duplicate_graph_outputs_keep_both_names():
    proto = make_model(
        [helper.make_node("Relu", ["x"], ["y1"]), helper.make_node("Relu", ["x"], ["y2"])],
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y1", F, [2]), helper.make_tensor_value_info("y2", F, [2])],
    )
    model, _ = run_cleanup(proto)
    assert [t.name for t in model.graph.outputs] == ["y1", "y2"]
    assert ops(model) == ["Relu", "Identity"]


def test_random_ops_are_never_merged():
    proto = make_model(
        [
            helper.make_node("RandomUniformLike", ["x"], ["r1"], seed=1.0),
            helper.make_node("RandomUniformLike", ["x"], ["r2"], seed=1.0),
            helper.make_node("Add", ["r1", "r2"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
    )
    model = load(proto)
    result = mapc.compile(model, passes="cleanup")
    assert ops(result.model).count("RandomUniformLike") == 2


def test_cleans_inside_subgraphs():
    then_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["tx"]), helper.make_node("Relu", ["tx"], ["t_out"]), helper.make_node("Neg", ["x"], ["dead"])],
        "then", [], [helper.make_tensor_value_info("t_out", F, [2])],
    )
    else_branch = helper.make_graph([helper.make_node("Neg", ["x"], ["e_out"])], "else", [], [helper.make_tensor_value_info("e_out", F, [2])])
    proto = make_model(
        [helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)],
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
    )
    model, counters = run_cleanup(proto)
    then_graph = model.graph.nodes[0].attrs["then_branch"]
    assert [n.op for n in then_graph.nodes] == ["Relu"]
    assert counters["noops_removed"] == 1 and counters["dead_nodes_removed"] == 1
