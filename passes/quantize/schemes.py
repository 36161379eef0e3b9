"""Quantization schemes, and the contract between a scheme and a target.

A :class:`Scheme` says what it quantizes and with which integer types, and what it needs from
the model and the runtime (activation signedness choices, the opset its types require). A
target says what its silicon accepts in its ``quantization`` section
(:class:`QuantizationSupport`); :func:`resolve` checks a requested scheme against it and returns the ``quantize`` pass options that give that
target the placement it wants (activation type, per-channel MatMul or not, symmetric
activations...). ``mapc compile --target T --quantize S`` is ``resolve(S, T.quantization)``.

Built-in schemes (``npu-deployment.md`` §4):

========  ==========================  ===========================================================
scheme    activations                 weights
========  ==========================  ===========================================================
a8w8      8-bit per tensor            int8 symmetric per output channel (Conv, ConvTranspose,
                                      Gemm, MatMul with a constant B); bias int32
a16w8     16-bit per tensor           as a8w8 (the usual choice for transformers and detectors)
w4        float (weight-only)         MatMul/Gemm: int4 block-wise along the input dim;
                                      Conv/ConvTranspose: int8 per channel
a16w4     16-bit per tensor           as w4
========  ==========================  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mapc.ir import UsageError
from mapc.passes.quantize.qtypes import ACTIVATION_TYPES, QUANT_TYPES, QuantType


@dataclass(frozen=True)
class Scheme:
    """What a quantization scheme quantizes and with which types."""

    name: str
    summary: str
    #: Bits of activations; None for weight-only schemes (activations stay float).
    activation_bits: int | None
    #: Integer type of Conv/ConvTranspose weights and of MatMul/Gemm weights.
    conv_weight_type: str
    matmul_weight_type: str
    #: Block size along the input dim for 4-bit MatMul/Gemm weights (None: per channel).
    default_block_size: int | None = None

    @property
    def activation_types(self) -> tuple[str, ...]:
        """Activation types this scheme can use (the target picks the signedness)."""
        if self.activation_bits is None:
            return ()
        return tuple(name for name in ACTIVATION_TYPES if QUANT_TYPES[name].bits == self.activation_bits)

    @property
    def default_activation_type(self) -> str | None:
        return self.activation_types[0] if self.activation_types else None

    @property
    def weight_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.conv_weight_type, self.matmul_weight_type)))

    def required_opset(self, activation_type: str | None) -> int:
        """The ai.onnx opset whose standard Q/DQ can express this scheme: 13 for per-axis Q/DQ,
        21 for 16-bit and 4-bit types (and ``DequantizeLinear(block_size)``)."""
        types = [QUANT_TYPES[name] for name in (activation_type, *self.weight_types) if name]
        return max([13, *(t.min_opset for t in types)])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "activation_types": list(self.activation_types) or ["float"],
            "weight_types": {"Conv/ConvTranspose": self.conv_weight_type, "MatMul/Gemm": self.matmul_weight_type},
            "block_size": self.default_block_size,
            "required_opset": self.required_opset(self.default_activation_type),
        }


@dataclass(frozen=True)
class QuantizationSupport:
    """What a target's silicon accepts: the schemes it runs and the placement it wants for them.

    A target record holds one as its ``quantization`` section (TOML: ``[quantization]``).

    ``schemes`` lists the schemes of the ``quantize`` pass the device runs, its default first
    (none: the target takes no quantized models, ``--quantize`` is refused). Activations use the
    first of ``activation_types`` with the scheme's width (e.g. ``uint8`` then ``int16``);
    ``symmetric_activations`` asks for zero points at the middle of the type;
    ``per_channel_matmul`` false quantizes MatMul weights per tensor (Conv and Gemm stay per
    channel, as on Qualcomm HTP); 4-bit weights use the first of ``block_sizes``;
    ``norm_scale_type`` is the type of LayerNorm/InstanceNorm scales (``int8`` symmetric or
    ``uint8`` asymmetric); ``norm_bias_type`` the type of their biases under 8-bit activations
    (``int32`` at ``s_in · s_scale``, or ``uint8`` asymmetric per tensor; 16-bit activations keep
    int32); ``dedicated_dequantizers`` gives every reader of a quantized tensor its
    own DequantizeLinear (QNN's EP needs it); ``fixed_range_ops`` are the ops whose outputs get their
    whole natural range (Softmax, Sigmoid, Tanh: HTP's 16-bit lookup tables assume it); ``int4_ops``
    are the ops whose weights a 4-bit scheme makes int4 blocks (the others' int8 per channel); ``max_opset`` is the highest ai.onnx opset the device's tool chain reads (below 21, 16-bit
    Q/DQ is written in the com.microsoft domain). ``bias_correction`` turns on the pass's bias
    correction (Conv/Gemm biases corrected for the mean output shift their int8 weights cause).
    ``wide_outputs`` quantizes graph outputs at the 16-bit activation type under 8-bit
    activations (their own rounding is then negligible; the host dequantizes them anyway).
    """

    schemes: tuple[str, ...] = ()
    activation_types: tuple[str, ...] = ("uint8", "uint16")
    symmetric_activations: bool = False
    per_channel_matmul: bool = True
    block_sizes: tuple[int, ...] = (32, 64, 128)
    norm_scale_type: str = "int8"
    norm_bias_type: str = "int32"
    dedicated_dequantizers: bool = False
    matmul_bias_as_gemm: bool = False
    fixed_range_ops: tuple[str, ...] = ("Softmax",)
    #: Ops whose weights a 4-bit scheme makes int4 blocks (the others: int8 per channel).
    int4_ops: tuple[str, ...] = ("MatMul", "Gemm")
    max_opset: int | None = None
    bias_correction: bool = False
    wide_outputs: bool = False

    @property
    def default_scheme(self) -> str | None:
        return self.schemes[0] if self.schemes else None


SCHEMES: dict[str, Scheme] = {
    scheme.name: scheme
    for scheme in (
        Scheme("a8w8", "8-bit activations per tensor, int8 per-channel weights, int32 bias", 8, "int8", "int8"),
        Scheme("a16w8", "16-bit activations per tensor, int8 per-channel weights, int32 bias", 16, "int8", "int8"),
        Scheme("w4", "weight-only: int4 block-wise MatMul/Gemm weights, int8 per-channel Conv weights", None, "int8", "int4", 32),
        Scheme("a16w4", "16-bit activations, int4 block-wise MatMul/Gemm weights, int8 per-channel Conv weights", 16, "int8", "int4", 32),
    )
}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise UsageError(f"unknown quantization scheme {name!r} (schemes: {', '.join(SCHEMES)})") from None


def resolve(scheme_name: str | None, support: QuantizationSupport | None = None, **overrides: Any) -> dict[str, Any]:
    """The ``quantize`` pass options for ``scheme_name`` on a target whose silicon accepts ``support``.

    ``support`` is the target's ``quantization`` section (:class:`QuantizationSupport`);
    None means no target (any scheme, the pass's own defaults). ``scheme_name`` None picks the
    target's default scheme (``a8w8`` without a target). ``overrides`` (user options such as
    ``calibration``) win over what the target implies, except that a scheme or activation type
    the target does not accept is a UsageError.
    """
    if support is not None and not support.schemes:
        raise UsageError("the target runs no quantized models (its quantization section lists no schemes)")
    if scheme_name is None:
        scheme_name = support.default_scheme if support is not None else "a8w8"
    scheme = get_scheme(scheme_name)
    options: dict[str, Any] = {"scheme": scheme.name}
    if support is not None:
        if scheme.name not in support.schemes:
            raise UsageError(f"the target does not run scheme {scheme.name!r} (it runs: {', '.join(support.schemes)})")
        requested = overrides.get("activation_type")
        if requested is not None and requested not in support.activation_types:
            raise UsageError(f"the target does not accept {requested} activations (it accepts: {', '.join(support.activation_types)})")
        activation_type = requested
        if scheme.activation_bits is not None and activation_type is None:
            usable = [t for t in support.activation_types if t in scheme.activation_types]
            if not usable:
                raise UsageError(f"scheme {scheme.name!r} needs {' or '.join(scheme.activation_types)} activations, which the target does not accept")
            activation_type = options["activation_type"] = usable[0]
        if scheme.activation_bits == 8:
            wide = [t for t in support.activation_types if QUANT_TYPES[t].bits == 16]
            if wide:
                options["wide_activation_type"] = wide[0]
                if support.wide_outputs:
                    options["wide_outputs"] = True
        options["symmetric_activations"] = support.symmetric_activations
        options["per_channel_matmul"] = support.per_channel_matmul
        options["norm_scale_type"] = support.norm_scale_type
        if scheme.activation_bits == 8 and support.norm_bias_type != "int32":
            options["norm_bias_type"] = support.norm_bias_type
        if support.dedicated_dequantizers:
            options["dedicated_dequantizers"] = True
        if support.matmul_bias_as_gemm:
            options["matmul_bias_as_gemm"] = True
        if support.bias_correction:
            options["bias_correction"] = True
        if support.fixed_range_ops != ("Softmax",):
            options["fixed_range_ops"] = list(support.fixed_range_ops)
        if scheme.default_block_size is not None:
            options["block_size"] = support.block_sizes[0] if support.block_sizes else scheme.default_block_size
            if support.int4_ops != ("MatMul", "Gemm"):
                options["int4_ops"] = list(support.int4_ops)
        required = scheme.required_opset(activation_type)
        if support.max_opset is not None and support.max_opset < required:
            if any(QUANT_TYPES[name].bits == 4 for name in scheme.weight_types):
                raise UsageError(f"scheme {scheme.name!r} needs opset {required} (DequantizeLinear with block_size), above the target's max_opset {support.max_opset}")
            options["qdq_domain"] = "com.microsoft"
    options.update({key: value for key, value in overrides.items() if value is not None})
    return options


def activation_type_for(scheme: Scheme, requested: str | None) -> QuantType | None:
    """The activation type to use: ``requested`` if the scheme allows it, else its default."""
    if scheme.activation_bits is None:
        if requested is not None:
            raise UsageError(f"scheme {scheme.name!r} is weight-only; it has no activation type to choose")
        return None
    if requested is None:
        return QUANT_TYPES[scheme.activation_types[0]]
    if requested not in scheme.activation_types:
        raise UsageError(
            f"scheme {scheme.name!r} uses {scheme.activation_bits}-bit activations: activation_type must be "
            f"{' or '.join(scheme.activation_types)}, not {requested!r}"
        )
    return QUANT_TYPES[requested]


def wide_type_for(requested: str | None) -> QuantType | None:
    """The 16-bit type named by the ``wide_activation_type`` option (UsageError otherwise)."""
    if requested is None:
        return None
    if requested not in ("uint16", "int16"):
        raise UsageError(f"wide_activation_type must be uint16 or int16, got {requested!r}")
    return QUANT_TYPES[requested]
