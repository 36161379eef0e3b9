"""The host CPU every built-in accelerator is paired with, and the ``cpu`` target itself.

Figures are peaks of a 4-core Armv8.2 application cluster (Cortex-A78 class) at 2.4 GHz: two
128-bit NEON pipes per core give 8 float32, 16 float16 and 32 int8 (SDOT) MACs per cycle per
core; LPDDR5 shared with the NPU at about 34 GB/s; 4 MiB of L2/L3 cache; 2 us per op for
onnxruntime's kernel dispatch. onnxruntime rarely reaches peak, so CPU times are optimistic: the
estimates favour the CPU, not the NPU.
"""

from __future__ import annotations

import inspect

from mapc.passes.quantize import QuantizationSupport
from mapc.targets.spec import DTYPES, OpSet, Performance, Target, TensorLimits

APPLICATION_CPU = Performance(
    clock_mhz=2400,
    macs_per_cycle={"float32": 32, "float64": 16, "float16": 64, "bfloat16": 64, "int8": 128, "uint8": 128, "int16": 64, "int32": 32, "int64": 16},
    vector_ops_per_cycle=64,
    memory_gbps=34,
    sram_kib=4096,
    sram_gbps=200,
    op_overhead_us=2,
)

CPU = Target(
    name="cpu",
    description="The host CPU: every operator onnxruntime's CPU execution provider runs (nothing is offloaded).",
    kind="host",
    tensors=TensorLimits(dtypes=frozenset(DTYPES), static_shapes=False),
    ops=OpSet(control_flow=True),
    quantization=QuantizationSupport(schemes=("a8w8", "a16w8", "w4", "a16w4"), activation_types=("uint8", "uint16", "int8", "int16")),
    performance=APPLICATION_CPU,
    notes=inspect.cleandoc(__doc__ or ""),
    sources=(
        "onnxruntime CPU kernel registry (onnxruntime.capi get_all_opkernel_def), read at run time",
        "Arm Cortex-A78 software optimization guide: 2x128-bit NEON FMA pipes, SDOT int8 dot products",
    ),
)
