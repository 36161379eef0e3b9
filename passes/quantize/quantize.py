"""The ``quantize`` pass: calibrate, place Q/DQ, quantize weights, measure, report."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mapc.ir import Model, Runner, constant_value, infer_shapes
from mapc.ir.errors import ModelError, UsageError
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.quantize import accuracy as acc
from mapc.passes.quantize.calibrate import DEFAULT_BINS, TensorStats, collect
from mapc.passes.quantize.data import CalibrationData, open_calibration
from mapc.passes.quantize.emit import BiasDecision, Decisions, ProbeChoice, ProbeSpec, write_probe, write_qdq
from mapc.passes.opset_conversion import upgrade_verified
from mapc.passes.quantize.params import MASK_POLICIES, ActivationParams, Group, ParamsConfig, assign_groups
from mapc.passes.quantize.placement import DATA_MOVEMENT, NATURAL_RANGES, BiasSpec, Fold, PlacementConfig, Placement, WeightSpec, is_constant, node_key, plan_placement
from mapc.passes.quantize.qtypes import MIN_REAL_RANGE, QUANT_TYPES, QuantType, fake_quantize, quantize
from mapc.passes.quantize.ranges import HISTOGRAM_METHODS, METHODS, RangeChoice, choose_range
from mapc.passes.quantize.schemes import Scheme, activation_type_for, get_scheme
from mapc.passes.quantize.sensitivity import Probe, Unit, contributions, promote_until, screen
from mapc.passes.quantize.weights import QuantizedWeight, conv_bias_correction, gemm_bias_correction, quantize_bias, quantize_weight, requantize
from mapc.passes.registry import register_pass

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
#: How many entries of long lists (fallbacks, exclusions) the report keeps.
REPORT_LIMIT = 50


@dataclass
class _WeightEntry:
    """One distinct weight quantization, the reads that use it, and its promoted variant."""

    spec: WeightSpec
    uses: list[tuple[str, int]]
    values: np.ndarray
    main: QuantizedWeight
    alternative: QuantizedWeight | None = None


@dataclass
class _BiasEntry:
    use: tuple[str, int]
    spec: BiasSpec
    weight: int
    original: np.ndarray | None
    corrected: np.ndarray | None = None


@dataclass
class _State:
    """What the run found and decided, shared by its steps."""

    placement: Placement
    groups: list[Group] = field(default_factory=list)
    weights: list[_WeightEntry] = field(default_factory=list)
    biases: list[_BiasEntry] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    adjusted: list[dict[str, Any]] = field(default_factory=list)


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
    exact, attention-mask paths stay float (16-bit when the fill is moderate). Opsets below
    what the scheme needs are raised with onnx's converter (verified by running both), else
    16-bit Q/DQ come from com.microsoft.

    Report (``details``): per output SQNR, cosine, max abs error and top-1 agreement against
    the float model on held-out samples; the error each tensor causes when quantized alone and
    the top offenders; with ``accuracy_target`` (dB), the offenders promoted to 16-bit
    activations (or 8-bit weights) until the worst output meets it. A second run on a QDQ model
    changes nothing. Docs: docs/passes/quantization.md.
    """

    name = "quantize"

    @dataclass
    class Options:
        #: a8w8, a16w8, w4 or a16w4.
        scheme: str = "a8w8"
        #: Folder of .npz samples, a .npz/.npy file, or "random" (loud warning).
        calibration: str | None = None
        calibration_method: Literal["minmax", "percentile", "entropy", "mse"] = "minmax"
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
        #: 4-bit block size along the input dim (default: the scheme's, 32).
        block_size: int | None = None
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
        accuracy_target: float | None = None
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
        if not infer_shapes(model):
            notes.append(Note("quantize.no-shapes", "onnx shape inference failed; tensors of unknown type are left in float", severity="warning"))
        reference = model.copy()
        weight_type = QUANT_TYPES[options.weight_type]
        config = PlacementConfig(
            activation_type=activation_type,
            conv_weight_type=weight_type if QUANT_TYPES[scheme.conv_weight_type].bits == 8 else QUANT_TYPES[scheme.conv_weight_type],
            matmul_weight_type=weight_type if QUANT_TYPES[scheme.matmul_weight_type].bits == 8 else QUANT_TYPES[scheme.matmul_weight_type],
            block_size=options.block_size or scheme.default_block_size,
            per_channel=options.per_channel,
            per_channel_matmul=options.per_channel_matmul,
            weight_symmetric=weight_type.signed,
            symmetric_activations=options.symmetric_activations,
            fold_activations=options.fold_activations,
            tie_concat=options.tie_concat,
            exclude_nodes=frozenset(options.exclude_nodes),
            exclude_op_types=frozenset(options.exclude_op_types),
            fixed_range_ops=frozenset(options.fixed_range_ops),
        )
        placement = plan_placement(model, config)
        state = _State(placement, notes=[*notes, *placement.notes])
        calibration = self._calibrate(model, state, data, calibration_indices, activation_type, ctx)
        self._quantize_weights(model, state, calibration)
        decisions = self._decide(state, *self._planned_states(state))
        sensitivity = self._sensitivity(model, reference, state, decisions, data, holdout_indices, calibration, ctx)
        states = sensitivity.pop("_states", None) or self._planned_states(state)
        final = self._decide(state, *states)
        counts = write_qdq(model, final)
        self._note_domains(model, final, state)
        report = self._accuracy(reference, model, data, holdout_indices, ctx)
        details = self._details(state, calibration, report, sensitivity, data, calibration_indices, holdout_indices, scheme, activation_type, opset_before, model, final)
        details["seconds"] = round(time.perf_counter() - started, 3)
        counters = {
            "quantized_nodes": len(state.placement.nodes),
            "activations_quantized": sum(1 for name in final.activations if name not in final.constant_uses),
            "weights_quantized": len(final.weights),
            "biases_quantized": len(final.biases),
            "activations_folded": counts["activations_folded"],
            "tensors_promoted": len(details.get("accuracy_target", {}).get("promoted", [])),
            "tensors_excluded": sum(len(g.members) for g in state.groups if g.excluded),
            "calibration_fallbacks": len(calibration["fallbacks"]),
        }
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
        if options.mask_policy not in MASK_POLICIES:
            raise UsageError(f"mask_policy must be one of {', '.join(MASK_POLICIES)}")
        if not 0 <= options.holdout < 1:
            raise UsageError("holdout must be a fraction in [0, 1)")
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
        _wide_type(options.wide_activation_type)

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

    def _calibrate(self, model: Model, state: _State, data: CalibrationData, indices: list[int], activation_type, ctx: PassContext) -> dict[str, Any]:
        options = self.options
        placement = state.placement
        method = options.calibration_method
        tensors = list(placement.activations)
        histograms = [t for t in tensors if t not in placement.fixed] if method in HISTOGRAM_METHODS else []
        channel_axes = {}
        if options.bias_correction:
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
            decisive = _decision_tensors(model, placement) if method != "minmax" else set()
            bounded = _bounded_tensors(model) if method != "minmax" else set()
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
            params_config = ParamsConfig(activation_type, options.symmetric_activations, options.min_real_range, options.mask_policy, _wide_type(options.wide_activation_type))
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

    def _quantize_weights(self, model: Model, state: _State, calibration: dict[str, Any]) -> None:
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
                state.weights.append(_WeightEntry(spec, [], values, main, alternative))
            state.weights[index].uses.append(use)
        weight_of = {use: by_key[spec.key] for use, spec in placement.weights.items()}
        for use, spec in placement.biases.items():
            if spec.weight not in weight_of:
                continue
            values = np.asarray(constant_value(tensors[spec.tensor]), dtype=np.float32)
            state.biases.append(_BiasEntry(use, spec, weight_of[spec.weight], values))
        if options.bias_correction:
            self._correct_biases(model, state, calibration["collection"].stats, weight_of)

    def _correct_biases(self, model: Model, state: _State, stats, weight_of: dict[tuple[str, int], int]) -> None:
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
            if mean is None:
                continue
            delta = entry.main.dequantized() - entry.values
            if node.op == "Conv":
                shift = conv_bias_correction(delta, mean, int(node.attrs.get("group", 1)))
                factor = 1.0
            else:
                beta = float(node.attrs.get("beta", 1.0))
                if beta == 0:
                    continue
                shift = gemm_bias_correction(delta, mean, bool(node.attrs.get("transB", 0)))
                factor = float(node.attrs.get("alpha", 1.0)) / beta
            if shift is None:
                continue
            bias_use = (key, 2)
            bias = existing.get(bias_use)
            if bias is None:
                if len(node.inputs) > 2 and node.inputs[2].name:
                    continue  # a bias of a shape bias correction does not handle
                spec = BiasSpec("", node.inputs[0].name, use, "identity" if self.options.per_channel else "scalar", 1, factor)
                bias = _BiasEntry(bias_use, spec, weight_of[use], None)
                state.biases.append(bias)
            base = bias.original if bias.original is not None else np.zeros(shift.shape, dtype=np.float32)
            bias.corrected = (base.astype(np.float64) - (shift * factor).reshape(base.shape)).astype(np.float32)
            corrected += 1
        if corrected:
            state.notes.append(Note("quantize.bias-corrected", f"bias correction applied to {corrected} layer(s)"))

    def _planned_states(self, state: _State) -> tuple[np.ndarray, np.ndarray]:
        quantized = [g for g in state.groups if g.params is not None]
        return np.ones(len(quantized), dtype=np.int64), np.ones(len(state.weights), dtype=np.int64)

    def _decide(self, state: _State, activation_state: np.ndarray, weight_state: np.ndarray) -> Decisions:
        """The concrete quantizers for a setting of the probe's switches (1 planned, 2 promoted)."""
        decisions = Decisions(constant_uses=dict(state.placement.constant_uses))
        quantized = [g for g in state.groups if g.params is not None]
        for group, setting in zip(quantized, activation_state):
            params = group.params if setting == 1 else group.alternative
            if setting == 0 or params is None:
                continue
            for member in group.members:
                decisions.activations[member] = params
        chosen: list[QuantizedWeight] = []
        for entry, setting in zip(state.weights, weight_state):
            chosen.append(entry.alternative if setting == 2 and entry.alternative is not None else entry.main)
        adjusted = []
        for bias in state.biases:
            weight = chosen[bias.weight]
            values = bias.corrected if bias.corrected is not None else bias.original
            if values is None or weight.spec.block_size is not None:
                continue
            params = decisions.activations.get(bias.spec.activation)
            if params is None:
                continue
            quantized_bias = quantize_bias(values, params.scale, weight.scale, bias.spec)
            if quantized_bias.new_weight_scale is not None:
                entry = state.weights[bias.weight]
                weight = requantize(entry.values, weight.spec, quantized_bias.new_weight_scale, np.asarray(weight.zero_point).astype(np.int64))
                chosen[bias.weight] = weight
                adjusted.append({"node": bias.use[0], "weight": entry.spec.tensor, "channels": quantized_bias.raised})
            axis = None
            if np.ndim(quantized_bias.scale) > 0:
                axis = 0 if np.ndim(values) == 1 else np.ndim(values) - 1
            decisions.biases[bias.use] = BiasDecision(bias.spec.tensor or None, quantized_bias.codes, quantized_bias.scale, axis, bias.original)
        for entry, weight in zip(state.weights, chosen):
            for use in entry.uses:
                decisions.weights[use] = weight
        decisions.folds = [fold for fold in state.placement.folds.values() if _fold_is_exact(fold, decisions.activations.get(fold.output))]
        state.adjusted = adjusted
        return decisions

    def _sensitivity(self, model: Model, reference: Model, state: _State, decisions: Decisions, data: CalibrationData, holdout: list[int], calibration: dict[str, Any], ctx: PassContext) -> dict[str, Any]:
        """Per-tensor contributions and, with an accuracy target, promotion (see .sensitivity)."""
        options = self.options
        quantized = [g for g in state.groups if g.params is not None]
        promote = options.accuracy_target is not None
        if not (options.sensitivity_samples > 0 or promote) or not (quantized or state.weights):
            return {}
        samples = [data.sample(i) for i in holdout[: max(options.sensitivity_samples, 1)]]
        float_runner = Runner(reference, optimized=True)
        references = [float_runner.run(sample) for sample in samples]
        units = [Unit("activation", i, _label(g), g.alternative is not None) for i, g in enumerate(quantized)]
        units += [Unit("weight", j, entry.spec.tensor, entry.alternative is not None) for j, entry in enumerate(state.weights)]
        measured = units
        if len(units) > options.sensitivity_limit:
            self._screen(model, state, quantized, units, samples, calibration)
            ranked = sorted(units, key=lambda u: (-(u.local_noise or 0.0), u.kind, u.index))[: options.sensitivity_limit]
            chosen = {id(u) for u in ranked}
            measured = [u for u in units if id(u) in chosen]
        measured_groups = {u.index for u in measured if u.kind == "activation"}
        measured_weights = {u.index for u in measured if u.kind == "weight"}
        probe = Probe(self._probe_model(model, state, quantized, decisions, measured_groups, measured_weights, fixed=False), samples, references, (len(measured_groups), len(measured_weights)))
        contributions(probe, measured, ctx.report_progress)
        runs = probe.runs
        offenders = sorted(measured, key=lambda u: (-(u.contribution or 0.0), u.kind, u.index))
        total = sum(u.contribution for u in measured if u.contribution and math.isfinite(u.contribution)) or 1.0
        result: dict[str, Any] = {
            "offenders": [
                {"tensor": u.label, "kind": u.kind, "sqnr_db_alone": _round(u.sqnr_db), "share": round(min((u.contribution or 0.0) / total, 1.0), 4)}
                for u in offenders[: options.top_offenders]
            ],
            "sensitivity": {"samples": len(samples), "units": len(units), "measured": len(measured), "screened_out": len(units) - len(measured)},
        }
        if promote:
            candidates = [u for u in measured if u.promotable]
            promotable_groups = {u.index for u in candidates if u.kind == "activation"}
            promotable_weights = {u.index for u in candidates if u.kind == "weight"}
            full = Probe(self._probe_model(model, state, quantized, decisions, promotable_groups, promotable_weights, fixed=True), samples, references, (len(promotable_groups), len(promotable_weights)))
            promotion = promote_until(full, float(options.accuracy_target), candidates, ctx.report_progress)
            runs += full.runs
            activation_state, weight_state = self._planned_states(state)
            for unit in promotion.promoted:
                (activation_state if unit.kind == "activation" else weight_state)[unit.index] = 2
            result["_states"] = (activation_state, weight_state)
            result["accuracy_target"] = {
                "target_db": promotion.target_db,
                "before_db": _round(promotion.before_db),
                "after_db": _round(promotion.after_db),
                "evaluations": promotion.evaluations,
                "promoted": [{"tensor": u.label, "kind": u.kind, "to": _promoted_type(u, quantized, state)} for u in promotion.promoted],
            }
            if not promotion.met:
                state.notes.append(Note(
                    "quantize.accuracy-target-missed",
                    f"SQNR target {options.accuracy_target} dB not reached (worst output {_round(promotion.after_db)} dB after promoting {len(promotion.promoted)} tensor(s))",
                    fix="exclude the top offenders (exclude_nodes), raise sensitivity_limit, or use a 16-bit scheme",
                    severity="warning",
                ))
        result["sensitivity"]["probe_runs"] = runs
        return result

    def _screen(self, model: Model, state: _State, quantized: list[Group], units: list[Unit], samples: list[dict[str, np.ndarray]], calibration: dict[str, Any]) -> None:
        """Local quantization noise of every unit, to pick the ones worth measuring exactly."""
        constants = set(state.placement.constant_uses)
        members = {i: [m for m in g.members if m not in constants] for i, g in enumerate(quantized)}

        def activation_noise(index: int, tensors: dict[str, np.ndarray]) -> tuple[float, float]:
            params = quantized[index].params
            assert params is not None
            noise = signal = 0.0
            for values in tensors.values():
                values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
                error = fake_quantize(values, params.scale, params.zero_point, params.qtype) - values
                noise += float(np.square(error, dtype=np.float64).sum())
                signal += float(np.square(values, dtype=np.float64).sum())
            return noise, signal

        def weight_noise(index: int) -> float:
            entry = state.weights[index]
            error = entry.main.dequantized() - entry.values
            power = float(np.square(entry.values, dtype=np.float64).sum())
            return float(np.square(error, dtype=np.float64).sum()) / power if power > 0 else 0.0

        screen(model, units, members, activation_noise, weight_noise, samples, memory_budget_mb=self.options.memory_budget_mb, sizes=calibration["collection"].sizes)

    def _probe_model(self, model: Model, state: _State, quantized: list[Group], decisions: Decisions, switchable_groups: set[int], switchable_weights: set[int], *, fixed: bool) -> Model:
        """A copy of the float model with the probe's quantizers: the switchable units, plus
        (``fixed``) every other unit as in the final model; without ``fixed`` the rest is float."""
        spec = ProbeSpec(constant_uses=dict(state.placement.constant_uses))
        for index, group in enumerate(quantized):
            switchable = index in switchable_groups
            if switchable or fixed:
                spec.groups.append((group.members, ProbeChoice(group.params, group.alternative if fixed else None), switchable))
        spec.groups.sort(key=lambda g: not g[2])  # switchable first, in order
        weight_position = {}
        for index, entry in enumerate(state.weights):
            switchable = index in switchable_weights
            if switchable or fixed:
                weight_position[index] = len(spec.weights)
                spec.weights.append((entry.uses, ProbeChoice(decisions.weights[entry.uses[0]], entry.alternative if fixed else None), switchable))
        order = sorted(range(len(spec.weights)), key=lambda i: not spec.weights[i][2])
        remap = {old: new for new, old in enumerate(order)}
        spec.weights = [spec.weights[i] for i in order]
        weight_of_bias = {b.use: b.weight for b in state.biases}
        for use, bias in decisions.biases.items():
            owner = weight_of_bias[use]
            if owner in weight_position:
                spec.biases[use] = (remap[weight_position[owner]], bias)
        probe = model.copy()
        write_probe(probe, spec)
        return probe

    def _note_domains(self, model: Model, decisions: Decisions, state: _State) -> None:
        wide = sum(1 for p in decisions.activations.values() if p.qtype.bits == 16)
        if wide and model.opset < 21:
            state.notes.append(Note(
                "quantize.contrib-qdq",
                f"{wide} tensor(s) use 16-bit Q/DQ from the com.microsoft domain (opset {model.opset} < 21)",
                fix="raise the opset to 21 before quantizing if your tool chain needs standard 16-bit Q/DQ",
                severity="info",
            ))

    def _accuracy(self, reference: Model, model: Model, data: CalibrationData, holdout: list[int], ctx: PassContext) -> dict[str, Any]:
        classifier_like = acc.classifier_like_outputs(reference)
        metrics = acc.measure(Runner(reference), Runner(model), list(data.samples(holdout)), classifier_like, ctx.report_progress)
        return {"samples": metrics.samples, "worst_sqnr_db": _round(metrics.worst_sqnr()), "outputs": metrics.results()}

    def _details(self, state, calibration, report, sensitivity, data, calibration_indices, holdout_indices, scheme, activation_type, opset_before, model, final) -> dict[str, Any]:
        placement = state.placement
        fallbacks = calibration["fallbacks"]
        excluded = [{"tensors": g.members, "reason": g.excluded} for g in state.groups if g.excluded]
        details: dict[str, Any] = {
            "scheme": scheme.name,
            "activation_type": activation_type.name if activation_type else "float",
            "weight_types": sorted({_weight_label(entry.spec) for entry in state.weights}),
            "calibration": {
                "data": data.description,
                "random": data.is_random,
                "method": self.options.calibration_method,
                "samples": len(calibration_indices),
                "holdout_samples": len(holdout_indices),
                "fetch_chunks": calibration["collection"].chunks,
                "seconds": round(calibration["seconds"], 3),
                "fallbacks": fallbacks[:REPORT_LIMIT],
                "fallbacks_total": len(fallbacks),
            },
            "opset": {"before": opset_before, "after": model.opset},
            "placement": {
                "quantized_nodes": len(placement.nodes),
                "activation_tensors": len(placement.activations),
                "constants": len(placement.constants),
                "weights": len(state.weights),
                "biases": len(final.biases),
                "tied_groups": sum(1 for g in state.groups if len(g.members) > 1),
                "fixed_ranges": sum(1 for g in state.groups if g.fixed_op),
                "folded_activations": len(final.folds),
            },
            "excluded": excluded[:REPORT_LIMIT],
            "accuracy": report,
        }
        if state.adjusted:
            details["bias_adjusted"] = state.adjusted[:REPORT_LIMIT]
        for key in ("offenders", "sensitivity", "accuracy_target"):
            if key in sensitivity:
                details[key] = sensitivity[key]
        if "accuracy_target" in details:
            worst = report["worst_sqnr_db"]
            details["accuracy_target"]["met"] = worst is None or worst >= details["accuracy_target"]["target_db"]
        return details


