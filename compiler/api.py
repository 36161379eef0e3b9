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
from collections import Counter
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
from .passes.fix_shapes import check_dim_names, resolve_dims
from .pipeline import PassManager, PassRecord, ProgressHook, StepSpec
from .verify import Tolerance, Verifier


#: The target-independent simplification group: each stage joins when its pass is registered.
SIMPLIFY = ("fix-shapes", "fold-constants", "peephole", "cleanup")


def default_pipeline(
    *,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    require_static: bool = False,
) -> str:
    """The target-independent pipeline ``mapc compile`` runs without ``--passes``.

    Takes the compile's options. The simplification group runs to a fixed point:
    ``fix-shapes`` (only when shapes or dims were given; it reads them from the compile),
    ``fold-constants``, ``peephole``, ``cleanup``; each round's folding makes more shapes static
    for the next. When shapes were given, ``check-static`` then reports every tensor still
    dynamic (``require_static`` makes that an error). Later stages (fusion, attention masks,
    quantization) append after the group.
    """
    shapes_given = bool(dims or input_shapes)
    simplify = [name for name in SIMPLIFY if has_pass(name) and (name != "fix-shapes" or shapes_given)]
    stages = [f"fixpoint({','.join(simplify)})"] if simplify else []
    if (shapes_given or require_static) and has_pass("check-static"):
        stages.append("check-static{require=true}" if require_static else "check-static")
    return ",".join(stages)


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
    ops_before: dict[str, int] = field(default_factory=dict)

    @property
    def nodes_after(self) -> int:
        return count_nodes(self.model.graph)

    @property
    def op_changes(self) -> dict[str, int]:
        """Per op type, how many more (positive) or fewer (negative) nodes the result has."""
        after = op_histogram(self.model)
        changes = {op: after.get(op, 0) - self.ops_before.get(op, 0) for op in {*after, *self.ops_before}}
        return dict(sorted(((op, n) for op, n in changes.items() if n), key=lambda item: (item[1], item[0])))

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
            "op_changes": self.op_changes,
            "seconds": round(sum(record.seconds for record in self.passes), 6),
            "passes": [record.as_dict() for record in self.passes],
        }
        if self.verification is not None:
            report["verification"] = self.verification
        return report

    def save(self, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
        """Write the compiled model (see :func:`mapc.ir.save`)."""
        return save(self.model, path, external_data=external_data)


def op_histogram(model: Model) -> dict[str, int]:
    """Nodes per op type, subgraphs included (custom ops as ``domain::Op``)."""
    graphs = [model.graph, *model.graph.subgraphs(recursive=True)]
    return dict(Counter(node.op if node.domain in (None, "", "ai.onnx") else f"{node.domain}::{node.op}" for g in graphs for node in g.nodes))


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
    require_static: bool = False,
    verify_inputs: Mapping[str, np.ndarray] | None = None,
    tolerance: Tolerance | None = None,
    on_pass_start: ProgressHook | None = None,
    on_progress: Callable[[str, int | None, int | None], None] | None = None,
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
        require_static: fail with :class:`~mapc.errors.CheckFailed` unless every tensor of the
            result has a static shape (``check-static{require=true}`` runs last).
        verify_inputs: explicit verification inputs (instead of seeded random ones).
        tolerance: float tolerance overriding the per-dtype defaults of :mod:`mapc.verify`.
        on_pass_start: called with each pass name as it starts (progress display).
        on_progress: called by long passes as ``(description, done, total)`` (progress display).
    """
    if target is not None:
        raise UsageError(f"unknown target {target!r}: no targets are available in this version")
    working = model if isinstance(model, Model) else load(model)
    if dims:
        check_dim_names(working.graph, dims)
    source = str(working.source_path) if working.source_path else None
    ctx = PassContext(
        seed=seed,
        dims=dict(dims or {}),
        input_shapes={name: [int(d) for d in shape] for name, shape in (input_shapes or {}).items()},
        progress=on_progress,
    )
    if passes is None:
        pipeline_spec: str | Sequence[StepSpec] = default_pipeline(dims=dims, input_shapes=input_shapes, require_static=require_static)
    elif require_static:
        pipeline_spec = [*([passes] if isinstance(passes, str) else passes), ("check-static", {"require": True})]
    else:
        pipeline_spec = passes
    manager = PassManager(pipeline_spec, verify_each=verify_each, on_pass_start=on_pass_start)
    verifier = None
    if verify_each or verify:
        # Reference inputs follow every fixed dim, also those implied by a given input shape.
        implied = resolve_dims(working.graph, ctx.input_shapes, ctx.dims) if ctx.input_shapes else ctx.dims
        reference_ctx = PassContext(seed=seed, dims=implied, input_shapes=ctx.input_shapes)
        verifier = Verifier(working, reference_ctx, feeds=verify_inputs, tolerance=tolerance)
        manager.verifier = verifier
    nodes_before = count_nodes(working.graph)
    ops_before = op_histogram(working)
    records = manager.run(working, ctx)
    result = CompileResult(
        model=working,
        passes=records,
        pipeline=manager.text,
        nodes_before=nodes_before,
        ops_before=ops_before,
        source=source,
        options={"seed": seed, "dims": ctx.dims, "input_shapes": ctx.input_shapes, "require_static": require_static, "verify_each": verify_each},
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
