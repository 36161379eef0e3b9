"""mapc.ir.Runner: one onnxruntime session for many runs, any tensor as an output."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import mapc.ir.evaluate as evaluate
from mapc.ir import Runner, load
from tests.conftest import make_model


def chain():
    return make_model(
        [helper.make_node("Mul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(np.full((2, 3), -2.0, np.float32), "w")],
    )


def test_exposes_intermediate_tensors_and_returns_subsets_per_run():
    runner = Runner(load(chain()), ["m", "y"])
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    both = runner.run({"x": x, "unused": x})
    np.testing.assert_array_equal(both["m"], x * -2)
    np.testing.assert_array_equal(both["y"], np.maximum(x * -2, 0))
    assert list(runner.run({"x": x}, ["y"])) == ["y"]


def test_a_model_too_large_for_one_protobuf_is_spilled_to_external_data(monkeypatch):
    model = load(chain())
    model.graph.tensors()["w"].values = np.full((2, 3), 3.0, np.float32)  # an in-memory weight, as passes write
    monkeypatch.setattr(evaluate, "INLINE_LIMIT", 8)
    runner = Runner(model)
    assert runner._spill is not None
    np.testing.assert_array_equal(runner.run({"x": np.ones((2, 3), np.float32)})["y"], np.full((2, 3), 3.0))
