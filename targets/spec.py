"""The target record: what a device accepts and how fast it is, as plain data.

A :class:`Target` is a frozen record of sections (tensor limits, the op set, per-family op limits
and two :class:`Performance` models, one for the device and one for the host CPU it is paired
with). The rules in :mod:`mapc.targets.rules` read their limits from it, and their docstrings are
filled in from it, so the text a user reads always states the limits the check applies.

Every field has the same name in a user's TOML file (see :mod:`mapc.targets.user` and
``docs/targets.md``). A limit left at ``None`` is not enforced, and the rule that checks it is
left out of the target's rule list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mapc.passes.quantize import QuantizationSupport

#: Element types a target can name, spelled like numpy dtype names.
DTYPES = (
    "bool",
    "int4",
    "uint4",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float8",
    "float16",
    "bfloat16",
    "float32",
    "float64",
)

#: Ops whose body is other graphs: control flow.
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})


@dataclass(frozen=True)
class Performance:
    """Roofline figures of one device: peak compute per dtype, memory and link bandwidths.

    Time for one op is ``max(compute, memory)``: compute is MACs over ``macs_per_cycle[dtype]``
    plus element-wise work over ``vector_ops_per_cycle``, at ``clock_mhz``; memory is weights
    read at ``memory_gbps`` plus activations at ``sram_gbps`` when they fit in ``sram_kib``
    (otherwise at ``memory_gbps``), plus ``op_overhead_us`` per op (kernel launch on a CPU,
    command setup on an NPU). Accelerators add ``dispatch_us`` per partition and move boundary
    tensors at ``transfer_gbps``.
    """

    clock_mhz: float
    macs_per_cycle: Mapping[str, float]
    vector_ops_per_cycle: float
    memory_gbps: float
    sram_kib: float = 0.0
    sram_gbps: float = 0.0
    transfer_gbps: float = 0.0
    dispatch_us: float = 0.0
    op_overhead_us: float = 0.0

    def macs_rate(self, dtype: str) -> float:
        """MACs per cycle for ``dtype`` (falls back to the slowest listed rate)."""
        if dtype in self.macs_per_cycle:
            return float(self.macs_per_cycle[dtype])
        return float(min(self.macs_per_cycle.values())) if self.macs_per_cycle else 1.0

    def tops(self, dtype: str) -> float:
        """Peak tera-operations per second for ``dtype`` (two operations per MAC)."""
        return 2 * self.macs_rate(dtype) * self.clock_mhz * 1e6 / 1e12


@dataclass(frozen=True)
class TensorLimits:
    """Limits on every tensor an op reads or writes (constant parameter inputs excepted)."""

    dtypes: frozenset[str] = frozenset()
    float32_as: str | None = None
    bias_dtypes: frozenset[str] = frozenset({"int32", "float16"})
    static_shapes: bool = True
    max_rank: int | None = None
    max_dim: int | None = None
    max_batch: int | None = None


@dataclass(frozen=True)
class OpSet:
    """Which operators run, with per-op dtype lists where they differ from the tensor dtypes."""

    supported: frozenset[str] = frozenset()
    dtypes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Per-op rank limits below the tensors' ``max_rank`` (QNN: InstanceNormalization 4).
    max_rank: Mapping[str, int] = field(default_factory=dict)
    control_flow: bool = False
    fused_patterns: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class ConvLimits:
    """Conv and ConvTranspose. Kernel height/width are the dilated extents of the last two axes."""

    max_spatial_dims: int | None = None
    max_kernel_height: int | None = None
    max_kernel_width: int | None = None
    max_kernel_area: int | None = None
    min_stride: int | None = None
    max_stride: int | None = None
    max_dilation: int | None = None
    max_channels: int | None = None
    grouped: bool = True
    transpose_max_stride: int | None = None


@dataclass(frozen=True)
class PoolLimits:
    """MaxPool and AveragePool (global pools have no kernel and are not limited here)."""

    max_kernel_height: int | None = None
    max_kernel_area: int | None = None
    min_stride: int | None = None
    max_stride: int | None = None
    max_padded_avg_kernel: int | None = None


@dataclass(frozen=True)
class OpLimits:
    """Limits of other op families: modes, axes and operand kinds."""

    resize_modes: frozenset[str] | None = None
    pad_modes: frozenset[str] | None = None
    matmul_dynamic_weights: bool = True
    normalize_last_axis_only: bool = False
    max_reduce_axis: int | None = None
    #: Gemm may take weights computed at run time (QNN's FullyConnected does).
    gemm_dynamic_weights: bool = False
    #: Gather, GatherElements and GatherND may take indices computed at run time (an embedding
    #: lookup of token ids); otherwise their indices must be constants.
    gather_dynamic_indices: bool = False
    #: Dtypes an activation-by-activation MatMul may have (None: any of the op's dtypes).
    matmul_dynamic_dtypes: frozenset[str] | None = None
    #: A quantized LayerNormalization/InstanceNormalization scale must be signed exactly when the
    #: data is (QNN HTP: uint8 activations with a uint8 scale, int8 with int8).
    norm_scale_sign_matches_input: bool = False
    #: MatMul and Gemm may read a single-element data input (QNN never finishes compiling that).
    single_element_matmul: bool = True
    #: Gemm may have an alpha other than 1 (QNN's FullyConnected takes only alpha = 1).
    gemm_any_alpha: bool = True
    #: RotaryEmbedding may take position_ids (else its cos/sin caches must be per position already).
    rotary_position_ids: bool = True
    #: A per-channel DequantizeLinear may run on its own, outside a weight's node unit.
    standalone_per_axis_dequantize: bool = True
    #: A QuantizeLinear reading a graph input, or a DequantizeLinear writing a graph output, stays
    #: on the host (onnxruntime's QNN EP leaves them to the CPU by default).
    boundary_qdq_on_host: bool = False


TargetKind = Literal["accelerator", "host"]
#: How ``lower`` writes the partitions: as model-local functions of the target's domain, or not at
#: all (``none``: the vendor's runtime forms the partitions itself from the plain QDQ graph).
Lowering = Literal["functions", "none"]


@dataclass(frozen=True)
class VendorCompiler:
    """The vendor's own compiler, which can check the target's placement node by node.

    ``name`` is the oracle (``qnn``: onnxruntime's QNN execution provider, see
    :mod:`mapc.targets.qnn`); ``options`` are passed to it as they are (``htp_arch``).
    """

    name: str
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """Everything mapc knows about one device: limits, op set, performance, and where it came from.

    ``kind`` is ``"accelerator"`` for devices that take partitions (lowered into ``domain``) or
    ``"host"`` for the CPU itself (nothing is partitioned; the check says what onnxruntime runs).
    """

    name: str
    description: str
    kind: TargetKind = "accelerator"
    domain: str = ""
    tensors: TensorLimits = field(default_factory=TensorLimits)
    ops: OpSet = field(default_factory=OpSet)
    conv: ConvLimits = field(default_factory=ConvLimits)
    pool: PoolLimits = field(default_factory=PoolLimits)
    limits: OpLimits = field(default_factory=OpLimits)
    quantization: QuantizationSupport = field(default_factory=QuantizationSupport)
    performance: Performance = field(
        default_factory=lambda: Performance(clock_mhz=1000, macs_per_cycle={"float32": 1}, vector_ops_per_cycle=1, memory_gbps=1)
    )
    host: Performance | None = None
    lowering: Lowering = "functions"
    vendor: VendorCompiler | None = None
    #: ``mapc compile`` first upgrades a model below this ai.onnx opset to it, so that fusion
    #: emits the standard ops the device's compiler maps (e.g. Gelu-20 instead of a function).
    min_opset: int | None = None
    #: Passes ``mapc compile`` runs for this target after the target-independent pipeline and
    #: before quantization: rewrites of ops the device lacks (``decompose-attention``).
    prepare: tuple[str, ...] = ()
    #: Passes ``mapc compile`` runs for this target after quantization (after ``prepare`` when
    #: not quantizing), before partitioning: rewrites of what the device computes wrongly in the
    #: form quantization leaves it, such as a float op it mis-computes (``average-pool-as-conv``).
    finish: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    notes: str = ""
    origin: str = "built-in"

    def __post_init__(self) -> None:
        if not self.domain:
            object.__setattr__(self, "domain", f"mapc.{self.name.replace('-', '_')}")

    def __str__(self) -> str:
        return self.name if self.origin == "built-in" else self.origin

    @property
    def is_host(self) -> bool:
        return self.kind == "host"

    @property
    def host_performance(self) -> Performance:
        """The CPU this device is paired with (the host target's own figures for a host)."""
        return self.host if self.host is not None else self.performance

    def op_dtypes(self, op: str) -> frozenset[str]:
        """Dtypes ``op`` accepts for its data tensors (the per-op list, else the tensor dtypes)."""
        return self.ops.dtypes.get(op, self.tensors.dtypes)

    def fields(self) -> dict[str, Any]:
        """The record's sections, rendered for filling in rule docstrings (``{conv.max_stride}``)."""
        return {
            "target": _Rendered(self),
            "tensors": _Rendered(self.tensors),
            "ops": _Rendered(self.ops),
            "conv": _Rendered(self.conv),
            "pool": _Rendered(self.pool),
            "limits": _Rendered(self.limits),
            "quantization": _Rendered(self.quantization),
            "performance": _Rendered(self.performance),
            "derived": _Derived(self),
        }

    def replace(self, **changes: Any) -> Target:
        """A copy with some fields changed (sections are replaced whole)."""
        return dataclasses.replace(self, **changes)


class _Rendered:
    """Attribute access that renders values for prose: sorted lists, 'none' for None."""

    def __init__(self, section: object) -> None:
        self._section = section

    def __getattr__(self, name: str) -> str:
        return render_value(getattr(self._section, name))


class _Derived:
    """Phrases computed from several fields."""

    def __init__(self, target: Target) -> None:
        self.op_count = str(len(target.ops.supported))
        overrides = "; ".join(f"{op}: {render_value(d)}" for op, d in sorted(target.ops.dtypes.items()))
        self.op_dtypes = overrides or "none"
        if target.tensors.float32_as:
            self.float32_policy = f"float32 tensors are accepted and computed in {target.tensors.float32_as}"
        else:
            self.float32_policy = "float32 tensors are not accepted"


def render_value(value: Any) -> str:
    """A record value as it reads in a sentence."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (frozenset, set)):
        return ", ".join(sorted(str(v) for v in value)) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(render_value(v) for v in value) or "none"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {render_value(v)}" for k, v in sorted(value.items())) or "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
