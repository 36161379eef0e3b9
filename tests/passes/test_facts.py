"""The pass contract: required facts are established or demanded, provided facts are checked."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from mapc.ir import load
from mapc.ir.errors import UsageError
from mapc.passes import SHAPES, Fact, Facts, Pass, PassContext, PassResult
from mapc.passes.pipeline import PassCrashed, PassManager
from tests.conftest import make_model

F = TensorProto.FLOAT
PLAN: Fact[str] = Fact("toy-plan", "the toy plan", provided_by="toy-planner")


def relu_model():
    return load(make_model(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, ["n", 3])],
    ))


class ToyPlanner(Pass):
    """Sets the toy plan."""

    name = "toy-planner"
    provides = (PLAN,)

    def run(self, model, ctx):
        ctx.facts[PLAN] = "plan"
        return PassResult(changed=False)


class ToyUser(Pass):
    """Reads the toy plan."""

    name = "toy-user"
    requires = (PLAN,)

    def run(self, model, ctx):
        return PassResult(changed=False, details={"plan": ctx.facts[PLAN]})


class ForgetfulPlanner(ToyPlanner):
    """Promises the toy plan and forgets it."""

    name = "forgetful-planner"

    def run(self, model, ctx):
        return PassResult(changed=False)


class ShapeReader(Pass):
    """Records the shape of ``a`` it finds."""

    name = "shape-reader"
    requires = (SHAPES,)

    def run(self, model, ctx):
        tensor = model.graph.tensors()["a"]
        return PassResult(changed=False, details={"shape": list(tensor.shape) if tensor.shape else None, "ok": ctx.facts[SHAPES].ok})


def test_facts_are_typed_slots_keyed_by_fact_not_by_string():
    facts = Facts()
    assert facts.get(PLAN) is None and PLAN not in facts
    facts[PLAN] = "p"
    assert facts[PLAN] == "p" and PLAN in facts and "toy-plan" not in facts
    assert facts.setdefault(PLAN, "other") == "p"
    facts.discard(PLAN)
    with pytest.raises(KeyError, match="toy-plan"):
        facts[PLAN]


def test_a_provided_fact_reaches_the_pass_that_requires_it():
    records = PassManager([ToyPlanner(), ToyUser()]).run(relu_model())
    assert records[1].details == {"plan": "plan"}


def test_a_required_fact_nobody_provided_is_a_usage_error_naming_the_provider():
    with pytest.raises(UsageError, match="pass 'toy-user' needs the toy plan: run 'toy-planner' before it"):
        PassManager([ToyUser()]).run(relu_model())


def test_a_pass_that_does_not_set_what_it_provides_crashes_with_its_name():
    with pytest.raises(PassCrashed, match="forgetful-planner.*toy-plan"):
        PassManager([ForgetfulPlanner()]).run(relu_model())


def test_shapes_are_established_by_the_manager_and_inferred_once_while_the_graph_is_unchanged(monkeypatch):
    import mapc.passes.shape_ops as shape_ops

    calls = []
    real = shape_ops.infer_shapes
    monkeypatch.setattr(shape_ops, "infer_shapes", lambda model, **kw: calls.append(1) or real(model, **kw))
    model = relu_model()
    ctx = PassContext()
    records = PassManager([ShapeReader(), ShapeReader()]).run(model, ctx)
    assert [r.details for r in records] == [{"shape": [2, 3], "ok": True}] * 2
    assert len(calls) == 1  # the second pass finds the shapes current
    model.graph.nodes[1].op = "Abs"  # a structural change makes the next pass re-infer
    PassManager([ShapeReader()]).run(model, ctx)
    assert len(calls) == 2