#: Ops whose input decides a choice: clipping it changes which class or token wins.
DECISION_OPS = frozenset({"Softmax", "LogSoftmax", "ArgMax", "ArgMin", "TopK"})


def _decision_tensors(model: Model, placement: Placement) -> set[str]:
    """Graph outputs and inputs of decision ops, with every tensor tied to them."""
    seeds = {t.name for t in model.graph.outputs}
    seeds |= {node.inputs[0].name for node in model.graph.nodes if node.op in DECISION_OPS and node.inputs}
    return {name for group in placement.groups if seeds.intersection(group) for name in group} | seeds


#: Ops whose outputs are bounded whatever their inputs.
BOUNDED_OPS = frozenset({"Erf", "Tanh", "Sigmoid", "HardSigmoid", "Softmax", "Sin", "Cos"})
#: Ops that keep a bounded input bounded when their other inputs are constants.
BOUND_PRESERVING = frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Relu", "Clip"}) | DATA_MOVEMENT


def _bounded_tensors(model: Model) -> set[str]:
    """Tensors bounded by construction: outputs of :data:`BOUNDED_OPS`, of Clip with constant
    bounds, and of affine maps and data movement of bounded tensors (GELU's ``1 + erf(x/√2)``).
    Their calibrated range has no outliers; clipping it only cuts real values."""
    bounded: set[str] = set()
    for node in model.graph.nodes:  # topological order
        outputs = [t.name for t in node.outputs if t.name]
        if node.op in BOUNDED_OPS:
            bounded.update(outputs)
        elif node.op == "Clip" and len(node.inputs) >= 3 and all(is_constant(t) for t in node.inputs[1:3] if t.name):
            bounded.update(outputs)
        elif node.op in BOUND_PRESERVING and node.inputs:
            data = [t for t in node.inputs if t.name and not is_constant(t)]
            if node.op in DATA_MOVEMENT:
                data = data[:1]
            if data and all(t.name in bounded for t in data):
                bounded.update(outputs)
    return bounded


