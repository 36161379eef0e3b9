"""check_compiled: a compiled model that fails the onnx check is mapc's bug when its input runs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from mapc.ir import load
from mapc.output_check import check_compiled
from tests.conftest import make_model


def test_an_invalid_result_of_a_runnable_input_is_an_internal_error(tmp_path):
    path = tmp_path / "model.onnx"
    proto = make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    path.write_bytes(proto.SerializeToString())
    model = load(path)
    check_compiled(model)  # a valid result passes
    model.graph.outputs[0].dtype = np.int64  # as if a pass had broken the output type
    with pytest.raises(RuntimeError, match="the compiled model is no longer valid: invalid ONNX model"):
        check_compiled(model)
