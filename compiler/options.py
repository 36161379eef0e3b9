"""What one compile is asked to do: :class:`CompileOptions`, its one validation, and the pipeline it implies.

The fields that ``mapc compile`` exposes declare their flag in their metadata (see
:mod:`mapc.passes.flags`); so do the options of the passes that compile appends
(``quantize``, ``partition``) and of the mask passes. The API and the CLI both build a
:class:`CompileOptions` and call :meth:`CompileOptions.validate`, so a flag combination is
checked once, the same way for both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mapc.ir import Tolerance, UsageError
from mapc.passes import (
    Binding,
    Pass,
    Step,
    StepSpec,
    build_pipeline,
    flag,
    flatten_steps,
    get_pass,
    map_passes,
    with_options,
    with_pass_options,
)
from mapc.passes.quantize import QUANT_TYPES, get_scheme
from mapc.passes.quantize import resolve as resolve_quantization
from mapc.targets import Target


def parse_input_shapes(specs: Sequence[str]) -> dict[str, list[int]]:
    """``["input_ids:1,128", ...]`` -> ``{"input_ids": [1, 128]}``; :class:`UsageError` if malformed.

    The name is everything before the last ``:`` (names such as ``input:0`` work); a scalar input
    is written ``NAME:`` with no dims.
    """
    shapes: dict[str, list[int]] = {}
    for spec in specs:
        name, colon, dims = spec.rpartition(":")
        if not colon or not name:
            raise UsageError(f"--input-shape {spec!r}: expected NAME:D1,D2,... (e.g. input_ids:1,128)")
        try:
            shape = [int(d) for d in dims.replace("x", ",").split(",")] if dims.strip() else []
        except ValueError:
            raise UsageError(f"--input-shape {spec!r}: dims must be whole numbers separated by commas") from None
        if any(d < 0 for d in shape):
            raise UsageError(f"--input-shape {spec!r}: dims must not be negative")
        if name in shapes and shapes[name] != shape:
            raise UsageError(f"--input-shape {name!r} is given twice with different shapes")
        shapes[name] = shape
    return shapes


def parse_dims(specs: Sequence[str]) -> dict[str, int]:
    """``["batch_size=1", ...]`` -> ``{"batch_size": 1}``; :class:`UsageError` if malformed."""
    dims: dict[str, int] = {}
    for spec in specs:
        name, equals, value = spec.rpartition("=")
        name = name.strip()
        if not equals or not name:
            raise UsageError(f"--dim {spec!r}: expected NAME=VALUE (e.g. batch_size=1)")
        try:
            number = int(value)
        except ValueError:
            raise UsageError(f"--dim {spec!r}: the value must be a whole number") from None
        if number < 0:
            raise UsageError(f"--dim {spec!r}: the value must not be negative")
        if name in dims and dims[name] != number:
            raise UsageError(f"--dim {name!r} is given twice with different values")
        dims[name] = number
    return dims


#: The target-independent simplification group of the default pipeline, repeated to a fixed point.
SIMPLIFY = ("fix-shapes", "fold-constants", "peephole", "cleanup")
#: The group without fix-shapes: tidies what rewrites leave.
TIDY = tuple(name for name in SIMPLIFY if name != "fix-shapes")
#: Rewrites into what NPUs run, after the group: QOperator quantized ops to QDQ first, so fusion
#: and targets see ordinary float ops between Q/DQ.
REWRITES = ("qoperator-to-qdq", "fuse", "attention-mask")


def default_pipeline(
    *,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    require_static: bool = False,
) -> str:
    """The target-independent pipeline ``mapc compile`` runs without ``--passes``.

    1. the simplification group, to a fixed point: ``fix-shapes`` (only when shapes or dims were
       given; it reads them from the compile), ``fold-constants``, ``peephole``, ``cleanup``; each
       round's folding makes more shapes static for the next;
    2. ``qoperator-to-qdq`` (QLinearConv, MatMulInteger, onnxruntime's QLinear ops as
       DequantizeLinear -> float op -> QuantizeLinear), ``fuse`` (canonical forms, then fused
       standard ops), which needs the shape arithmetic folded, and ``attention-mask``, which
       sees folded masks and fused ``Attention`` ops;
    3. the tidy group (``fold-constants``, ``peephole``, ``cleanup``) for what the rewrites leave;
    4. when shapes were given, ``check-static`` reports every tensor still dynamic
       (``require_static`` makes that an error).

    Target stages are appended by :func:`~mapc.api.compile`: ``quantize`` when asked for, then
    ``partition`` and ``lower`` for a target.
    """
    shapes_given = bool(dims or input_shapes)
    simplify = SIMPLIFY if shapes_given else TIDY
    stages = [f"fixpoint({','.join(simplify)})", *REWRITES, f"fixpoint({','.join(TIDY)})"]
    if shapes_given or require_static:
        stages.append("check-static{require=true}" if require_static else "check-static")
    return ",".join(stages)


def _activation_precision(quantizer: Pass) -> str | None:
    """The activation precision of a quantize step: int8 / int16, None for weight-only schemes."""
    activation_type = quantizer.options.activation_type
    bits = QUANT_TYPES[activation_type].bits if activation_type else get_scheme(quantizer.options.scheme).activation_bits
    if bits is None:
        return None
    return "int8" if bits == 8 else "int16"


#: The mask passes' fill follows the quantizer's activations: an 8-bit scheme gets the int8 fill
#: (-20), a 16-bit one the int16 fill (-50), which quantize like any activation, instead of the
#: fp16 default (-1e4) the quantizer would have to keep in float or at 16 bits.
MASK_PRECISION_FOLLOWS_QUANTIZATION = Binding(
    source="quantize",
    passes=("attention-mask", "decompose-attention"),
    option="precision",
    value=_activation_precision,
    chosen_by=("precision", "mask_value"),
)
#: decompose-lrn acts at the activation precision the quantizer will use (HTP's LRN lacks 16 bits).
LRN_DECOMPOSITION_FOLLOWS_QUANTIZATION = Binding(
    source="quantize",
    passes=("decompose-lrn",),
    option="activations",
    value=_activation_precision,
    chosen_by=("activations",),
)
BINDINGS = (MASK_PRECISION_FOLLOWS_QUANTIZATION, LRN_DECOMPOSITION_FOLLOWS_QUANTIZATION)


@dataclass
class CompileOptions:
    """The options of one compile (see :func:`mapc.compile` for each one's meaning)."""

    passes: str | Sequence[StepSpec] | None = field(default=None, metadata=flag(
        "--passes", "pipeline, e.g. 'cleanup,fixpoint(cleanup)' (default: the pipeline `mapc passes` describes)", metavar="PASSES"))
    verify_each: bool = field(default=False, metadata=flag(
        "--verify-each", "after every pass, check validity and outputs against the input model"))
    verify: bool = field(default=False, metadata=flag("--verify", "compare the compiled model's outputs with the input model's"))
    input_shapes: Mapping[str, Sequence[int]] | None = field(default=None, metadata=flag(
        "--input-shape", "fix the shape of graph input NAME (repeatable), e.g. input_ids:1,128",
        metavar="NAME:D1,D2,...", repeat=parse_input_shapes))
    dims: Mapping[str, int] | None = field(default=None, metadata=flag(
        "--dim", "fix symbolic dim NAME wherever it occurs (repeatable), e.g. batch_size=1", metavar="NAME=VALUE", repeat=parse_dims))
    require_static: bool = field(default=False, metadata=flag(
        "--require-static", "fail (exit 1) unless every tensor of the result has a static shape"))
    seed: int = field(default=0, metadata=flag("--seed", "seed for generated verification inputs (default 0)", metavar="SEED"))
    target_opset: int | None = field(default=None, metadata=flag(
        "--target-opset", "first upgrade the model to ai.onnx opset N (verified), so fusion can emit that opset's "
        "standard ops (e.g. 23 for Attention)", metavar="N"))
    strict_fusion: bool = field(default=False, metadata=flag(
        "--strict-fusion", "fail (exit 1) when a fusion rule near-misses, naming the node, the failing condition and the fix"))
    check_with_qnn: bool = field(default=False, metadata=flag(
        "--check-with-qnn", "build the result with Qualcomm's QNN EP (HTP emulator; the qnn extra) and compare its verdict "
        "with mapc's plan node by node; fails (exit 1) when QNN refuses a node mapc placed on the NPU", requires="--target"))
    accuracy_on: str | None = field(default=None, metadata=flag(
        "--accuracy-on", "also measure the accuracy report on the device: 'qnn' runs the quantized model on QNN's HTP "
        "emulator on the held-out samples (at most 8), beside the CPU QDQ simulation", metavar="qnn", requires="--quantize"))
    split_stacked_kv: bool = field(default=False, metadata=flag(
        "--split-stacked-kv", "split each stacked [2,B,H,S,D] KV-cache input and output (legacy GPT-2 exports) into "
        "NAME.key and NAME.value of rank 4 (changes the model's interface)"))
    #: A target name, a TOML path or a :class:`~mapc.targets.Target`: partition and lower for it.
    target: str | os.PathLike | Target | None = None
    #: Options of the ``partition`` pass other than the target (``min_partition_ops``, ``cpu_ops``...).
    partition: Mapping[str, Any] | None = None
    #: Options of the ``quantize`` pass (``scheme``, ``calibration``, ...); None: no quantization.
    quantize: Mapping[str, Any] | None = None
    #: Options of the ``quantized-io`` pass, run right after ``quantize`` (graph I/O as integer
    #: codes, quantizers tied by range); None: float I/O.
    quantized_io: Mapping[str, Any] | None = None
    #: Options set on every step of the named passes, overriding the pipeline's.
    pass_options: Mapping[str, Mapping[str, Any]] | None = None
    #: The user's own samples: a folder of .npz files (one sample each, keys = input names), or
    #: the samples themselves. Verification runs on them instead of generated ones; passes
    #: measure ranges on them (attention-mask); quantize calibrates on them without --calibration.
    verify_inputs: str | os.PathLike | Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | None = field(
        default=None, metadata=flag(
            "--verify-inputs", "a folder of .npz samples (one per file, keys = input names): verify on them instead of "
            "generated inputs, measure ranges on them, and calibrate on them when --calibration is not given", metavar="DIR"))
    #: Float tolerance overriding the per-dtype defaults of :mod:`mapc.ir.compare`.
    tolerance: Tolerance | None = None

    def validate(self) -> None:
        """:class:`UsageError` for a combination that cannot work (the same check for API and CLI)."""
        if self.quantize is not None and (self.verify or self.verify_each):
            raise UsageError("--verify and --verify-each compare within float tolerances, which quantization cannot meet; "
                             "a quantized model is checked by its accuracy report (--accuracy-target)")
        if self.quantize is not None and self.quantize.get("calibration") is None and self.samples_folder() is None:
            raise UsageError("--quantize needs --calibration DIR|FILE|random (or --verify-inputs DIR)")
        if self.quantized_io is not None and self.quantize is None:
            raise UsageError("quantized graph I/O needs --quantize")
        if self.partition and self.target is None:
            raise UsageError(f"partition options ({', '.join(sorted(self.partition))}) need a target (--target NAME)")
        if self.accuracy_on not in (None, "qnn"):
            raise UsageError(f"--accuracy-on takes 'qnn' (QNN's HTP emulator), got {self.accuracy_on!r}")
        if self.accuracy_on is not None and self.quantize is None:
            raise UsageError("--accuracy-on needs --quantize")
        if self.accuracy_on is not None and self.target is None:
            raise UsageError("--accuracy-on qnn needs a target (--target qnn-htp)")
        if self.check_with_qnn and self.target is None:
            raise UsageError("--check-with-qnn needs a target (--target qnn-htp)")

    def samples_folder(self) -> str | None:
        """The folder ``verify_inputs`` names, if it names one (rather than holding arrays)."""
        return os.fspath(self.verify_inputs) if isinstance(self.verify_inputs, (str, os.PathLike)) else None

    def steps(self, target: Target | None) -> list[Step]:
        """The pipeline this compile runs: the given or default pipeline, then quantize, partition and lower.

        A target adds its own: ``upgrade-opset`` to its ``min_opset`` first (unless
        ``target_opset`` is given), and its ``prepare`` passes, then the tidy group, before quantize;
        its ``finish`` passes after quantize, before partition.
        """
        if self.passes is None:
            steps = build_pipeline(default_pipeline(dims=self.dims, input_shapes=self.input_shapes, require_static=self.require_static))
        else:
            steps = build_pipeline(self.passes)
            if self.require_static:
                steps.append(get_pass("check-static")(require=True))
        if target is not None and target.prepare:
            steps += [get_pass(name)() for name in target.prepare]
            steps += build_pipeline(f"fixpoint({','.join(TIDY)})")
        if self.quantize is not None:
            quantize = self.quantize
            if quantize.get("calibration") is None and self.samples_folder() is not None:
                quantize = {**quantize, "calibration": self.samples_folder()}  # --verify-inputs calibrates too
            quantizer = quantize_step(quantize, target)
            for binding in BINDINGS:
                steps = binding.apply(steps, quantizer, self.pass_options or {})
            steps.append(quantizer)
            if self.quantized_io is not None:
                steps.append(get_pass("quantized-io")(**self.quantized_io))
        if target is not None and target.finish:
            steps += [get_pass(name)() for name in target.finish]
        if target is not None:
            steps += [get_pass("partition")(target=target, **(self.partition or {})), get_pass("lower")()]
        if self.split_stacked_kv:
            steps.insert(0, get_pass("split-stacked-kv")())
        opset = self.target_opset if self.target_opset is not None else (target.min_opset if target is not None else None)
        if opset is not None:
            steps.insert(0, get_pass("upgrade-opset")(opset=opset))
        if self.strict_fusion:
            if not any(step.name == "fuse" for step in flatten_steps(steps)):
                raise UsageError("--strict-fusion needs a pipeline with the fuse pass")
            steps = map_passes(steps, lambda step: with_options(step, {"strict": True}) if step.name == "fuse" else step)
        if self.pass_options:
            steps = with_pass_options(steps, self.pass_options)
        return steps


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