def _weight_label(spec: WeightSpec) -> str:
    if spec.block_size is not None:
        return f"{spec.qtype.name} blocks of {spec.block_size}"
    return f"{spec.qtype.name} {'per tensor' if spec.axis is None else 'per channel'}"


def _label(group: Group) -> str:
    first = group.members[0]
    return first if len(group.members) == 1 else f"{first} (+{len(group.members) - 1} tied)"


def _wide_type(name: str | None) -> QuantType | None:
    """The 16-bit activation type named by ``wide_activation_type`` (UsageError otherwise)."""
    if name is None:
        return None
    if name not in ("uint16", "int16"):
        raise UsageError(f"wide_activation_type must be uint16 or int16, got {name!r}")
    return QUANT_TYPES[name]


def _promoted_type(unit: Unit, quantized: list[Group], state: _State) -> str:
    if unit.kind == "activation":
        alternative = quantized[unit.index].alternative
        return alternative.qtype.name if alternative else "-"
    alternative = state.weights[unit.index].alternative
    return alternative.spec.qtype.name if alternative else "-"


def _fold_is_exact(fold: Fold, params: ActivationParams | None) -> bool:
    """True if quantizing with ``params`` already clamps exactly where the Relu/Clip does."""
    if params is None:
        return False
    qtype = params.qtype
    if fold.low is not None and int(quantize(np.float32(fold.low), params.scale, params.zero_point, qtype)) != qtype.qmin:
        return False
    if fold.high is not None and int(quantize(np.float32(fold.high), params.scale, params.zero_point, qtype)) != qtype.qmax:
        return False
    return True


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    if not math.isfinite(value):
        return -999.0 if value < 0 else None
    return round(value, 3)
