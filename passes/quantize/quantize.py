"""The ``quantize`` pass: calibrate, place Q/DQ, quantize weights, measure, report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mapc.ir import Model, ModelError, Runner, UsageError, constant_value
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.flags import flag
from mapc.passes.opset_conversion import upgrade_verified
from mapc.passes.quantize import accuracy as acc
from mapc.passes.quantize import report
from mapc.passes.quantize.calibrate import DEFAULT_BINS, TensorStats, collect
from mapc.passes.quantize.data import CalibrationData, open_calibration
from mapc.passes.quantize.emit import Decisions, dedicate_dequantizers, write_qdq
from mapc.passes.quantize.matmul_bias import fold_matmul_biases
from mapc.passes.quantize.offenders import SensitivityConfig, find_offenders
from mapc.passes.quantize.params import MASK_POLICIES, ParamsConfig, assign_groups
from mapc.passes.quantize.placement import NATURAL_RANGES, BiasSpec, PlacementConfig, bounded_tensors, decision_tensors, node_key, plan_placement
from mapc.passes.quantize.qtypes import MIN_REAL_RANGE, QUANT_TYPES
from mapc.passes.quantize.ranges import HISTOGRAM_METHODS, METHODS, RangeChoice, choose_range
from mapc.passes.quantize.schemes import Scheme, activation_type_for, get_scheme, wide_type_for
from mapc.passes.quantize.state import BiasEntry, RunState, WeightEntry, decide, planned_settings
from mapc.passes.quantize.unit_types import widen_output_groups
from mapc.passes.quantize.weights import conv_bias_correction, gemm_bias_correction, quantize_weight, tap_coverage
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES, ensure_shapes

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


@register_pass
class Quantize(Pass):
    """Quantize to a standard QDQ model (a8w8, a16w8, w4, a16w4) with calibration and an accuracy report.

    Calibration runs the float model in onnxruntime on the samples of ``calibration`` (a folder
    of .npz files, a .npz/.npy file, or ``random``), streaming min/max and histograms; the
    ``calibration_method`` (minmax, percentile, entropy, mse) picks each tensor's range, falling
    back to minmax, per tensor and reported, where it cannot apply (constant, single-valued or
    all-zero tensors; tensors bounded by construction; graph outputs and Softmax inputs).

    Placement: weighted ops get per-output-channel int8 weights (Conv axis 0, ConvTranspose 1,
    Gemm 0 if transB else 1, MatMul with a constant B its last axis) and int32 biases
    (``s_in · s_w``; weight scales raised, and reported, where a bias would overflow); 4-bit
    schemes quantize MatMul/Gemm weights block-wise along the input dim with an
    error-minimising scale search. Activations of the quantized ops get one Q/DQ pair each:
    data-movement ops reuse their input's parameters, Concat inputs and output share one,
    Softmax outputs get [0, 1] (Sigmoid/Tanh their calibrated range capped to their interval;
    ``fixed_range_ops`` fixes them), Relu/Clip fold into the producer's quantizer when that is
    exact, attention-mask paths stay float (16-bit when the fill is moderate). With
    ``matmul_bias_as_gemm`` a MatMul and its constant bias Add become one Gemm first (int32
    bias, no requantization of the product). Opsets below
    what the scheme needs are raised with onnx's converter (verified by running both), else
    16-bit Q/DQ come from com.microsoft.

    Report (``details``): per output SQNR, cosine, max abs error and top-1 agreement against
    the float model on held-out samples; the error each tensor causes when quantized alone and
    the top offenders; with ``accuracy_target`` (dB), the offenders promoted to 16-bit
    activations (or 8-bit weights) until the worst output meets it. A second run on a QDQ model
    changes nothing. Docs: docs/passes/quantization.md.
    """

    name = "quantize"
    requires = (SHAPES,)

    @dataclass
    class Options:
        #: a8w8, a16w8, w4 or a16w4.
        scheme: str = field(default="a8w8", metadata=flag(
            "--quantize", "quantize after the other passes and before partitioning: a8w8, a16w8, w4 or a16w4; alone, "
            "the target's default scheme (a8w8 for npu); needs --calibration", metavar="SCHEME", const=""))
        #: Folder of .npz samples, a .npz/.npy file, or "random" (loud warning).
        calibration: str | None = field(default=None, metadata=flag(
            "--calibration", "calibration samples: a folder of .npz files (one sample each, keys = input names), "
            "a .npz/.npy file of stacked samples, or 'random'", metavar="DIR|FILE|random", requires="--quantize"))
        calibration_method: Literal["minmax", "percentile", "entropy", "mse"] = field(default="minmax", metadata=flag(
            "--calibration-method", "how each tensor's range is chosen (default minmax)", requires="--quantize"))
        #: uint8/int8 (8-bit schemes) or uint16/int16 (16-bit schemes); default: the unsigned one.
        activation_type: str | None = None
        #: uint16/int16: the type of attention-mask paths and of promotions (default: the
        #: activation type's signedness); a target whose 16-bit type differs sets it.
        wide_activation_type: str | None = None
        symmetric_activations: bool = False
        #: Per-channel weights (per-tensor when false).
        per_channel: bool = True
        #: Per-channel MatMul weights (QNN runs only per-tensor MatMul weights).
        per_channel_matmul: bool = True
        #: int8 (symmetric, default) or uint8 (asymmetric) for 8-bit weights.
        weight_type: str = "int8"
        #: int8 (symmetric, default) or uint8 (asymmetric) for LayerNorm/InstanceNorm scales
        #: (Qualcomm HTP validates LayerNorm only with a uint8 scale).
        norm_scale_type: str = "int8"
        #: int32 (at ``s_in · s_scale``, default) or uint8 (asymmetric, per tensor over its own
        #: range) for LayerNorm/InstanceNorm biases. Qualcomm HTP rounds an int32 LayerNorm bias to
        #: the 8-bit output's step (up to half a step off per channel) and computes a uint8 one exactly.
        norm_bias_type: str = "int32"
        #: MatMul (constant 2-D weight) + constant bias Add as [Reshape ->] Gemm [-> Reshape], so the
        #: bias is an int32 inside the weighted op instead of a second requantization after the
        #: MatMul (what Qualcomm HTP's FullyConnected takes; onnxruntime's QNN recipe does the same).
        matmul_bias_as_gemm: bool = False
        #: Graph outputs quantized at the 16-bit type under 8-bit activations: the output's own
        #: rounding is the one error no later op hides, and the host dequantizes it anyway.
        wide_outputs: bool = False
        #: One DequantizeLinear per reader (QNN's EP groups each DQ into its reader's node unit and
        #: aborts on a DQ shared by several); the copies share the integer codes.
        dedicated_dequantizers: bool = False
        #: 4-bit block size along the input dim (default: the scheme's, 32).
        block_size: int | None = None
        #: Ops whose constant weights get a 4-bit scheme's int4 blocks; the others' weights are
        #: int8 per channel (Qualcomm HTP takes int4 blocks only on MatMul).
        int4_ops: list[str] = field(default_factory=lambda: ["MatMul", "Gemm"])
        #: Steps of the 4-bit per-block scale search (0: plain round-to-nearest).
        scale_search: int = 20
        #: Correct biases for the mean shift weight quantization causes.
        bias_correction: bool = False
        #: Percentile kept by the percentile method.
        percentile: float = 99.999
        num_bins: int = DEFAULT_BINS
        #: Fraction of samples held out for the accuracy report (last ones).
        holdout: float = 0.2
        #: Samples generated by calibration=random.
        random_samples: int = 8
        #: Worst-output SQNR (dB) to reach by promoting offenders to wider types.
        accuracy_target: float | None = field(default=None, metadata=flag(
            "--accuracy-target", "promote the worst tensors to 16 bits until every output's SQNR reaches this (e.g. 30)",
            metavar="SQNR_DB", requires="--quantize"))
        #: Held-out samples used per measurement of per-tensor errors (0: skip them).
        sensitivity_samples: int = 1
        #: Most tensors whose error is measured one at a time (the noisiest, by local noise).
        sensitivity_limit: int = 48
        top_offenders: int = 10
        #: auto (float for huge fills, 16-bit for moderate ones), exclude, 16bit or quantize.
        mask_policy: str = "auto"
        min_real_range: float = MIN_REAL_RANGE
        fold_activations: bool = True
        tie_concat: bool = True
        #: auto (raise the opset, else com.microsoft Q/DQ), onnx (raise or fail), com.microsoft.
        qdq_domain: Literal["auto", "onnx", "com.microsoft"] = "auto"
        exclude_nodes: list[str] = field(default_factory=list)
        exclude_op_types: list[str] = field(default_factory=list)
        #: Ops whose outputs get their whole natural range (Softmax, Sigmoid, HardSigmoid, Tanh).
        fixed_range_ops: list[str] = field(default_factory=lambda: ["Softmax"])
        memory_budget_mb: float = 1024.0

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        started = time.perf_counter()
        options = self.options
        if any(node.op in QDQ_OPS for node in model.graph.nodes):
            return PassResult(False, notes=[Note("quantize.already-quantized", "the model already holds QuantizeLinear/DequantizeLinear nodes; left as it is")])
        scheme = get_scheme(options.scheme)
        activation_type = activation_type_for(scheme, options.activation_type)
        self._check_options()
        if options.calibration is None:
            raise UsageError("quantize needs calibration data: calibration=DIR|FILE|random (mapc compile --calibration ...)")
        data = open_calibration(options.calibration, model, seed=ctx.seed, random_samples=options.random_samples, dims=ctx.dims, input_shapes=ctx.input_shapes)
        calibration_indices, holdout_indices, holdout_reused = data.split(options.holdout)
        notes: list[Note] = []
        if data.is_random:
            notes.append(Note(
                "quantize.random-calibration",
                "CALIBRATING ON RANDOM DATA: the scales fit random inputs, not your data; expect poor accuracy on real inputs",
                fix="pass --calibration with real samples (a folder of .npz files)",
                severity="warning",
            ))
        if holdout_reused:
            notes.append(Note("quantize.no-holdout", "the accuracy report reuses calibration samples (too few to hold some out)", severity="warning"))
        opset_before = model.opset
        domain_note = self._ensure_opset(model, scheme.required_opset(activation_type.name if activation_type else None), data, scheme)
        if domain_note is not None:
            notes.append(domain_note)
        if not ensure_shapes(model, ctx):  # again only if raising the opset changed the graph
            notes.append(Note("quantize.no-shapes", "onnx shape inference failed; tensors of unknown type are left in float", severity="warning"))
        gemms, gemm_notes = self._fold_matmul_biases(model, scheme, activation_type)
        notes += gemm_notes
        reference = model.copy()
        weight_type = QUANT_TYPES[options.weight_type]
        config = PlacementConfig(
            activation_type=activation_type,
            conv_weight_type=weight_type if QUANT_TYPES[scheme.conv_weight_type].bits == 8 else QUANT_TYPES[scheme.conv_weight_type],
            matmul_weight_type=weight_type if QUANT_TYPES[scheme.matmul_weight_type].bits == 8 else QUANT_TYPES[scheme.matmul_weight_type],
            block_size=options.block_size or scheme.default_block_size,
            int4_ops=frozenset(options.int4_ops),
            per_channel=options.per_channel,
            per_channel_matmul=options.per_channel_matmul,
            weight_symmetric=weight_type.signed,
            norm_scale_type=QUANT_TYPES[options.norm_scale_type],
            norm_bias_type=QUANT_TYPES[options.norm_bias_type] if options.norm_bias_type != "int32" else None,
            symmetric_activations=options.symmetric_activations,
            fold_activations=options.fold_activations,
            tie_concat=options.tie_concat,
            exclude_nodes=frozenset(options.exclude_nodes),
            exclude_op_types=frozenset(options.exclude_op_types),
            fixed_range_ops=frozenset(options.fixed_range_ops),
        )
        placement = plan_placement(model, config)
        state = RunState(placement, notes=[*notes, *placement.notes])
        calibration = self._calibrate(model, state, data, calibration_indices, activation_type, ctx)
        self._quantize_weights(model, state, calibration, activation_type is not None)
        widened = widen_output_groups(state, {t.name for t in model.graph.outputs}, {t.name for t in model.graph.inputs}) if options.wide_outputs else []
        decisions = decide(state, *planned_settings(state))
        sensitivity, promoted = find_offenders(model, reference, state, decisions, data, holdout_indices, calibration["collection"], self._sensitivity_config(), ctx.report_progress)
        final = decide(state, *(promoted or planned_settings(state)))
        counts = write_qdq(model, final)
        if options.dedicated_dequantizers:
            counts["dequantize_linear"] += dedicate_dequantizers(model)
        self._note_domains(model, final, state)
        accuracy = self._accuracy(reference, model, data, holdout_indices, ctx)
        details = report.details(
            state, final,
            scheme=scheme, activation_type=activation_type, method=options.calibration_method, data=data, calibration=calibration,
            sample_counts=(len(calibration_indices), len(holdout_indices)), opsets=(opset_before, model.opset),
            accuracy=accuracy, sensitivity=sensitivity,
        )
        details["seconds"] = round(time.perf_counter() - started, 3)
        counters = report.counters(state, final, activations_folded=counts["activations_folded"], calibration_fallbacks=len(calibration["fallbacks"]), details=details)
        counters["matmul_biases_as_gemm"] = gemms
        if widened:
            counters["outputs_widened"] = len(widened)
        if state.adjusted:
            state.notes.append(Note(
                "quantize.bias-overflow",
                f"{len(state.adjusted)} bias(es) would overflow int32 at s_in·s_w; their weight scales were raised",
                fix="see details.bias_adjusted",
                severity="warning",
            ))
        return PassResult(changed=counts["quantize_linear"] + counts["dequantize_linear"] > 0, counters=counters, notes=state.notes, details=details)

    # -- steps -----------------------------------------------------------------------------------

    def _check_options(self) -> None:
        options = self.options
        if options.calibration_method not in METHODS:
            raise UsageError(f"calibration_method must be one of {', '.join(METHODS)}")
        if options.weight_type not in ("int8", "uint8"):
            raise UsageError("weight_type must be int8 or uint8 (4-bit weights come with the w4/a16w4 schemes)")
        if options.norm_scale_type not in ("int8", "uint8"):
            raise UsageError("norm_scale_type must be int8 or uint8")
        if options.norm_bias_type not in ("int32", "uint8"):
            raise UsageError("norm_bias_type must be int32 or uint8")
        if options.mask_policy not in MASK_POLICIES:
            raise UsageError(f"mask_policy must be one of {', '.join(MASK_POLICIES)}")
        if not 0 <= options.holdout < 1:
            raise UsageError("holdout must be a fraction in [0, 1)")
        if set(options.int4_ops) - {"MatMul", "Gemm"}:
            raise UsageError(f"int4_ops: {', '.join(sorted(set(options.int4_ops) - {'MatMul', 'Gemm'}))} cannot take int4 blocks (MatMul, Gemm)")
        if options.block_size is not None and options.block_size < 2:
            raise UsageError("block_size must be at least 2 (32, 64 or 128 are usual)")
        if not 50 < options.percentile <= 100:
            raise UsageError("percentile must be in (50, 100]")
        if options.num_bins < 16:
            raise UsageError("num_bins must be at least 16")
        unknown = set(options.fixed_range_ops) - set(NATURAL_RANGES)
        if unknown:
            raise UsageError(f"fixed_range_ops: {', '.join(sorted(unknown))} has no natural range (choose from {', '.join(NATURAL_RANGES)})")
        if options.min_real_range <= 0:
            raise UsageError("min_real_range must be positive")
        wide_type_for(options.wide_activation_type)

    def _ensure_opset(self, model: Model, required: int, data: CalibrationData, scheme: Scheme) -> Note | None:
        blocked = QUANT_TYPES[scheme.matmul_weight_type].bits == 4
        if model.opset >= required:
            return None
        if self.options.qdq_domain == "com.microsoft":
            if blocked:
                raise UsageError(f"scheme {scheme.name!r} needs DequantizeLinear(block_size) from opset 21; com.microsoft Q/DQ cannot express it")
            return Note("quantize.contrib-qdq", f"opset {model.opset} kept; Q/DQ that need opset {required} use the com.microsoft domain", severity="info")
        reason = upgrade_verified(model, required, data.sample(0))
        if reason is None:
            return Note("quantize.opset-raised", f"opset raised to {required} (verified: outputs unchanged) so standard Q/DQ can express scheme {scheme.name}")
        if blocked or self.options.qdq_domain == "onnx":
            raise ModelError(f"scheme {scheme.name!r} needs opset {required}, but {reason}")
        return Note(
            "quantize.contrib-qdq",
            f"opset {model.opset} kept because {reason}; Q/DQ that need opset {required} use the com.microsoft domain (onnxruntime reads them; check your NPU tool chain does)",
            severity="warning",
        )

    def _fold_matmul_biases(self, model: Model, scheme: Scheme, activation_type) -> tuple[int, list[Note]]:
        """With ``matmul_bias_as_gemm``, MatMul + bias Add become Gemms (:mod:`.matmul_bias`); not in
        weight-only schemes (no requantization to save), for excluded nodes, or where the MatMul's
        weights would be 4-bit blocks a Gemm would not get."""
        options = self.options
        if not options.matmul_bias_as_gemm or activation_type is None or "Gemm" in options.exclude_op_types:
            return 0, []
        int4 = QUANT_TYPES[scheme.matmul_weight_type].bits == 4 and "MatMul" in options.int4_ops
        excluded_ops = set(options.exclude_op_types) | ({"MatMul"} if int4 else set())

        def keep(node) -> bool:
            return node.name in options.exclude_nodes or node.op in excluded_ops

        return fold_matmul_biases(model, keep)

    def _calibrate(self, model: Model, state: RunState, data: CalibrationData, indices: list[int], activation_type, ctx: PassContext) -> dict[str, Any]:
        options = self.options
        placement = state.placement
        method = options.calibration_method
        tensors = list(placement.activations)
        histograms = [t for t in tensors if t not in placement.fixed] if method in HISTOGRAM_METHODS else []
        channel_axes = {}
        if options.bias_correction and activation_type is not None:
            channel_axes = {tensor: axis for tensor, axis in placement.channel_inputs.values()}
        started = time.perf_counter()
        collection = collect(
            model, tensors, data, indices,
            histograms=histograms, bins=options.num_bins, channel_axes=channel_axes,
            memory_budget_mb=options.memory_budget_mb, progress=ctx.report_progress,
        )
        ranges: dict[str, RangeChoice] = {}
        fallbacks = []
        if activation_type is not None:
            decisive = decision_tensors(model, placement) if method != "minmax" else set()
            bounded = bounded_tensors(model) if method != "minmax" else set()
            for name in tensors:
                if name in placement.fixed:
                    continue
                stats = collection.stats[name]
                if name in decisive or name in bounded:
                    choice = choose_range(stats, "minmax", activation_type)
                    reason = (
                        "keeps its full range: a graph output or the input of Softmax/ArgMax/TopK, where clipping changes decisions"
                        if name in decisive else "bounded by construction (Erf, Tanh, Sigmoid... and affine maps of them): no outliers to clip"
                    )
                    choice = RangeChoice(choice.low, choice.high, "minmax", reason)
                else:
                    choice = choose_range(stats, method, activation_type, symmetric=options.symmetric_activations, percentile=options.percentile)
                ranges[name] = choice
                if choice.fallback is not None and method != "minmax":
                    fallbacks.append({"tensor": name, "reason": choice.fallback})
            tensors_by_name = model.graph.tensors()
            constant_stats = {}
            for name in placement.constants:
                constant_stats[name] = TensorStats()
                constant_stats[name].update_range(np.asarray(constant_value(tensors_by_name[name]), dtype=np.float32))
            params_config = ParamsConfig(activation_type, options.symmetric_activations, options.min_real_range, options.mask_policy, wide_type_for(options.wide_activation_type))
            state.groups = assign_groups(placement, ranges, {**collection.stats, **constant_stats}, params_config)
        if fallbacks:
            state.notes.append(Note(
                "quantize.calibration-fallback",
                f"{method} could not handle {len(fallbacks)} tensor(s) (constant, single-valued or degenerate); minmax was used for them",
                fix="see details.calibration.fallbacks",
            ))
        for group in state.groups:
            if group.excluded and group.mask:
                state.notes.append(Note(
                    "quantize.mask-path",
                    f"attention-mask path {', '.join(group.members[:3])}{'...' if len(group.members) > 3 else ''} left in float: {group.excluded}",
                    fix="run the attention-mask pass to rewrite the fill to a finite value (e.g. -50), then quantize",
                    severity="warning",
                ))
            elif group.excluded:
                state.notes.append(Note("quantize.excluded", f"{', '.join(group.members[:3])} left in float: {group.excluded}", severity="info"))
        return {"collection": collection, "ranges": ranges, "fallbacks": fallbacks, "seconds": time.perf_counter() - started}

    def _quantize_weights(self, model: Model, state: RunState, calibration: dict[str, Any], quantized_activations: bool) -> None:
        options = self.options
        placement = state.placement
        tensors = model.graph.tensors()
        by_key: dict[tuple, int] = {}
        promote = options.accuracy_target is not None
        for use, spec in placement.weights.items():
            index = by_key.get(spec.key)
            if index is None:
                values = np.asarray(constant_value(tensors[spec.tensor]), dtype=np.float32)
                main = quantize_weight(values, spec, search_steps=options.scale_search)
                widened = spec.widened() if promote else None
                alternative = quantize_weight(values, widened) if widened is not None else None
                index = by_key[spec.key] = len(state.weights)
                state.weights.append(WeightEntry(spec, [], values, main, alternative))
            state.weights[index].uses.append(use)
        weight_of = {use: by_key[spec.key] for use, spec in placement.weights.items()}
        for use, spec in placement.biases.items():
            if spec.weight not in weight_of:
                continue
            values = np.asarray(constant_value(tensors[spec.tensor]), dtype=np.float32)
            state.biases.append(BiasEntry(use, spec, weight_of[spec.weight], values))
        if options.bias_correction and quantized_activations:
            self._correct_biases(model, state, calibration["collection"].stats, weight_of)

    def _correct_biases(self, model: Model, state: RunState, stats, weight_of: dict[tuple[str, int], int]) -> None:
        """Bias correction of the Conv and Gemm layers with int8/int16 per-channel or per-tensor weights:
        the corrected float bias becomes the int32 bias. Not done with float activations (weight-only
        schemes: no int32 bias) nor for block-wise weights (their biases stay float), and a MatMul
        has no bias input to carry it (fuse MatMul+Add into Gemm first)."""
        nodes = {node_key(node): node for node in model.graph.nodes}
        existing = {entry.use: entry for entry in state.biases}
        corrected = 0
        for key, (tensor, _axis) in state.placement.channel_inputs.items():
            use = (key, 1)
            if use not in weight_of or tensor not in stats:
                continue
            mean = stats[tensor].channel_mean
            node = nodes[key]
            entry = state.weights[weight_of[use]]
            if mean is None or node.op not in ("Conv", "Gemm") or entry.spec.block_size is not None:
                continue
            delta = entry.main.dequantized() - entry.values
            if node.op == "Conv":
                shape = node.inputs[0].shape
                known = shape is not None and len(shape) == delta.ndim and all(isinstance(d, int) for d in shape[2:])
                coverage = tap_coverage(tuple(shape[2:]), delta.shape[2:], node.attrs) if known else None
                shift = conv_bias_correction(delta, mean, int(node.attrs.get("group", 1)), coverage)
                factor = 1.0
            else:
                beta = float(node.attrs.get("beta", 1.0))
                if beta == 0:
                    continue
                shift = gemm_bias_correction(delta, mean, bool(node.attrs.get("transB", 0)))
                factor = float(node.attrs.get("alpha", 1.0)) / beta
            if shift is None or not np.any(shift):
                continue  # nothing to correct (e.g. weights the codes represent exactly): no bias added
            bias_use = (key, 2)
            bias = existing.get(bias_use)
            if bias is None:
                if len(node.inputs) > 2 and node.inputs[2].name:
                    continue  # a bias of a shape bias correction does not handle
                spec = BiasSpec("", node.inputs[0].name, use, "identity" if self.options.per_channel else "scalar", 1, factor)
                bias = BiasEntry(bias_use, spec, weight_of[use], None)
                state.biases.append(bias)
            base = bias.original if bias.original is not None else np.zeros(shift.shape, dtype=np.float32)
            bias.corrected = (base.astype(np.float64) - (shift * factor).reshape(base.shape)).astype(np.float32)
            corrected += 1
        if corrected:
            state.notes.append(Note("quantize.bias-corrected", f"bias correction applied to {corrected} layer(s)"))

    def _note_domains(self, model: Model, decisions: Decisions, state: RunState) -> None:
        wide = sum(1 for p in decisions.activations.values() if p.qtype.bits == 16)
        if wide and model.opset < 21:
            state.notes.append(Note(
                "quantize.contrib-qdq",
                f"{wide} tensor(s) use 16-bit Q/DQ from the com.microsoft domain (opset {model.opset} < 21)",
                fix="raise the opset to 21 before quantizing if your tool chain needs standard 16-bit Q/DQ",
                severity="info",
            ))

    def _accuracy(self, reference: Model, model: Model, data: CalibrationData, holdout: list[int], ctx: PassContext) -> dict[str, Any]:
        """Output metrics of the QDQ model against the float one on the held-out samples."""
        classifier_like = acc.classifier_like_outputs(reference)
        samples = list(data.samples(holdout))
        ctx.facts[acc.HELD_OUT] = acc.HeldOut(samples[: acc.HELD_OUT_LIMIT], reference, classifier_like)
        return report.accuracy_section(acc.measure(Runner(reference), Runner(model), samples, classifier_like, ctx.report_progress))

    def _sensitivity_config(self) -> SensitivityConfig:
        options = self.options
        return SensitivityConfig(options.sensitivity_samples, options.sensitivity_limit, options.top_offenders, options.accuracy_target, options.memory_budget_mb)
