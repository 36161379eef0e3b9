"""mapc.ir.rewrite: pattern rules and op-keyed rules under one driver, its two schedules, and
the per-rule report (fired, near-misses)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from mapc.ir.pattern import Match, const, op, var
from mapc.ir.rewrite import NearMiss, NoMatch, PatternRule, RewriteContext, apply_rules, rule
from tests.conftest import model_of

F = TensorProto.FLOAT


class Double(PatternRule):
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
    report = apply_rules([Double()], RewriteContext(model))['double']
    assert report.fired == 1 and [n.op for n in model.graph.nodes] == ["Mul"]
    assert [t.name for t in model.graph.outputs] == ["y"]


def test_check_refusal_is_a_near_miss_and_no_match_is_silent():
    refused = model_of([helper.make_node("Add", ["refuse", "refuse"], ["y"])], inputs=("refuse",))
    report = apply_rules([Double()], RewriteContext(refused))['double']
    assert report.fired == 0 and [(m.code, m.fix) for m in report.near_misses] == [("named-refuse", "rename it")]
    skipped = model_of([helper.make_node("Add", ["skip", "skip"], ["y"])], inputs=("skip",))
    assert apply_rules([Double()], RewriteContext(skipped))['double'].near_misses == []


class SquarePlusOne(PatternRule):
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
    report = apply_rules([SquarePlusOne()], RewriteContext(model_of(nodes, [("one", 1.0)])))['square-plus-one']
    assert report.fired == 0 and report.near_misses[0].code == "shared-intermediate"


def test_partial_structural_match_is_reported_after_the_anchor():
    nodes = [helper.make_node("Mul", ["x", "x"], ["s"]), helper.make_node("Add", ["s", "two"], ["y"])]
    report = apply_rules([SquarePlusOne()], RewriteContext(model_of(nodes, [("two", 2.0)])))['square-plus-one']
    assert [m.code for m in report.near_misses] == ["structure"]
    assert "expected the constant 1" in report.near_misses[0].message


@rule("Relu")
def relu_of_relu(ctx: RewriteContext, node: gs.Node) -> bool:
    """Relu(Relu(x)) -> Relu(x)."""
    inner = node.inputs[0].inputs[0] if node.inputs[0].inputs else None
    if inner is None or inner.op != "Relu":
        return False
    if inner.name == "refuse":
        raise NearMiss("named", "the inner Relu is called refuse", "rename it")
    return ctx.bypass(node, node.inputs[0])


@rule("Relu", "Abs")
def first_relu(ctx: RewriteContext, node: gs.Node) -> bool:
    """Relu(x) with x a graph input -> Abs(x) (nonsense; tests schedules)."""
    if node.inputs[0].inputs:
        return False
    ctx.become(node, "Abs", [node.inputs[0]])
    return True


@rule("Relu")
def drop_relu_reader(ctx: RewriteContext, node: gs.Node) -> bool:
    """A Relu read only by another Relu: that reader goes (a later node, so sweeps must repeat)."""
    readers = node.outputs[0].outputs
    return len(readers) == 1 and readers[0].op == "Relu" and ctx.bypass(readers[0], node.outputs[0])


def relu_chain(length: int, names=None):
    names = names or [f"r{i}" for i in range(length)]
    tensors = ["x", *[f"t{i}" for i in range(length - 1)], "y"]
    return model_of([helper.make_node("Relu", [tensors[i]], [tensors[i + 1]], name=names[i]) for i in range(length)])


def test_an_op_keyed_rule_is_a_documented_function_named_after_it():
    assert relu_of_relu.name == "relu-of-relu" and relu_of_relu.ops == frozenset({"Relu"})
    assert relu_of_relu.describe() == "Relu(Relu(x)) -> Relu(x)."
    with pytest.raises(ValueError, match="docstring"):
        rule("Relu")(lambda ctx, node: False)


def test_sweeps_repeat_until_a_sweep_changes_nothing():
    model = relu_chain(4)
    rounds = []
    reports = apply_rules([drop_relu_reader], RewriteContext(model), sweep=True, rounds=8, after_round=rounds.append)
    assert [n.name for n in model.graph.nodes] == ["r0"] and reports["drop-relu-reader"].fired == 3
    assert rounds == [1, 2] and [t.name for t in model.graph.outputs] == ["y"]


def test_rounds_bound_the_sweeps():
    model = relu_chain(4)
    reports = apply_rules([drop_relu_reader], RewriteContext(model), sweep=True, rounds=1)
    assert reports["drop-relu-reader"].fired == 2 and [n.name for n in model.graph.nodes] == ["r0", "r2"]


def test_in_a_sweep_the_first_rule_of_the_list_wins_on_a_node():
    model = relu_chain(1)
    reports = apply_rules([first_relu, relu_of_relu], RewriteContext(model), sweep=True)
    assert [n.op for n in model.graph.nodes] == ["Abs"] and reports["first-relu"].fired == 1 and reports["relu-of-relu"].fired == 0


def test_rule_by_rule_runs_each_rule_over_the_graph_in_list_order():
    model = relu_chain(2)
    fired_after = []
    reports = apply_rules([relu_of_relu, first_relu], RewriteContext(model), after_rule=lambda item: fired_after.append(item.name))
    assert [n.op for n in model.graph.nodes] == ["Abs"]
    assert fired_after == ["relu-of-relu", "first-relu"] and reports["relu-of-relu"].fired == 1


def test_scope_limits_the_nodes_rules_are_tried_on():
    model = relu_chain(3)
    scope = [node for node in model.graph.nodes if node.name == "r2"]
    reports = apply_rules([relu_of_relu], RewriteContext(model, scope=scope), sweep=True, rounds=8)
    assert reports["relu-of-relu"].fired == 1 and [n.name for n in model.graph.nodes] == ["r0", "r1"]


def test_an_op_keyed_near_miss_is_reported_with_its_node_and_no_match_is_silent():
    model = relu_chain(2, names=["refuse", "outer"])
    report = apply_rules([relu_of_relu], RewriteContext(model))["relu-of-relu"]
    assert report.fired == 0
    assert [(m.code, m.node, m.fix, m.severity) for m in report.near_misses] == [("named", "outer", "rename it", "warning")]
    assert report.as_dict()["near_misses"][0]["message"] == "the inner Relu is called refuse"


def test_a_bypass_that_would_rename_a_graph_input_is_refused():
    model = model_of([helper.make_node("Identity", ["x"], ["y"])])
    ctx = RewriteContext(model)
    assert not ctx.bypass(model.graph.nodes[0], model.graph.inputs[0])
    assert len(model.graph.nodes) == 1


@rule("Relu", last_first=False)
def name_in_graph_order(ctx: RewriteContext, node: gs.Node) -> bool:
    """Every Relu: remarks its name, to show the order a rule visits its anchors in."""
    ctx.remark("visited", f"visited {node.name}", node=f"seen:{node.name}", severity="info")
    return node.name == "r1"


def test_an_op_keyed_rule_reports_its_remarks_fired_or_not_with_their_own_node_and_severity():
    report = apply_rules([name_in_graph_order], RewriteContext(relu_chain(3)))["name-in-graph-order"]
    assert report.fired == 1
    assert [(m.message, m.node, m.severity) for m in report.near_misses] == [
        ("visited r0", "seen:r0", "info"), ("visited r1", "seen:r1", "info"), ("visited r2", "seen:r2", "info")]


def test_a_rule_may_fix_its_own_visiting_order():
    def visited(item, last_first):
        report = apply_rules([item], RewriteContext(relu_chain(2)), last_first=last_first)[item.name]
        return [m.node for m in report.near_misses]

    backwards = rule("Relu", name="backwards", last_first=True)(name_in_graph_order.function)
    assert visited(name_in_graph_order, True) == ["seen:r0", "seen:r1"]
    assert visited(backwards, False) == ["seen:r1", "seen:r0"]
