"""Differential verification of a compile: does each rewritten model still compute what the input did?

:class:`Verifier` runs the input model once in onnxruntime on the verification inputs and keeps
the outputs; :meth:`Verifier.check` validates a rewritten model (onnx checker, onnxruntime
loads it) and compares its outputs on the same inputs with :func:`mapc.ir.compare.compare_outputs`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mapc.ir import Model, OnnxRuntimeError, OutputComparison, Tolerance, VerificationError, check_valid, compare_outputs, run, seeded_inputs
from mapc.passes.base import PassContext
from mapc.passes.facts import Fact

#: ``hook(model, feeds, outputs) -> {output name: bool array}``: the elements of each output that
#: are undefined for these inputs (True = leave out of the comparison).
UndefinedElements = Callable[[Model, Mapping[str, np.ndarray], Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]

#: Output elements the rewritten model leaves undefined, by the pass that says so
#: (attention-mask: rows whose every key is masked).
UNDEFINED_OUTPUTS: Fact[dict[str, UndefinedElements]] = Fact("undefined-outputs", "output elements a pass made undefined")

#: The user's own input samples (``--verify-inputs``, else a ``--calibration`` folder), set by the
#: compile before the passes run: verification runs on them, and passes may measure ranges on them.
SAMPLES: Fact[list[dict[str, np.ndarray]]] = Fact("samples", "input samples the user gave")


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

        Elements a pass declared undefined in :data:`UNDEFINED_OUTPUTS` are left out
        (attention-mask declares fully masked attention rows)."""
        actual = run(model, self.feeds)
        expected = self.expected
        for hook in list(self.ctx.facts.get(UNDEFINED_OUTPUTS, {}).values()):
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
