"""mapc.ir.pattern: matching (commutation, products, shared sub-patterns), near-misses, rewrites."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import load
from mapc.ir.pattern import (
    Match,
    NearMiss,
    NoMatch,
    RewriteContext,
    Rule,
    apply_rule,
    const,
    find_matches,
    maybe,
    op,
    product,
    var,
)
from tests.conftest import make_model

F = TensorProto.FLOAT


def model_of(nodes, initializers=(), inputs=("x",), shape=(2, 3)):
    return load(
        make_model(
            nodes,
            [helper.make_tensor_value_info(name, F, list(shape)) for name in inputs],
            [helper.make_tensor_value_info(nodes[-1].output[0], F, list(shape))],
            [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in initializers],
        )
    )


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


class Double(Rule):
    """Add(x, x) -> Mul(x, 2), refusing integer-named inputs."""

    name = "double"
    pattern = op.Add(var("x"), var("x"))

    def check(self, match: Match, ctx: RewriteContext) -> None:
        if match.tensors["x"].name == "skip":
            raise NoMatch
        if match.tensors["x"].name == "refuse":
            raise NearMiss("named-refuse", "the input is called refuse", "rename it")

    def rewrite(self, match: Match, params: None, ctx: RewriteContext) -> gs.Tensor:
        return ctx.node("Mul", [match.tensors["x"], ctx.const(np.float32(2.0))])


def test_rule_rewrites_and_reports():
    model = model_of([helper.make_node("Add", ["x", "x"], ["y"])])
    report = apply_rule(Double(), RewriteContext(model))
    assert report.fired == 1 and [n.op for n in model.graph.nodes] == ["Mul"]
    assert [t.name for t in model.graph.outputs] == ["y"]


def test_check_refusal_is_a_near_miss_and_no_match_is_silent():
    refused = model_of([helper.make_node("Add", ["refuse", "refuse"], ["y"])], inputs=("refuse",))
    report = apply_rule(Double(), RewriteContext(refused))
    assert report.fired == 0 and [(m.code, m.fix) for m in report.near_misses] == [("named-refuse", "rename it")]
    skipped = model_of([helper.make_node("Add", ["skip", "skip"], ["y"])], inputs=("skip",))
    assert apply_rule(Double(), RewriteContext(skipped)).near_misses == []


class SquarePlusOne(Rule):
    """Add(Mul(x, x), 1) -> Sigmoid(x) (nonsense; tests inner uses)."""

    name = "square-plus-one"
    pattern = op.Add(op.Mul(var("x"), var("x"), name="square"), const(value=1.0))
    near_miss_after = "square"

    def rewrite(self, match: Match, params: None, ctx: RewriteContext) -> gs.Tensor:
        return ctx.node("Sigmoid", [match.tensors["x"]])


def test_inner_node_read_elsewhere_is_a_near_miss():
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["s"]),
        helper.make_node("Add", ["s", "one"], ["a"]),
        helper.make_node("Add", ["a", "s"], ["y"]),
    ]
    report = apply_rule(SquarePlusOne(), RewriteContext(model_of(nodes, [("one", 1.0)])))
    assert report.fired == 0 and report.near_misses[0].code == "shared-intermediate"


def test_partial_structural_match_is_reported_after_the_anchor():
    nodes = [helper.make_node("Mul", ["x", "x"], ["s"]), helper.make_node("Add", ["s", "two"], ["y"])]
    report = apply_rule(SquarePlusOne(), RewriteContext(model_of(nodes, [("two", 2.0)])))
    assert [m.code for m in report.near_misses] == ["structure"]
    assert "expected the constant 1" in report.near_misses[0].condition
