"""mapc.ir.walk: bounded walks back through producers and on through sole readers."""

from __future__ import annotations

from onnx import TensorProto, helper

from mapc.ir import load
from mapc.ir.walk import sole_reader, walk
from tests.conftest import make_model

F = TensorProto.FLOAT


def chain(*ops: str):
    """x -> ops[0] -> ops[1] ... -> y, single-input nodes named n0, n1, ..."""
    names = ["x", *[f"t{i}" for i in range(len(ops) - 1)], "y"]
    nodes = [helper.make_node(op, [names[i]], [names[i + 1]], name=f"n{i}") for i, op in enumerate(ops)]
    model = load(make_model(nodes, [helper.make_tensor_value_info("x", F, [2])], [helper.make_tensor_value_info("y", F, [2])]))
    return model, {t.name: t for t in model.graph.tensors().values()}


def test_walks_back_through_the_given_ops_and_stops_at_the_first_other():
    _, tensors = chain("Exp", "Relu", "Neg", "Relu")
    result = walk(tensors["y"], {"Relu", "Neg"})
    assert result.stopped_at("Exp") and result.tensor.name == "t0"
    assert [n.name for n in result.passed] == ["n3", "n2", "n1"]


def test_a_walk_reaching_a_graph_input_stops_nowhere():
    _, tensors = chain("Relu", "Relu")
    result = walk(tensors["y"], {"Relu"})
    assert result.stop is None and result.tensor.name == "x" and len(result.passed) == 2


def test_the_limit_bounds_the_nodes_passed():
    _, tensors = chain("Exp", "Relu", "Relu", "Relu")
    assert walk(tensors["y"], {"Relu"}, 4).stopped_at("Exp")  # looks at 4 nodes: passes 3, stops at the 4th
    short = walk(tensors["y"], {"Relu"}, 3)
    assert short.stop is None and [n.name for n in short.passed] == ["n3", "n2", "n1"] and short.tensor.name == "t0"


def test_a_function_chooses_the_tensor_to_continue_from():
    _, tensors = chain("Exp", "Relu", "Neg")
    result = walk(tensors["y"], lambda node: node.inputs[0] if node.op == "Neg" else None)
    assert result.stopped_at("Relu") and [n.name for n in result.passed] == ["n2"]


def test_walking_on_follows_sole_readers():
    _, tensors = chain("Relu", "Neg", "Softmax")
    result = walk(tensors["x"], {"Relu", "Neg"}, 8, step=sole_reader)
    assert result.stopped_at("Softmax") and [n.name for n in result.passed] == ["n0", "n1"]
    assert walk(tensors["y"], {"Relu"}, step=sole_reader).stop is None
