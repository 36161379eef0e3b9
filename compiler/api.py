"""The Python API: ``mapc.compile``.

    >>> import mapc
    >>> result = mapc.compile("model.onnx", verify=True)
    >>> result.save("model.mapc.onnx")
    >>> result.report["passes"][0]["nodes_after"]

``compile`` loads the model (unless given a :class:`~mapc.ir.Model`), runs a pipeline of passes
on it (the default, target-independent one unless ``passes`` is given), optionally checks the
result against the input model, and returns a :class:`CompileResult`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import UsageError, VerificationError
from .ir import Model, count_nodes, load, save
from .ir.model import ModelSource
from .passes import PassContext, has_pass
from .pipeline import PassManager, PassRecord, ProgressHook, StepSpec
from .verify import Tolerance, Verifier


def default_pipeline() -> str:
    """The target-independent pipeline ``mapc compile`` runs without ``--passes``.

    Each stage joins when its pass is registered, so the pipeline grows as passes land.
    Quantization joins only when asked for (``compile(quantize=...)``, ``--quantize``).
    """
    stages = [name for name in ("cleanup",) if has_pass(name)]
    return ",".join(stages)


def with_quantization(pipeline: str | Sequence[StepSpec], quantize: Mapping[str, Any] | None) -> str | list[StepSpec]:
    """``pipeline`` followed by the ``quantize`` stage with ``quantize``'s options (if given)."""
    if quantize is None:
        return pipeline
    steps: list[StepSpec] = [pipeline] if isinstance(pipeline, str) else list(pipeline)
    return [*steps, ("quantize", {key: value for key, value in quantize.items() if value is not None})]


@dataclass
class CompileResult:
    """The outcome of :func:`compile`: the compiled model, what each pass did, and checks."""

    model: Model
    passes: list[PassRecord]
    pipeline: str
    nodes_before: int
    source: str | None = None
    verification: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def nodes_after(self) -> int:
        return count_nodes(self.model.graph)

    @property
    def report(self) -> dict[str, Any]:
        """A JSON-able report: input, pipeline, per-pass records, totals and verification."""
        report: dict[str, Any] = {
            "mapc_version": __version__,
            "input": self.source,
            "pipeline": self.pipeline,
            "options": self.options,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "seconds": round(sum(record.seconds for record in self.passes), 6),
            "passes": [record.as_dict() for record in self.passes],
        }
        if self.verification is not None:
            report["verification"] = self.verification
        return report

    def save(self, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
        """Write the compiled model (see :func:`mapc.ir.save`)."""
        return save(self.model, path, external_data=external_data)


def compile(
    model: ModelSource | Model,
    *,
    target: str | None = None,
    passes: str | Sequence[StepSpec] | None = None,
    verify_each: bool = False,
    verify: bool = False,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    verify_inputs: Mapping[str, np.ndarray] | None = None,
    tolerance: Tolerance | None = None,
    on_pass_start: ProgressHook | None = None,
    on_progress: Callable[[str, int | None, int | None], None] | None = None,
    quantize: Mapping[str, Any] | None = None,
) -> CompileResult:
    """Compile ``model`` and return the result; the input file is never modified.

    Args:
        model: a path, serialized bytes, a ModelProto, or a :class:`~mapc.ir.Model` (edited in place).
        target: name of a target backend; none is available yet.
        passes: pipeline string or list (see :mod:`mapc.pipeline`); default :func:`default_pipeline`.
        verify_each: after every pass, check validity and outputs against the input model and
            raise :class:`~mapc.errors.VerificationError` naming the first pass that broke it.
        verify: compare the final model with the input model, recorded in ``result.verification``;
            on a mismatch raises :class:`~mapc.errors.VerificationError` whose ``result`` holds the result.
        seed: seed for generated verification inputs.
        dims: values for symbolic dims, by name (used for verification inputs and shape passes).
        input_shapes: concrete shapes for graph inputs, by name.
        verify_inputs: explicit verification inputs (instead of seeded random ones).
        tolerance: float tolerance overriding the per-dtype defaults of :mod:`mapc.verify`.
        on_pass_start: called with each pass name as it starts (progress display).
        on_progress: called by long passes with ``(description, done, total)``.
        quantize: options of the ``quantize`` pass (``{"scheme": "a8w8", "calibration": ...}``);
            when given, quantization runs after the pipeline. A quantized model is checked by
            its accuracy report (see docs/passes/quantization.md), not by ``verify``, whose
            float tolerances quantization cannot meet.
    """
    if target is not None:
        raise UsageError(f"unknown target {target!r}: no targets are available in this version")
    if quantize is not None and (verify or verify_each):
        raise UsageError("verify compares outputs within float tolerances, which quantization cannot meet; a quantized model is checked by its accuracy report (accuracy_target)")
    working = model if isinstance(model, Model) else load(model)
    source = str(working.source_path) if working.source_path else None
    ctx = PassContext(
        seed=seed,
        dims=dict(dims or {}),
        input_shapes={name: [int(d) for d in shape] for name, shape in (input_shapes or {}).items()},
        progress=on_progress,
    )
    pipeline_spec = with_quantization(passes if passes is not None else default_pipeline(), quantize)
    manager = PassManager(pipeline_spec, verify_each=verify_each, on_pass_start=on_pass_start)
    verifier = None
    if verify_each or verify:
        verifier = Verifier(working, ctx, feeds=verify_inputs, tolerance=tolerance)
        manager.verifier = verifier
    nodes_before = count_nodes(working.graph)
    records = manager.run(working, ctx)
    result = CompileResult(
        model=working,
        passes=records,
        pipeline=manager.text,
        nodes_before=nodes_before,
        source=source,
        options={"seed": seed, "dims": ctx.dims, "input_shapes": ctx.input_shapes, "verify_each": verify_each, "quantize": dict(quantize) if quantize else None},
    )
    if verify and verifier is not None:
        comparisons = verifier.compare(working)
        result.verification = {
            "ok": all(c.ok for c in comparisons),
            "outputs": [c.as_dict() for c in comparisons],
        }
        failed = [c for c in comparisons if not c.ok]
        if failed:
            error = VerificationError(
                f"the compiled model differs from the input: output {failed[0].name!r}: {failed[0].problem}"
            )
            error.result = result  # type: ignore[attr-defined]
            raise error
    return result
