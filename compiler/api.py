"""The Python API: ``mapc.compile``.

    >>> import mapc
    >>> result = mapc.compile("model.onnx", verify=True)
    >>> result.save("model.mapc.onnx")
    >>> result.report["passes"][0]["nodes_after"]
    >>> npu = mapc.compile("model.onnx", target="npu")        # partition and lower for a target
    >>> npu.report["coverage"]["nodes_on_target"], npu.report["estimate"]["target_ms"]

``compile`` loads the model (unless given a :class:`~mapc.ir.Model`), runs a pipeline of passes
on it (the default, target-independent one unless ``passes`` is given), then, for a target,
the ``partition`` and ``lower`` passes; optionally checks the result against the input model,
and returns a :class:`CompileResult`.
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
from .passes import Pass, PassContext, get_pass, has_pass
from .pipeline import Fixpoint, PassManager, PassRecord, ProgressHook, Step, StepSpec, build_pipeline, with_pass_options
from .targets import Plan, Target, emit_partitions, get_target, plan_report
from .targets.passes import PLAN_FACT, Partition
from .verify import Tolerance, Verifier

#: Version of the report's keys (docs/report-schema.md); bumped only if a key is removed or changes meaning.
REPORT_SCHEMA_VERSION = 1

ProgressCallback = Callable[[str, "int | None", "int | None"], None]


def default_pipeline() -> str:
    """The target-independent pipeline ``mapc compile`` runs without ``--passes``.

    Each stage joins when its pass is registered, so the pipeline grows as passes land.
    ``attention-mask`` runs after shape fixing, folding and fusion (it sees folded masks and
    fused ``Attention`` ops).
    """
    stages = [name for name in ("cleanup", "fuse", "attention-mask", "cleanup") if has_pass(name)]
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
    plan: Plan | None = None
    #: What the passes told later passes and the caller (``PassContext.facts``), by pass name.
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def nodes_after(self) -> int:
        return count_nodes(self.model.graph)

    @property
    def report(self) -> dict[str, Any]:
        """A JSON-able report: input, pipeline, per-pass records, totals and verification."""
        report: dict[str, Any] = {
            "schema_version": REPORT_SCHEMA_VERSION,
            "mapc_version": __version__,
            "input": self.source,
            "pipeline": self.pipeline,
            "options": self.options,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "seconds": round(sum(record.seconds for record in self.passes), 6),
            "passes": [record.as_dict() for record in self.passes],
        }
        if self.plan is not None:
            report.update(plan_report(self.plan))
        if self.verification is not None:
            report["verification"] = self.verification
        return report

    @property
    def target(self) -> Target | None:
        return self.plan.target if self.plan is not None else None

    def save(self, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
        """Write the compiled model (see :func:`mapc.ir.save`)."""
        return save(self.model, path, external_data=external_data)

    def emit_partitions(self, directory: str | os.PathLike) -> list[Path]:
        """Write each partition as a standalone model, the host graph and a manifest to ``directory``."""
        if self.plan is None:
            raise UsageError("emitting partitions needs a target (compile with target=...)")
        return emit_partitions(self.model, self.plan.target.domain, directory)


def compile(
    model: ModelSource | Model,
    *,
    target: str | os.PathLike | Target | None = None,
    min_partition_ops: int = 1,
    max_partitions: int | None = None,
    cpu_ops: Sequence[str] = (),
    cost_model: bool = True,
    passes: str | Sequence[StepSpec] | None = None,
    verify_each: bool = False,
    verify: bool = False,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    verify_inputs: Mapping[str, np.ndarray] | None = None,
    tolerance: Tolerance | None = None,
    on_pass_start: ProgressHook | None = None,
    on_progress: ProgressCallback | None = None,
    target_opset: int | None = None,
    strict_fusion: bool = False,
    pass_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> CompileResult:
    """Compile ``model`` and return the result; the input file is never modified.

    Args:
        model: a path, serialized bytes, a ModelProto, or a :class:`~mapc.ir.Model` (edited in place).
        target: a built-in target name (``"npu"``, ``"cpu"``, ``"ethos-u55"``), a path to a TOML
            target description, or a :class:`~mapc.targets.Target`. The pipeline then ends with
            ``partition`` and ``lower``; ``result.plan`` and the report say what runs where.
        min_partition_ops: partitions with fewer ops go back to the CPU.
        max_partitions: keep at most this many partitions (those that gain most).
        cpu_ops: op types forced onto the CPU.
        cost_model: send partitions back to the CPU when their estimated gain does not pay for
            their transfers and dispatch (False keeps every supported partition).
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
        target_opset: first upgrade the model to this ai.onnx opset (``upgrade-opset``), so that
            ``fuse`` can emit the standard ops that opset has.
        strict_fusion: make every near-miss of the ``fuse`` passes an error
            (:class:`~mapc.errors.CheckFailed`).
        pass_options: options set on every step of the named passes, overriding the pipeline's
            (``{"attention-mask": {"mask_value": -50}}``); a pass not in the pipeline is an error.
    """
    resolved = get_target(target) if target is not None else None
    working = model if isinstance(model, Model) else load(model)
    source = str(working.source_path) if working.source_path else None
    ctx = PassContext(
        seed=seed,
        dims=dict(dims or {}),
        input_shapes={name: [int(d) for d in shape] for name, shape in (input_shapes or {}).items()},
        progress=on_progress,
    )
    steps = build_pipeline(passes if passes is not None else default_pipeline())
    if resolved is not None:
        partition = Partition(
            target=resolved,
            min_partition_ops=min_partition_ops,
            max_partitions=max_partitions,
            cpu_ops=list(cpu_ops),
            cost_model=cost_model,
        )
        steps = [*steps, partition, get_pass("lower")()]
    if target_opset is not None:
        steps.insert(0, get_pass("upgrade-opset")(opset=target_opset))
    if strict_fusion:
        fuse_steps = [step for step in _passes(steps) if step.name == "fuse"]
        if not fuse_steps:
            raise UsageError("--strict-fusion needs a pipeline with the fuse pass")
        for step in fuse_steps:
            step.options.strict = True
    if pass_options:
        steps = with_pass_options(steps, pass_options)
    manager = PassManager(steps, verify_each=verify_each, on_pass_start=on_pass_start)
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
        options={
            "seed": seed,
            "dims": ctx.dims,
            "input_shapes": ctx.input_shapes,
            "verify_each": verify_each,
            "target_opset": target_opset,
            "strict_fusion": strict_fusion,
        },
        plan=ctx.facts.get(PLAN_FACT) if resolved is not None else None,
        facts=ctx.facts,
    )
    if result.plan is not None:
        working.set_metadata("mapc.pipeline", manager.text)
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


def _passes(steps: Sequence[Step]) -> list[Pass]:
    """Every pass of a pipeline, inside fixpoint groups too."""
    found: list[Pass] = []
    for step in steps:
        found.extend(_passes(step.steps) if isinstance(step, Fixpoint) else [step])
    return found
