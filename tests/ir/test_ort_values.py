"""Sessions on element types onnxruntime's numpy bridge lacks: bfloat16 in, bfloat16 out."""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import TensorProto, helper

from mapc.ir import run
from mapc.ir.ort_values import is_bridged
from tests.conftest import make_model


def test_bfloat16_feeds_and_outputs_round_trip_exactly():
    model = make_model(
        [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT), helper.make_node("Cast", ["f"], ["y"], to=TensorProto.BFLOAT16)],
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 3]), helper.make_tensor_value_info("f", TensorProto.FLOAT, [2, 3])],
    )
    x = np.array([[1.5, -2.25, 3e30], [0.0, -0.0, 7.0]], dtype=ml_dtypes.bfloat16)
    result = run(model, {"x": x})
    assert result["y"].dtype == np.dtype(ml_dtypes.bfloat16) and result["y"].shape == (2, 3)
    np.testing.assert_array_equal(result["y"].astype(np.float32), x.astype(np.float32))
    np.testing.assert_array_equal(result["f"], x.astype(np.float32))


def test_only_unpacked_ml_dtypes_floats_are_bridged():
    assert is_bridged(np.dtype(ml_dtypes.bfloat16)) and is_bridged(np.dtype(ml_dtypes.float8_e4m3fn))
    assert not is_bridged(np.dtype(np.float16)) and not is_bridged(np.dtype(ml_dtypes.int4))
