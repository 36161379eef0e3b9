"""mapc.testing itself: generated models are valid, and the checker catches broken passes."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from mapc.ir import load, run, seeded_inputs
from mapc.passes import register_pass
from mapc.testing import ALL_FAMILIES, assert_pass_preserves, onnx_models
from tests.conftest import append_to_first_output, make_model


@given(onnx_models())
def test_generated_models_are_valid_and_run_for_any_symbolic_dim(model):
    onnx.checker.check_model(model, full_check=True)
    loaded = load(model)
    run(loaded, seeded_inputs(loaded))
    run(loaded, seeded_inputs(loaded, dims={"N": 3}))


@pytest.mark.parametrize("family", ALL_FAMILIES)
@settings(max_examples=15)
@given(data=st.data())
def test_every_family_generates_its_ops(family, data):
    model = data.draw(onnx_models(families=(family,), max_ops=3))
    onnx.checker.check_model(model, full_check=True)
    loaded = load(model)
    run(loaded, seeded_inputs(loaded))


def _fixed_model():
    return make_model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )


def test_checker_catches_a_pass_that_changes_results(registry):
    @register_pass(name="drop-relu")
    def drop_relu(model, ctx, options):
        """Wrongly removes the Relu."""
        relu = next(n for n in model.graph.nodes if n.op == "Relu")
        neg = next(n for n in model.graph.nodes if n.op == "Neg")
        neg.inputs[0] = relu.inputs[0]
        model.graph.cleanup()
        return True

    with pytest.raises(AssertionError, match="output 'y' changed"):
        assert_pass_preserves(_fixed_model(), "drop-relu")


def test_checker_catches_a_pass_that_is_not_idempotent(registry):
    @register_pass(name="append-identity")
    def append_identity(model, ctx, options):
        """Adds an Identity before the output every time (never reaches a fixed point)."""
        append_to_first_output(model, "Identity")
        return True

    with pytest.raises(AssertionError, match="not idempotent"):
        assert_pass_preserves(_fixed_model(), "append-identity")


def test_checker_catches_a_nondeterministic_pass(registry):
    counter = itertools.count()

    @register_pass(name="random-names")
    def random_names(model, ctx, options):
        """Renames a tensor differently on every call."""
        model.graph.nodes[0].outputs[0].name = f"r{next(counter)}"
        return False

    with pytest.raises(AssertionError, match="not deterministic"):
        assert_pass_preserves(_fixed_model(), "random-names")


def test_checker_catches_an_invalid_result(registry):
    @register_pass(name="dangling")
    def dangling(model, ctx, options):
        """Reads a tensor nobody produces."""
        model.graph.nodes[0].inputs[0] = gs.Variable("nowhere", dtype=np.float32, shape=[2, 3])
        return True

    with pytest.raises(AssertionError, match="invalid|does not run"):
        assert_pass_preserves(_fixed_model(), "dangling")
