"""Differential verification: does a rewritten model still compute what the input model did?

:class:`Verifier` runs the input model once in onnxruntime on seeded inputs and keeps the
outputs. :meth:`Verifier.check` then validates a rewritten model (onnx checker, onnxruntime
loads it) and compares its outputs on the same inputs: integer and boolean outputs must be
identical; floating-point ones must agree elementwise within ``atol + rtol * |expected|``, with
NaN and infinities in the same places. Default tolerances per element type are in
:data:`TOLERANCES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx.checker

from .errors import VerificationError
from .ir import Model, OnnxRuntimeError, run, seeded_inputs
from .ir.shapes import SKELETON_INLINE_BYTES
from .passes.base import PassContext


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
    if reference.dtype.kind not in "fc":
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
    within = (difference <= limits.atol + limits.rtol * np.abs(ref, where=finite, out=np.zeros_like(ref))) | ~finite
    ok = bool(within.all())
    problem = None if ok else f"max abs error {max_error:.3g} exceeds atol {limits.atol:g} + rtol {limits.rtol:g}·|expected|"
    return OutputComparison(name, ok, max_error, problem)


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
    return model.to_proto(weights_above=SKELETON_INLINE_BYTES)


class Verifier:
    """Reference outputs of the input model, and the check every rewritten model must pass."""

    def __init__(
        self,
        model: Model,
        ctx: PassContext,
        *,
        feeds: Mapping[str, np.ndarray] | None = None,
        tolerance: Tolerance | None = None,
    ) -> None:
        self.feeds = dict(feeds) if feeds is not None else seeded_inputs(
            model, seed=ctx.seed, dims=ctx.dims, shapes=ctx.input_shapes
        )
        self.tolerance = tolerance
        self.ctx = ctx
        try:
            self.expected = run(model, self.feeds)
        except OnnxRuntimeError as error:
            raise OnnxRuntimeError(f"cannot verify: the input model does not run ({error})") from None

    def compare(self, model: Model) -> list[OutputComparison]:
        """Run ``model`` on the reference inputs and compare (no exception on mismatch).

        Elements a pass declared undefined are left out: a pass may put a callable
        ``verify_ignore(model, feeds, outputs) -> {output: bool array}`` in its
        ``ctx.facts[name]`` (attention-mask does, for fully masked attention rows)."""
        actual = run(model, self.feeds)
        expected = self.expected
        for facts in list(self.ctx.facts.values()):
            hook = facts.get("verify_ignore") if isinstance(facts, dict) else None
            if hook is None:
                continue
            for name, ignored in hook(model, self.feeds, actual).items():
                if name in expected and name in actual:
                    expected = {**expected, name: np.where(ignored, np.zeros((), expected[name].dtype), expected[name])}
                    actual = {**actual, name: np.where(ignored, np.zeros((), actual[name].dtype), actual[name])}
        return compare_outputs(expected, actual, tolerance=self.tolerance)

    def check(self, model: Model, *, pass_name: str | None = None) -> dict[str, Any]:
        """Validate ``model`` and compare its outputs; raise :class:`VerificationError` naming
        ``pass_name`` on the first problem, else return a JSON-able summary."""
        blame = f"after pass {pass_name!r}: " if pass_name else ""
        try:
            check_valid(model)
            comparisons = self.compare(model)
        except (VerificationError, OnnxRuntimeError) as error:
            raise VerificationError(f"{blame}{error}", pass_name=pass_name) from None
        for comparison in comparisons:
            if not comparison.ok:
                raise VerificationError(
                    f"{blame}output {comparison.name!r} changed: {comparison.problem}", pass_name=pass_name
                )
        return {
            "ok": True,
            "max_abs_error": max((c.max_abs_error for c in comparisons), default=0.0),
            "outputs": [c.as_dict() for c in comparisons],
        }
