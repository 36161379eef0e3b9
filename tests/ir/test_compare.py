"""compare_outputs: exact integers, float tolerances scaled by the output, NaN in the same places."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from mapc.ir import compare_outputs


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2fnuz])
def test_nan_in_the_same_places_is_equal_for_every_float_type(dtype):
    """Found by the wild benchmark (onnx's test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FN): float8
    and bfloat16 have numpy kind 'V', were compared bit for bit, and NaN never equals NaN, so
    ``--verify`` failed an unchanged model."""
    value = np.array([1.0, np.nan, -2.0], dtype=np.float32).astype(dtype)
    assert compare_outputs({"y": value}, {"y": value.copy()})[0].ok


def test_bfloat16_is_held_to_its_tolerance_not_to_bit_equality():
    expected = np.array([1.0, 2.0, 100.0], dtype=ml_dtypes.bfloat16)
    close = np.array([1.0, 2.0, 100.5], dtype=np.float32).astype(ml_dtypes.bfloat16)
    far = np.array([1.0, 10.0, 100.0], dtype=ml_dtypes.bfloat16)  # 8 > atol 1e-2·100 + rtol 2e-2·2
    assert compare_outputs({"y": expected}, {"y": close})[0].ok
    assert not compare_outputs({"y": expected}, {"y": far})[0].ok


def test_integers_stay_exact():
    assert not compare_outputs({"y": np.array([1, 2], np.int64)}, {"y": np.array([1, 3], np.int64)})[0].ok
