"""mapc.ir.pattern: matching (commutation, products, shared sub-patterns, constant values)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from mapc.ir.pattern import (
    const,
    find_matches,
    maybe,
    op,
    product,
    var,
)
from tests.conftest import model_of

F = TensorProto.FLOAT


def output_of(model, name):
    return model.graph.tensors()[name]


def test_commutative_operands_match_in_either_order():
    model = model_of([helper.make_node("Mul", ["two", "x"], ["y"])], [("two", 2.0)])
    matches, _ = find_matches(op.Mul(var("x"), const("c", 2.0)), output_of(model, "y"))
    assert len(matches) == 1 and matches[0].tensors["x"].name == "x"


def test_shared_variable_must_bind_the_same_tensor():
    pattern = op.Mul(var("a"), var("a"))
    square = model_of([helper.make_node("Mul", ["x", "x"], ["y"])])
    product_of_two = model_of([helper.make_node("Mul", ["x", "z"], ["y"])], inputs=("x", "z"))
    assert find_matches(pattern, output_of(square, "y"))[0]
    matches, deepest = find_matches(pattern, output_of(product_of_two, "y"))
    assert not matches and "same tensor" in deepest.reason


def test_product_matches_any_association_of_mul_nodes():
    pattern = product(var("x"), const("half", 0.5), op.Relu(var("x"), name="relu"))
    for nodes in (
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["x", "h"], ["a"]), helper.make_node("Mul", ["a", "r"], ["y"])],
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "x"], ["a"]), helper.make_node("Mul", ["h", "a"], ["y"])],
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "h"], ["a"]), helper.make_node("Mul", ["x", "a"], ["y"])],
    ):
        matches, _ = find_matches(pattern, output_of(model_of(nodes, [("h", 0.5)]), "y"))
        assert matches and {n.op for n in matches[0].covered} == {"Mul", "Relu"}


def test_product_does_not_swallow_a_shared_mul():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Mul", ["x", "h"], ["a"]),
        helper.make_node("Mul", ["a", "r"], ["y"]),
        helper.make_node("Add", ["a", "y"], ["z"]),
    ]
    model = model_of(nodes, [("h", 0.5)])
    assert not find_matches(product(var("x"), const(value=0.5), op.Relu(var("x"))), output_of(model, "y"))[0]


def test_optional_node_and_shared_alternative():
    casted = maybe(op.Cast(var("x"), name="cast"))
    pattern = op.Add(casted, casted)
    with_cast = model_of([helper.make_node("Cast", ["x"], ["c"], to=F), helper.make_node("Add", ["c", "c"], ["y"])])
    without = model_of([helper.make_node("Add", ["x", "x"], ["y"])])
    assert find_matches(pattern, output_of(with_cast, "y"))[0][0].has("cast")
    assert not find_matches(pattern, output_of(without, "y"))[0][0].has("cast")


def test_constant_value_is_compared_with_tolerance():
    model = model_of([helper.make_node("Mul", ["x", "k"], ["y"])], [("k", 0.7071068)])
    assert find_matches(op.Mul(var(), const(value=np.sqrt(0.5), rtol=1e-6)), output_of(model, "y"))[0]
    matches, deepest = find_matches(op.Mul(var(), const(value=0.7)), output_of(model, "y"))
    assert not matches and "expected the constant 0.7" in deepest.reason


def test_the_deepest_failure_counts_the_mul_nodes_a_product_matched():
    """x·(x·0.05) against "Pow(x, 2)·c or x·x·c": the product alternative got through both Mul
    nodes before its constant failed, so that is the failure a near-miss names, not the Pow the
    other alternative wanted at the first operand."""
    nodes = [helper.make_node("Mul", ["x", "k"], ["a"]), helper.make_node("Mul", ["x", "a"], ["y"])]
    model = model_of(nodes, [("k", 0.05)])
    x, cubic = var("x"), const("cubic", 0.044715)
    pattern = product(op.Pow(x, const(value=2.0), name="square"), cubic) | product(x, x, cubic)
    matches, deepest = find_matches(pattern, output_of(model, "y"))
    assert not matches and deepest.reason == "cubic: expected the constant 0.044715, found 0.0500000007"
