"""Comparing two models' outputs, and checking a model's structure with the onnx checker.

:func:`compare_outputs` judges outputs by name: integer and boolean outputs must be identical;
floating-point ones (ml_dtypes' bfloat16 and float8 included) must agree elementwise within
``atol·m + rtol·|expected|``, where ``m`` is the output's largest finite magnitude (1 when it is all zeros), with NaN and infinities in the same
places. ``atol`` is thus relative to the output's scale: an output of size 1e-3 is held to
1e-8, not to 1e-5 (a 1% error), and one of size 1e6 is not held to below its float resolution. Default tolerances per element type are in :data:`TOLERANCES`.
:func:`check_valid` runs the onnx checker on a weight-free skeleton.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnx.checker

from mapc.ir.errors import VerificationError
from mapc.ir.model import Model
from mapc.ir.onnx_check import checker_skeleton
from mapc.ir.shapes import SKELETON_INLINE_BYTES


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


#: Float tolerances by dtype name; anything not listed is compared exactly.
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(rtol=1e-7, atol=1e-9),
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
    "float16": Tolerance(rtol=1e-2, atol=1e-3),
    "bfloat16": Tolerance(rtol=2e-2, atol=1e-2),
}


@dataclass
class OutputComparison:
    """How one output of the rewritten model compares with the reference."""

    name: str
    ok: bool
    max_abs_error: float
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"output": self.name, "ok": self.ok, "max_abs_error": self.max_abs_error}
        if self.problem:
            record["problem"] = self.problem
        return record


def compare_outputs(
    expected: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    *,
    tolerance: Tolerance | None = None,
) -> list[OutputComparison]:
    """Compare outputs by name; ``tolerance`` overrides the per-dtype defaults for floats."""
    results = []
    for name, reference in expected.items():
        if name not in actual:
            results.append(OutputComparison(name, False, float("inf"), "output is missing"))
            continue
        results.append(_compare(name, np.asarray(reference), np.asarray(actual[name]), tolerance))
    return results


def _compare(name: str, reference: np.ndarray, value: np.ndarray, tolerance: Tolerance | None) -> OutputComparison:
    if reference.shape != value.shape:
        return OutputComparison(name, False, float("inf"), f"shape {list(value.shape)} != expected {list(reference.shape)}")
    if reference.dtype != value.dtype:
        return OutputComparison(name, False, float("inf"), f"dtype {value.dtype} != expected {reference.dtype}")
    if reference.size == 0:
        return OutputComparison(name, True, 0.0)
    if not _is_float(reference.dtype):
        if reference.dtype == object:
            same = bool(np.all(reference == value))
        else:
            same = bool(np.array_equal(reference, value))
        error = 0.0 if same else _int_error(reference, value)
        return OutputComparison(name, same, error, None if same else "values differ (exact match required)")
    limits = tolerance or TOLERANCES.get(reference.dtype.name, TOLERANCES["float32"])
    ref = reference.astype(np.float64)
    val = value.astype(np.float64)
    nan_mismatch = np.isnan(ref) != np.isnan(val)
    inf_mismatch = np.isinf(ref) & (ref != val)
    finite = np.isfinite(ref) & np.isfinite(val)
    difference = np.abs(np.subtract(ref, val, where=finite, out=np.zeros_like(ref)))
    max_error = float(difference.max()) if difference.size else 0.0
    if nan_mismatch.any() or inf_mismatch.any() or (np.isinf(val) & np.isfinite(ref)).any():
        return OutputComparison(name, False, float("inf"), "NaN or infinity where the reference has none (or vice versa)")
    magnitude = float(np.abs(ref[np.isfinite(ref)]).max(initial=0.0)) or 1.0
    atol = limits.atol * magnitude
    within = (difference <= atol + limits.rtol * np.abs(ref, where=finite, out=np.zeros_like(ref))) | ~finite
    ok = bool(within.all())
    problem = None if ok else f"max abs error {max_error:.3g} exceeds atol {limits.atol:g}·{magnitude:.3g} (the output's largest magnitude) + rtol {limits.rtol:g}·|expected|"
    return OutputComparison(name, ok, max_error, problem)


def _is_float(dtype: np.dtype) -> bool:
    """numpy's floats and ml_dtypes' (bfloat16, the float8 and float4 types, whose kind is 'V')."""
    if dtype.kind in "fc":
        return True
    try:
        ml_dtypes.finfo(dtype)
    except (TypeError, ValueError):
        return False
    return True


def _int_error(reference: np.ndarray, value: np.ndarray) -> float:
    if reference.dtype.kind in "iub":
        return float(np.abs(reference.astype(np.float64) - value.astype(np.float64)).max())
    return float("inf")


def check_valid(model: Model) -> None:
    """Raise :class:`VerificationError` unless the onnx checker accepts ``model``'s structure."""
    try:
        onnx.checker.check_model(_checkable(model))
    except (onnx.checker.ValidationError, onnx.defs.SchemaError) as error:
        raise VerificationError(f"the model is not valid ONNX: {str(error).strip().splitlines()[0]}") from None


def _checkable(model: Model) -> onnx.ModelProto:
    """The weight-free skeleton the checker judges, as load judged the input: default-domain ops
    onnxruntime runs but onnx has no schema for (SimplifiedLayerNormalization) pass here too."""
    return checker_skeleton(model.to_proto(weights_above=SKELETON_INLINE_BYTES))
