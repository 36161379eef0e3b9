"""Atomic units: QDQ node units, fused patterns and a Constant with its reader move as one."""

from __future__ import annotations

import numpy as np
from onnx import helper

from mapc.ir import load
from mapc.targets.units import Unit, atomic_units
from tests.conftest import make_model
from tests.targets.helpers import const, info, qdq_pair


def units_of(nodes, inputs, outputs, initializers=(), fused_patterns=(), opset: int = 18) -> list[Unit]:
    graph = load(make_model(nodes, inputs, outputs, initializers, opset=opset)).graph
    return atomic_units(graph, fused_patterns)


def grouped(units: list[Unit]) -> list[tuple[list[int], str, int]]:
    return [(unit.members, unit.kind, unit.anchor) for unit in units]


def qdq_relu(domain: str = ""):
    """x -> Q -> DQ -> Relu -> Q -> DQ -> y: nodes 0..4, the Relu (2) in the middle."""
    before, before_consts, dq = qdq_pair("x")
    relu = helper.make_node("Relu", [dq], ["r"], name="relu", domain=domain)
    after, after_consts, out = qdq_pair("r")
    nodes = [*before, relu, *after]
    return nodes, [info("x", [1, 4])], [info(out, [1, 4])], [*before_consts, *after_consts]


def test_an_op_between_dequantize_and_quantize_is_one_qdq_node_unit():
    units = units_of(*qdq_relu())
    assert grouped(units) == [([0], "node", 0), ([1, 2, 3], "QDQ node unit", 2), ([4], "node", 4)]
    assert [unit.index for unit in units] == [0, 1, 2]


def test_ai_onnx_spelled_out_is_the_default_domain():
    graph = load(make_model(*qdq_relu())).graph
    graph.nodes[2].domain = "ai.onnx"
    assert grouped(atomic_units(graph))[1] == ([1, 2, 3], "QDQ node unit", 2)


def test_an_op_of_another_domain_anchors_no_qdq_unit():
    graph = load(make_model(*qdq_relu())).graph
    graph.nodes[2].domain = "com.example"  # load refuses a domain nobody defines; a lowering writes its own
    units = atomic_units(graph)
    assert [unit.members for unit in units] == [[0], [1], [2], [3], [4]]


def test_a_dequantize_read_by_two_ops_belongs_to_neither():
    nodes, consts, dq = qdq_pair("x")
    nodes += [helper.make_node("Relu", [dq], ["a"], name="a"), helper.make_node("Neg", [dq], ["b"], name="b")]
    units = units_of(nodes, [info("x", [4])], [info("a", [4]), info("b", [4])], consts)
    assert [unit.members for unit in units] == [[0], [1], [2], [3]]


def test_a_quantize_joins_only_when_all_readers_of_the_output_quantize():
    nodes, consts, dq = qdq_pair("x")
    nodes.append(helper.make_node("Relu", [dq], ["r"], name="relu"))
    nodes.append(helper.make_node("QuantizeLinear", ["r", "x_scale", "x_zero"], ["rq"], name="rq"))
    nodes.append(helper.make_node("Neg", ["r"], ["n"], name="neg"))
    units = units_of(nodes, [info("x", [4])], [info("rq", [4], 3), info("n", [4])], consts)
    assert grouped(units)[1] == ([1, 2], "QDQ node unit", 2)  # DQ + Relu, not the Q
    assert [3] in [unit.members for unit in units]


def test_a_fused_pattern_is_one_unit_when_each_link_is_the_only_reader():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    weights = [const("w", np.ones((2, 1, 1, 1)))]
    units = units_of(nodes, [info("x", [1, 1, 4, 4])], [info("y", [1, 2, 4, 4])], weights, fused_patterns=[("Conv", "Relu")])
    assert grouped(units) == [([0, 1], "fused Conv -> Relu", 0)]


def test_a_fused_pattern_breaks_when_the_intermediate_is_a_graph_output():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    weights = [const("w", np.ones((2, 1, 1, 1)))]
    outputs = [info("y", [1, 2, 4, 4]), info("c", [1, 2, 4, 4])]
    units = units_of(nodes, [info("x", [1, 1, 4, 4])], outputs, weights, fused_patterns=[("Conv", "Relu")])
    assert grouped(units) == [([0], "node", 0), ([1], "node", 1)]


def skip_layer_norm(scale_input: str = "gamma"):
    """x + skip -> LayerNormalization -> y, the sum also read by the next residual Add (``z``)."""
    nodes = [
        helper.make_node("Add", ["x", "skip"], ["sum"], name="add"),
        helper.make_node("LayerNormalization", ["sum", scale_input, "beta"], ["y"], name="norm", axis=-1),
        helper.make_node("Add", ["sum", "y"], ["z"], name="residual"),
    ]
    consts = [const("gamma", np.ones(4)), const("beta", np.zeros(4))]
    inputs = [info("x", [2, 4]), info("skip", [2, 4])] + ([info(scale_input, [4])] if scale_input != "gamma" else [])
    return nodes, inputs, [info("z", [2, 4])], consts


def test_a_skip_layer_norm_is_one_unit_although_the_sum_is_read_again():
    units = units_of(*skip_layer_norm(), fused_patterns=[("Add", "LayerNormalization")])
    assert grouped(units) == [([0, 1], "fused Add -> LayerNormalization", 0), ([2], "node", 2)]


def test_a_skip_layer_norm_with_a_computed_scale_is_not_a_unit():
    units = units_of(*skip_layer_norm("computed_gamma"), fused_patterns=[("Add", "LayerNormalization")])
    assert [unit.members for unit in units] == [[0], [1], [2]]


def test_other_fused_patterns_still_need_the_only_reader():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "b"], ["y"], name="add"),
        helper.make_node("Neg", ["m"], ["n"], name="neg"),
    ]
    consts = [const("w", np.ones((4, 4))), const("b", np.zeros(4))]
    units = units_of(nodes, [info("x", [2, 4])], [info("y", [2, 4]), info("n", [2, 4])], consts, fused_patterns=[("MatMul", "Add")])
    assert [unit.members for unit in units] == [[0], [1], [2]]


def test_a_constant_node_follows_its_only_reader_which_stays_the_anchor():
    nodes = [
        helper.make_node("Constant", [], ["k"], name="k", value=const("k", [1.0, 2.0])),
        helper.make_node("Add", ["x", "k"], ["y"], name="add"),
        helper.make_node("Constant", [], ["unused"], name="unused", value=const("unused", [0.0])),
        helper.make_node("Neg", ["y"], ["z"], name="neg"),
    ]
    units = units_of(nodes, [info("x", [2])], [info("z", [2]), info("unused", [1])])
    assert grouped(units) == [([0, 1], "node", 1), ([2], "node", 2), ([3], "node", 3)]
