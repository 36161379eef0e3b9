"""npu: a generic int8/int16/float16 NPU of a current phone or PC SoC (the default target).

What it models, and from where:

* Data types: int8/uint8 and int16 (quantized, QDQ), float16, bool masks. float32 models are
  accepted and computed in float16, as Intel's NPU, Qualcomm HTP (v69+) and the Apple Neural
  Engine do with unquantized models. No int64 compute: shape arithmetic and index tensors must be
  folded away or stay on the host. Sources: OpenVINO "NPU Device" (FP16 compute), Qualcomm QNN
  HTP docs (INT8/INT16, FP16 when unquantized), coremltools "opt-quantization-perf".
* Static shapes only, rank at most 4, dims at most 65535 (OpenVINO NPU: dynamic shapes "No";
  Core ML rank limit 5 and most NPU kernels 4-D; 16-bit dim registers as in Ethos-U).
* Convolution limits follow NVIDIA DLA's published restrictions (TensorRT "DLA Supported
  Layers and Restrictions"): 1-D/2-D, kernel 1-32, stride 1-8, dilation up to 32, channels up to
  8192; pooling windows up to 8x8 with strides up to 16.
* Normalizations and Softmax run over the last axis; Resize nearest/linear over H and W; Pad
  in constant mode only (reflect padding is the classic CoreML/NNAPI ping-pong, onnxruntime#28022).
* Standard fused ops a modern NPU runs as one kernel: LayerNormalization-17, Gelu-20,
  RMSNormalization-23, Attention-23, RotaryEmbedding-23, QuantizeLinear/DequantizeLinear.
* Quantization: ``a8w8`` (the default) and ``a16w8``; uint8 activations for 8 bits (the QNN
  convention), int16 for 16 bits (its tensor dtypes have no uint16).
* Performance: 1 GHz, 4096 int8 MACs/cycle (8.2 TOPS), 1024 int16, 2048 float16; 8 MiB of
  on-chip SRAM (Qualcomm HTP VTCM is 2-8 MiB per SoC, 16 MiB on SA8797) at 512 GB/s; LPDDR5
  shared with the CPU at 34 GB/s; 16 GB/s host<->NPU for boundary tensors, 40 us per
  dispatch (a driver round trip) and 0.1 us per op (command setup). The paired host is the 4-core application CPU of
  :mod:`mapc.targets.builtin.host_cpu`.
"""

from __future__ import annotations

import inspect

from mapc.passes.quantize import QuantizationSupport
from mapc.targets.builtin.host_cpu import APPLICATION_CPU
from mapc.targets.spec import (
    ConvLimits,
    OpLimits,
    OpSet,
    Performance,
    PoolLimits,
    Target,
    TensorLimits,
)

DTYPES = frozenset({"int8", "uint8", "int16", "float16", "bool"})

OPS = frozenset(
    {
        # element-wise
        "Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sqrt", "Reciprocal", "Abs", "Neg", "Exp", "Log",
        "Tanh", "Sigmoid", "Relu", "LeakyRelu", "PRelu", "Clip", "HardSigmoid", "HardSwish", "Elu", "Softplus",
        "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Where", "Cast", "Identity",
        # linear algebra and the standard fused ops
        "Conv", "ConvTranspose", "MatMul", "Gemm", "Attention", "RotaryEmbedding",
        "LayerNormalization", "RMSNormalization", "BatchNormalization", "InstanceNormalization",
        "Softmax", "LogSoftmax", "Gelu",
        # pooling and reductions
        "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
        # data movement
        "Reshape", "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Pad", "Resize",
        "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "Gather",
        # quantization
        "QuantizeLinear", "DequantizeLinear",
    }
)  # fmt: skip

NPU = Target(
    name="npu",
    description="Generic int8/int16/float16 NPU (the default): static shapes, rank <= 4, DLA-like Conv limits, standard fused ops.",
    tensors=TensorLimits(
        dtypes=DTYPES,
        float32_as="float16",
        bias_dtypes=frozenset({"int32", "float16"}),
        static_shapes=True,
        max_rank=4,
        max_dim=65535,
    ),
    ops=OpSet(
        supported=OPS,
        dtypes={
            "QuantizeLinear": frozenset({"float32", "float16", "int8", "uint8", "int16", "uint16"}),
            "DequantizeLinear": frozenset({"float32", "float16", "int8", "uint8", "int16", "uint16", "int32"}),
            "Cast": DTYPES | {"float32", "int32"},
        },
        fused_patterns=(("Conv", "Relu"), ("Conv", "Clip"), ("ConvTranspose", "Relu"), ("Gemm", "Relu"), ("MatMul", "Add"),
                        ("Add", "LayerNormalization")),
    ),
    conv=ConvLimits(
        max_spatial_dims=2,
        max_kernel_height=32,
        max_kernel_width=32,
        min_stride=1,
        max_stride=8,
        max_dilation=32,
        max_channels=8192,
        transpose_max_stride=32,
    ),
    pool=PoolLimits(max_kernel_height=8, max_kernel_area=64, min_stride=1, max_stride=16),
    limits=OpLimits(
        resize_modes=frozenset({"nearest", "linear"}),
        pad_modes=frozenset({"constant"}),
        matmul_dynamic_weights=True,
        normalize_last_axis_only=True,
    ),
    quantization=QuantizationSupport(schemes=("a8w8", "a16w8"), activation_types=("uint8", "int16")),
    performance=Performance(
        clock_mhz=1000,
        macs_per_cycle={"int8": 4096, "uint8": 4096, "int16": 1024, "float16": 2048, "bool": 4096},
        vector_ops_per_cycle=512,
        memory_gbps=34,
        sram_kib=8192,
        sram_gbps=512,
        transfer_gbps=16,
        dispatch_us=40,
        op_overhead_us=0.1,
    ),
    host=APPLICATION_CPU,
    notes=inspect.cleandoc(__doc__ or ""),
    sources=(
        "OpenVINO 'NPU Device' and 'Supported Devices' (FP16 compute, static shapes only)",
        "Qualcomm QNN HTP backend docs (INT8/INT16, FP16 when unquantized; VTCM 2-16 MiB per SoC)",
        "NVIDIA TensorRT 'DLA Supported Layers and Restrictions' (Conv kernel 1-32, stride 1-8, channels <= 8192; pooling)",
        "onnxruntime#28022 (reflect Pad -> CPU/NPU ping-pong)",
    ),
)
