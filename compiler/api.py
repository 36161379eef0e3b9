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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from mapc.inspection import parameter_bytes
from mapc.ir import Model, ModelSource, UsageError, VerificationError, __version__, count_nodes, is_default_domain, is_static, load, save
from mapc.options import CompileOptions
from mapc.output_check import check_compiled
from mapc.passes import SAMPLES, Facts, Note, PassContext, PassManager, PassRecord, ProgressHook, Verifier, check_dim_names, check_input_sizes, flatten_steps, resolve_dims
from mapc.passes.attention_mask import mask_input_roles
from mapc.passes.quantize import HELD_OUT, open_calibration
from mapc.targets import PARTITION_PLAN, Plan, Target, emit_partitions, get_target, plan_report
from mapc.targets.qnn import Agreement, ContextModel, accuracy_on_qnn, check_plan, require_qnn_target, write_context_model

#: Version of the report's keys (docs/report-schema.md); bumped only if a key is removed or changes meaning.
REPORT_SCHEMA_VERSION = 1

ProgressCallback = Callable[[str, "int | None", "int | None"], None]


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
    #: What the passes told later passes and the caller (``PassContext.facts``), by fact.
    facts: Facts = field(default_factory=Facts)
    ops_before: dict[str, int] = field(default_factory=dict)
    #: Bytes of the input model's weights (:func:`~mapc.inspection.parameter_bytes`).
    weight_bytes_before: int = 0
    #: QNN's verdict beside the plan, node by node (``check_with_qnn``).
    qnn: Agreement | None = None
    #: The EPContext model QNN compiled (:meth:`emit_context`).
    context: ContextModel | None = None
    #: The accuracy report measured on the device (``accuracy_on``).
    device_accuracy: dict[str, Any] | None = None
    #: What loading the input repaired, with a warning (``Model.load_notes``).
    load_notes: list[Note] = field(default_factory=list)

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
            "static": static_io(self.model),
            "size": {"weights_before": self.weight_bytes_before, "weights": parameter_bytes(self.model)},
            "passes": [record.as_dict() for record in self.passes],
        }
        if self.load_notes:
            report["load_notes"] = [note.as_dict() for note in self.load_notes]
        if self.plan is not None:
            report.update(plan_report(self.plan))
        if self.verification is not None:
            report["verification"] = self.verification
        if self.qnn is not None:
            report["qnn"] = self.qnn.as_dict()
        if self.context is not None:
            report["epcontext"] = self.context.as_dict()
        if self.device_accuracy is not None:
            report["device_accuracy"] = self.device_accuracy
        return report

    @property
    def target(self) -> Target | None:
        return self.plan.target if self.plan is not None else None

    def save(self, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
        """Write the compiled model (see :func:`mapc.ir.save`)."""
        return save(self.model, path, external_data=external_data)

    def emit_context(self, path: str | os.PathLike) -> ContextModel:
        """Have QNN compile the result for the target and write the EPContext model to ``path``
        (a target QNN compiles: ``qnn-htp``); recorded in the report under ``epcontext``."""
        if self.plan is None:
            raise UsageError("an EPContext model needs a target (compile with target='qnn-htp')")
        self.context = write_context_model(self.model, self.plan.target, path)
        return self.context

    def emit_partitions(self, directory: str | os.PathLike) -> list[Path]:
        """Write each partition as a standalone model, the host graph and a manifest to ``directory``."""
        if self.plan is None:
            raise UsageError("emitting partitions needs a target (compile with target=...)")
        return emit_partitions(self.model, self.plan.target.domain, directory)


def static_io(model: Model) -> bool:
    """Whether every graph input (weights aside) and output of ``model`` has a fully static shape."""
    tensors = [t for t in model.graph.inputs if not isinstance(t, gs.Constant)] + list(model.graph.outputs)
    return all(is_static(t.shape) for t in tensors)


#: Samples of --verify-inputs (or of a --calibration folder) used at most, the first ones.
MAX_USER_SAMPLES = 16


def _user_samples(options: CompileOptions, model: Model, ctx: PassContext) -> list[dict[str, np.ndarray]] | None:
    """The user's own samples: ``verify_inputs`` (a folder, one sample, or a list of them), else a
    ``--calibration`` folder or file (not ``random``); at most :data:`MAX_USER_SAMPLES`."""
    source = options.verify_inputs
    if source is None and options.quantize is not None and options.quantize.get("calibration") not in (None, "random"):
        source = options.quantize["calibration"]
    if source is None:
        return None
    if isinstance(source, Mapping):
        return [dict(source)]
    if not isinstance(source, (str, os.PathLike)):
        return [dict(sample) for sample in source]
    if source is options.verify_inputs and not Path(source).is_dir():
        raise UsageError(f"--verify-inputs {os.fspath(source)!r}: expected a folder of .npz files, one sample each (keys = input names)")
    data = open_calibration(os.fspath(source), model, seed=ctx.seed, dims=ctx.dims, input_shapes=ctx.input_shapes)
    return list(data.samples(range(min(len(data), MAX_USER_SAMPLES))))


def op_histogram(model: Model) -> dict[str, int]:
    """Nodes per op type, subgraphs included (custom ops as ``domain::Op``)."""
    graphs = [model.graph, *model.graph.subgraphs(recursive=True)]
    return dict(Counter(node.op if is_default_domain(node) else f"{node.domain}::{node.op}" for g in graphs for node in g.nodes))


def compile(
    model: ModelSource | Model,
    options: CompileOptions | None = None,
    *,
    on_pass_start: ProgressHook | None = None,
    on_progress: ProgressCallback | None = None,
    **values: Any,
) -> CompileResult:
    """Compile ``model`` and return the result; the input file is never modified.

    Options come as a :class:`~mapc.options.CompileOptions` or as its fields by keyword:

    * ``target``: a built-in target name (``"npu"``, ``"cpu"``, ``"ethos-u55"``), a path to a TOML
      target description, or a :class:`~mapc.targets.Target`. The pipeline then ends with
      ``partition`` and ``lower``; ``result.plan`` and the report say what runs where.
    * ``partition``: options of the ``partition`` pass, ``{"min_partition_ops": 2,
      "max_partitions": 4, "cpu_ops": ["Softmax"], "cost_model": False}`` (see ``mapc passes -v``).
    * ``passes``: pipeline string or list (see :mod:`mapc.passes.pipeline`); default
      :func:`~mapc.options.default_pipeline`.
    * ``verify_each``: after every pass, check validity and outputs against the input model and
      raise :class:`~mapc.ir.errors.VerificationError` naming the first pass that broke it.
    * ``verify``: compare the final model with the input model, recorded in ``result.verification``;
      on a mismatch raises :class:`~mapc.ir.errors.VerificationError` whose ``result`` holds the result.
    * ``seed``: seed for generated verification inputs.
    * ``dims`` / ``input_shapes``: values for symbolic dims by name / concrete shapes for graph
      inputs by name (used by the shape passes and for verification inputs).
    * ``require_static``: fail with :class:`~mapc.ir.errors.CheckFailed` unless every tensor of
      the result has a static shape (``check-static{require=true}`` runs last).
    * ``verify_inputs``: the user's own samples, a folder of ``.npz`` files (one sample each, keys
      = input names; the first 16 are used), one sample or a list of them: verification runs on
      them instead of generated inputs (:func:`mapc.ir.verification_samples`), attention-mask
      measures the scores' range on them, and ``quantize`` calibrates on the folder when no
      ``calibration`` is given. ``tolerance``: float tolerance overriding the per-dtype defaults
      of :mod:`mapc.ir.compare`.
    * ``target_opset``: first upgrade the model to this ai.onnx opset (``upgrade-opset``), so that
      ``fuse`` can emit the standard ops that opset has.
    * ``check_with_qnn``: build the result with Qualcomm's QNN EP for the target's HTP
      architecture (a target QNN compiles: ``qnn-htp``) and put its verdict beside the plan in
      ``result.qnn`` (:class:`~mapc.targets.qnn.Agreement`); the caller decides what a
      disagreement means (the CLI fails on a node mapc placed on HTP that QNN refused).
    * ``accuracy_on``: ``"qnn"`` also measures the quantization accuracy report on QNN's HTP
      emulator (held-out samples, at most 8), in ``result.device_accuracy``.
    * ``strict_fusion``: make every near-miss of ``fuse`` an error (:class:`~mapc.ir.errors.CheckFailed`).
    * ``pass_options``: options set on every step of the named passes, overriding the pipeline's
      (``{"attention-mask": {"mask_value": -50}}``); a pass not in the pipeline is an error.
    * ``quantize``: options of the ``quantize`` pass (``{"scheme": "a8w8", "calibration": ...}``);
      the scheme is checked against the target's ``quantization`` section, which also sets the
      placement that target wants. Quantization runs after the target-independent pipeline and
      before partitioning; the mask passes' precision follows its activations unless chosen. A
      quantized model is checked by its accuracy report (docs/passes/quantization.md), not by
      ``verify``, whose float tolerances quantization cannot meet.

    ``on_pass_start`` is called with each pass name as it starts and ``on_progress`` by long
    passes with ``(description, done, total)`` (progress display).
    """
    if options is not None and values:
        raise TypeError("give either a CompileOptions or keyword options, not both")
    options = options if options is not None else CompileOptions(**values)
    options.validate()
    resolved = get_target(options.target) if options.target is not None else None
    if options.check_with_qnn:
        require_qnn_target(resolved, "--check-with-qnn")
    if options.accuracy_on == "qnn":
        require_qnn_target(resolved, "--accuracy-on qnn")
    working = model if isinstance(model, Model) else load(model)
    if options.dims:
        check_dim_names(working.graph, options.dims)
    check_input_sizes(working.graph, options.input_shapes or {}, options.dims or {})
    ctx = PassContext(
        seed=options.seed,
        dims=dict(options.dims or {}),
        input_shapes={name: [int(d) for d in shape] for name, shape in (options.input_shapes or {}).items()},
        progress=on_progress,
    )
    steps = options.steps(resolved)
    manager = PassManager(steps, verify_each=options.verify_each, on_pass_start=on_pass_start)
    user_samples = _user_samples(options, working, ctx)
    if user_samples:
        ctx.facts[SAMPLES] = user_samples  # passes measure value ranges on them (attention-mask)
    verifier = None
    if options.verify_each or options.verify:
        # Reference inputs follow every fixed dim, also those implied by a given input shape.
        # The verifier shares the pipeline's context: passes publish facts for it there (e.g.
        # attention-mask's fully masked rows).
        implied = resolve_dims(working.graph, ctx.input_shapes, ctx.dims) if ctx.input_shapes else ctx.dims
        given = user_samples if options.verify_inputs is not None else None
        verifier = Verifier(working, ctx, samples=given, dims=implied, masks=mask_input_roles(working.graph), tolerance=options.tolerance)
        manager.verifier = verifier
    nodes_before = count_nodes(working.graph)
    ops_before = op_histogram(working)
    weight_bytes_before = parameter_bytes(working)
    records = manager.run(working, ctx)
    check_compiled(working)
    quantizer = next((step for step in flatten_steps(manager.steps) if step.name == "quantize"), None) if options.quantize is not None else None
    result = CompileResult(
        model=working,
        passes=records,
        pipeline=manager.text,
        nodes_before=nodes_before,
        ops_before=ops_before,
        weight_bytes_before=weight_bytes_before,
        source=str(working.source_path) if working.source_path else None,
        options={
            "seed": options.seed,
            "dims": ctx.dims,
            "input_shapes": ctx.input_shapes,
            "require_static": options.require_static,
            "verify_each": options.verify_each,
            "target_opset": options.target_opset,
            "strict_fusion": options.strict_fusion,
            "quantize": {**options.quantize, "scheme": quantizer.options.scheme} if quantizer is not None else None,
        },
        plan=ctx.facts.get(PARTITION_PLAN) if resolved is not None else None,
        facts=ctx.facts,
        load_notes=list(working.load_notes),
    )
    if result.plan is not None:
        working.set_metadata("mapc.pipeline", manager.text)
    held_out = ctx.facts.get(HELD_OUT) if options.accuracy_on == "qnn" else None
    if options.check_with_qnn and result.plan is not None:
        if on_pass_start is not None:
            on_pass_start("check-with-qnn")
        # One QNN build serves both: it also runs the held-out samples when accuracy is asked for.
        result.qnn = check_plan(working, result.plan, samples=held_out.samples if held_out is not None else None)
    if held_out is not None and result.plan is not None:
        if on_pass_start is not None:
            on_pass_start("accuracy-on-qnn")
        built = result.qnn.check if result.qnn is not None and result.qnn.check.outputs is not None else None
        result.device_accuracy = accuracy_on_qnn(working, result.plan.target, held_out, built)
    if options.verify and verifier is not None:
        comparisons = verifier.compare(working)
        result.verification = {
            "ok": all(c.ok for c in comparisons),
            "samples": len(verifier.samples),
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
