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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mapc.ir import Model, count_nodes, load, save, seeded_inputs
from mapc.ir.compare import Tolerance
from mapc.ir.errors import UsageError, VerificationError
from mapc.ir.model import ModelSource
from mapc.ir.version import __version__
from mapc.passes import Pass, PassContext, get_pass, has_pass
from mapc.passes.fix_shapes import check_dim_names, resolve_dims
from mapc.passes.pipeline import (
    PassManager,
    PassRecord,
    ProgressHook,
    Step,
    StepSpec,
    build_pipeline,
    flatten_steps,
    map_passes,
    with_options,
    with_pass_options,
)
from mapc.passes.quantize import resolve as resolve_quantization
from mapc.passes.quantize.qtypes import QUANT_TYPES
from mapc.passes.quantize.schemes import get_scheme
from mapc.passes.verify import Verifier
from mapc.targets import Plan, Target, emit_partitions, get_target, plan_report
from mapc.targets.partition import PLAN_FACT, Partition

#: Version of the report's keys (docs/report-schema.md); bumped only if a key is removed or changes meaning.
REPORT_SCHEMA_VERSION = 1

ProgressCallback = Callable[[str, "int | None", "int | None"], None]


#: The target-independent simplification group: each stage joins when its pass is registered.
#: The simplification group of the default pipeline, repeated to a fixed point.
SIMPLIFY = ("fix-shapes", "fold-constants", "peephole", "cleanup")
#: Rewrites into what NPUs run, after the group.
REWRITES = ("fuse", "attention-mask")


def default_pipeline(
    *,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    require_static: bool = False,
) -> str:
    """The target-independent pipeline ``mapc compile`` runs without ``--passes``.

    Takes the compile's options. Stages, each joining when its pass is registered:

    1. the simplification group, to a fixed point: ``fix-shapes`` (only when shapes or dims were
       given; it reads them from the compile), ``fold-constants``, ``peephole``, ``cleanup``; each
       round's folding makes more shapes static for the next;
    2. ``fuse`` (canonical forms, then fused standard ops), which needs the shape arithmetic
       folded, and ``attention-mask``, which sees folded masks and fused ``Attention`` ops;
    3. the tidy group (``fold-constants``, ``peephole``, ``cleanup``) for what the rewrites leave;
    4. when shapes were given, ``check-static`` reports every tensor still dynamic
       (``require_static`` makes that an error).

    Target stages are appended by :func:`compile`: ``quantize`` when asked for
    (``compile(quantize=...)``, ``--quantize``), then partitioning and lowering for a target.
    """
    shapes_given = bool(dims or input_shapes)
    simplify = [name for name in SIMPLIFY if has_pass(name) and (name != "fix-shapes" or shapes_given)]
    stages = [f"fixpoint({','.join(simplify)})"] if simplify else []
    rewrites = [name for name in REWRITES if has_pass(name)]
    stages += rewrites
    tidy = [name for name in SIMPLIFY if has_pass(name) and name != "fix-shapes"]
    if rewrites and tidy:
        stages.append(f"fixpoint({','.join(tidy)})")
    if (shapes_given or require_static) and has_pass("check-static"):
        stages.append("check-static{require=true}" if require_static else "check-static")
    return ",".join(stages)


def quantize_step(quantize: Mapping[str, Any], target: Target | None) -> Pass:
    """The ``quantize`` step for the options in ``quantize`` on ``target``.

    The scheme (``quantize["scheme"]``; the target's default when missing) must be one the
    target declares in its ``quantization`` section, and the target's section sets the placement
    (activation type, symmetric activations, per-channel MatMul, block size, Q/DQ domain);
    the user's other options win over those.
    """
    requested = {key: value for key, value in quantize.items() if value is not None}
    scheme = requested.pop("scheme", None)
    options = resolve_quantization(scheme, target.quantization if target is not None else None, **requested)
    return get_pass("quantize")(**options)


#: Passes that write a finite fill into attention masks, chosen by an activation ``precision``.
MASK_PASSES = ("attention-mask", "decompose-attention")


def mask_precision_for(steps: Sequence[Step], quantizer: Pass, pass_options: Mapping[str, Mapping[str, Any]]) -> list[Step]:
    """``steps`` with the mask passes' precision following the quantizer's activations.

    An 8-bit scheme gets the int8 fill (-20) and a 16-bit one the int16 fill (-50), which
    quantize like any activation, instead of the fp16 default (-1e4) that the quantizer would
    have to keep in float or at 16 bits. Steps whose fill or precision the user chose (in the
    pipeline or ``pass_options``) are left alone, as is everything for weight-only schemes.
    """
    activation_type = quantizer.options.activation_type
    scheme = get_scheme(quantizer.options.scheme)
    bits = QUANT_TYPES[activation_type].bits if activation_type else scheme.activation_bits
    if bits is None:
        return list(steps)
    precision = "int8" if bits == 8 else "int16"
    chosen = {name for name, values in pass_options.items() if {"precision", "mask_value"} & set(values)}

    def follow(step: Pass) -> Pass:
        untouched = step.name in MASK_PASSES and step.name not in chosen and step.options.mask_value is None and step.options.precision == "fp16"
        return with_options(step, {"precision": precision}) if untouched else step

    return map_passes(steps, follow)


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
            "schema_version": REPORT_SCHEMA_VERSION,
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


