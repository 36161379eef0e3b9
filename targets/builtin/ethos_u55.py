"""ethos-u55: Arm Ethos-U55-128 microNPU beside a Cortex-M55, as Arm's Vela compiler sees it.

Limits are Vela's (ethos-u-vela 5.2.0: ``tflite_supported_operators.py`` and the generated
``SUPPORTED_OPS.md``), mapped onto ONNX operators:

* int8/uint8/int16 feature maps, 8-bit weights, int32 biases; no float at all (float models
  must be quantized; QuantizeLinear/DequantizeLinear from or to float stay on the CPU).
* Static shapes, batch 1, rank at most 4, dims 1-65535.
* Conv: 2-D, dilated kernel height at most 64 and kernel area at most 4096, strides 1-3,
  dilation at most 2, ordinary or depthwise only; ConvTranspose strides at most 2.
* Pooling: kernel height at most 256 and area at most 65536, strides 1-3; AveragePool with
  padding only up to 8x8.
* Fully connected layers need constant weights: no activation-by-activation MatMul (U55 has no
  batched matmul; the U85 added it). Mean reduces axes of at most 4096.
* Quantization: ``a8w8`` with int8 activations (TFLite's int8 scheme). Vela's 16x8 mode needs
  symmetric int16 activations with 8-bit ones asymmetric, a mix the target record cannot
  state, so ``a16w8`` is not offered.
* Performance: Vela's ``Ethos_U55_High_End_Embedded`` system config: 500 MHz, SRAM at 4 GB/s,
  off-chip flash (weights) at 0.5 GB/s; 128 MACs/cycle int8 (U55-128), half rate for int16;
  a 512 KiB SRAM arena (vela.ini arena cache sizes are 256/384/512 KB). The host is a
  Cortex-M55 at 400 MHz with Helium (8 int8 MACs/cycle, 2 float32, about 5 us per TFLite
  Micro kernel call); NPU and CPU share the SRAM, so boundary tensors move at SRAM speed, with
  about 10 us per NPU invocation.
* Not modelled: the per-channel weight-magnitude limit (sum of |w - zp| <= 8,323,072) and
  SHRAM block configs; Vela remains the authority for what finally compiles.
"""

from __future__ import annotations

import inspect

from mapc.passes.quantize import QuantizationSupport
from mapc.targets.spec import (
    ConvLimits,
    OpLimits,
    OpSet,
    Performance,
    PoolLimits,
    Target,
    TensorLimits,
)

OPS = frozenset(
    {
        "Conv", "ConvTranspose", "Gemm", "MatMul",
        "Add", "Sub", "Mul", "Max", "Min", "Abs", "Exp", "Log", "Sqrt",
        "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh", "HardSwish", "Softmax",
        "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean",
        "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Concat", "Split", "Slice", "Pad", "Resize", "Transpose",
        "QuantizeLinear", "DequantizeLinear", "Identity",
    }
)  # fmt: skip

QUANTIZED = frozenset({"int8", "uint8", "int16"})

ETHOS_U55 = Target(
    name="ethos-u55",
    description="Arm Ethos-U55-128 microNPU with a Cortex-M55 host: int8/int16 only, Vela's Conv/pool limits.",
    tensors=TensorLimits(
        dtypes=QUANTIZED,
        float32_as=None,
        bias_dtypes=frozenset({"int32", "int64"}),
        static_shapes=True,
        max_rank=4,
        max_dim=65535,
        max_batch=1,
    ),
    ops=OpSet(
        supported=OPS,
        dtypes={"DequantizeLinear": QUANTIZED | {"int32"}},
        fused_patterns=(("Conv", "Relu"), ("Conv", "Clip"), ("Gemm", "Relu"), ("Gemm", "Clip")),
    ),
    conv=ConvLimits(
        max_spatial_dims=2,
        max_kernel_height=64,
        max_kernel_area=4096,
        min_stride=1,
        max_stride=3,
        max_dilation=2,
        grouped=False,
        transpose_max_stride=2,
    ),
    pool=PoolLimits(max_kernel_height=256, max_kernel_area=65536, min_stride=1, max_stride=3, max_padded_avg_kernel=8),
    limits=OpLimits(
        resize_modes=frozenset({"nearest", "linear"}),
        pad_modes=frozenset({"constant"}),
        matmul_dynamic_weights=False,
        normalize_last_axis_only=True,
        max_reduce_axis=4096,
    ),
    quantization=QuantizationSupport(schemes=("a8w8",), activation_types=("int8",)),
    performance=Performance(
        clock_mhz=500,
        macs_per_cycle={"int8": 128, "uint8": 128, "int16": 64},
        vector_ops_per_cycle=8,
        memory_gbps=0.5,
        sram_kib=512,
        sram_gbps=4,
        transfer_gbps=4,
        dispatch_us=10,
        op_overhead_us=0.2,
    ),
    host=Performance(
        clock_mhz=400,
        macs_per_cycle={"int8": 8, "uint8": 8, "int16": 4, "float16": 4, "float32": 2, "int32": 2, "int64": 1},
        vector_ops_per_cycle=4,
        memory_gbps=4,
        sram_kib=512,
        sram_gbps=4,
        op_overhead_us=5,
    ),
    notes=inspect.cleandoc(__doc__ or ""),
    sources=(
        "ethos-u-vela 5.2.0: ethosu/vela/tflite_supported_operators.py and generated SUPPORTED_OPS.md",
        "ethos-u-vela 5.2.0: ethosu/config_files/Arm/vela.ini (Ethos_U55_High_End_Embedded: 500 MHz, SRAM 4 GB/s, flash 0.5 GB/s)",
        "ethos-u-vela architecture_features.py (U55-128: 128 MACs/cycle, 24 KB SHRAM)",
        "Arm Cortex-M55 technical overview (Helium MVE)",
    ),
)