def op_histogram(model: Model) -> dict[str, int]:
    """Nodes per op type, subgraphs included (custom ops as ``domain::Op``)."""
    graphs = [model.graph, *model.graph.subgraphs(recursive=True)]
    return dict(Counter(node.op if node.domain in (None, "", "ai.onnx") else f"{node.domain}::{node.op}" for g in graphs for node in g.nodes))


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
    require_static: bool = False,
    verify_inputs: Mapping[str, np.ndarray] | None = None,
    tolerance: Tolerance | None = None,
    on_pass_start: ProgressHook | None = None,
    on_progress: ProgressCallback | None = None,
    target_opset: int | None = None,
    strict_fusion: bool = False,
    pass_options: Mapping[str, Mapping[str, Any]] | None = None,
    quantize: Mapping[str, Any] | None = None,
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
        passes: pipeline string or list (see :mod:`mapc.passes.pipeline`); default :func:`default_pipeline`.
        verify_each: after every pass, check validity and outputs against the input model and
            raise :class:`~mapc.ir.errors.VerificationError` naming the first pass that broke it.
        verify: compare the final model with the input model, recorded in ``result.verification``;
            on a mismatch raises :class:`~mapc.ir.errors.VerificationError` whose ``result`` holds the result.
        seed: seed for generated verification inputs.
        dims: values for symbolic dims, by name (used for verification inputs and shape passes).
        input_shapes: concrete shapes for graph inputs, by name.
        require_static: fail with :class:`~mapc.ir.errors.CheckFailed` unless every tensor of the
            result has a static shape (``check-static{require=true}`` runs last).
        verify_inputs: explicit verification inputs (instead of seeded random ones).
        tolerance: float tolerance overriding the per-dtype defaults of :mod:`mapc.ir.compare`.
        on_pass_start: called with each pass name as it starts (progress display).
        on_progress: called by long passes with ``(description, done, total)`` (progress display).
        target_opset: first upgrade the model to this ai.onnx opset (``upgrade-opset``), so that
            ``fuse`` can emit the standard ops that opset has.
        strict_fusion: make every near-miss of the ``fuse`` passes an error
            (:class:`~mapc.ir.errors.CheckFailed`).
        pass_options: options set on every step of the named passes, overriding the pipeline's
            (``{"attention-mask": {"mask_value": -50}}``); a pass not in the pipeline is an error.
        quantize: options of the ``quantize`` pass (``{"scheme": "a8w8", "calibration": ...}``);
            the scheme is checked against the target's ``quantization`` section, which also sets
            the placement that target wants (activation type, per-channel MatMul...). Quantization
            runs after the target-independent pipeline and before partitioning. A quantized
            model is checked by its accuracy report (docs/passes/quantization.md), not by
            ``verify``, whose float tolerances quantization cannot meet.
    """
    resolved = get_target(target) if target is not None else None
    if quantize is not None and (verify or verify_each):
        raise UsageError("verify compares outputs within float tolerances, which quantization cannot meet; a quantized model is checked by its accuracy report (accuracy_target)")
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
        steps = build_pipeline(default_pipeline(dims=dims, input_shapes=input_shapes, require_static=require_static))
    else:
        steps = build_pipeline(passes)
        if require_static:
            steps.append(get_pass("check-static")(require=True))
    quantizer = None
    if quantize is not None:
        quantizer = quantize_step(quantize, resolved)
        steps = [*mask_precision_for(steps, quantizer, pass_options or {}), quantizer]
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
        fuse_steps = [step for step in flatten_steps(steps) if step.name == "fuse"]
        if not fuse_steps:
            raise UsageError("--strict-fusion needs a pipeline with the fuse pass")
        for step in fuse_steps:
            step.options.strict = True
    if pass_options:
        steps = with_pass_options(steps, pass_options)
    manager = PassManager(steps, verify_each=verify_each, on_pass_start=on_pass_start)
    verifier = None
    if verify_each or verify:
        # Reference inputs follow every fixed dim, also those implied by a given input shape.
        # The verifier shares the pipeline's context: passes publish facts for it there (e.g.
        # attention-mask's fully masked rows).
        implied = resolve_dims(working.graph, ctx.input_shapes, ctx.dims) if ctx.input_shapes else ctx.dims
        feeds = verify_inputs if verify_inputs is not None else seeded_inputs(
            working, seed=seed, dims=implied, shapes=ctx.input_shapes
        )
        verifier = Verifier(working, ctx, feeds=feeds, tolerance=tolerance)
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
        options={
            "seed": seed,
            "dims": ctx.dims,
            "input_shapes": ctx.input_shapes,
            "require_static": require_static,
            "verify_each": verify_each,
            "target_opset": target_opset,
            "strict_fusion": strict_fusion,
            "quantize": {**quantize, "scheme": quantizer.options.scheme} if quantizer is not None else None,
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
