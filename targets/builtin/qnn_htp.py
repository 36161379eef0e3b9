"""qnn-htp: Qualcomm's Hexagon NPU (HTP) as onnxruntime's QNN execution provider builds for it.

This target is checkable: ``mapc compile ... --target qnn-htp --check-with-qnn`` builds the
result with the QNN EP of onnxruntime-qnn (Qualcomm's HTP backend, which on x86 compiles for
and emulates the NPU) and compares QNN's verdict with mapc's plan node by node
(:mod:`mapc.targets.qnn`). Every limit below is backed by a test in
``tests/targets/qnn/test_rules_against_qnn.py`` that shows QNN accepting what the rule allows
and refusing what it refuses.

Sources: onnxruntime's QNN op builders (``onnxruntime/core/providers/qnn/builder/opbuilder/``,
``op_builder_factory.cc``: which ONNX ops the EP maps, and the checks each builder makes),
Qualcomm's "HTP Op Def Supplement" (QNN SDK docs: per op the INT8/INT16/FP16 input, weight and
bias types), the QNN EP documentation (onnxruntime.ai, "QNN Execution Provider": QDQ model
requirements, ``htp_arch``, EPContext), and the emulator itself (onnxruntime-qnn 2.7.0).

* Quantized models are QDQ models: uint8 or uint16 activations (asymmetric, per tensor), int8
  weights symmetric per channel for Conv/ConvTranspose/Gemm and MatMul, int32 biases.
  LayerNormalization's scale must be **uint8** (asymmetric): an int8 scale fails
  ``backendValidateOpConfig`` with error 3110 and the EP aborts the process. Every reader of a
  quantized tensor gets its own DequantizeLinear: a DQ shared by several readers lands in
  several node units and the EP aborts (``Processed 9 nodes. Expected to process 74``).
* Under 8-bit activations LayerNorm and InstanceNorm biases are **uint8** over their own range
  (``norm_bias_type``): HTP rounds an 8-bit LayerNorm's int32 bias to the output's step before
  adding it (up to half a step off per channel, 0.51 steps rms against the CPU QDQ model; a uint8
  bias 0.18). BERT a8w8 on the emulator: 28.85 -> 30.16 dB, the CPU estimate 30.44. 16-bit
  activations keep the int32 bias, which HTP computes to half a 16-bit step. An Add that reads a
  LayerNorm's or RMSNorm's input first reads it second (``norm-input-second`` in ``prepare``):
  with it first, an 8-bit Norm over 2048 channels is 0.5 steps rms off (Whisper's residual Adds:
  35.8 dB against 37.1; a real-size Llama's: 12.2 against 14.4).
* Sigmoid and Tanh outputs (with Softmax's) are quantized over their whole natural range
  ([0, 1], [-1, 1]): with a calibrated range, HTP's 16-bit Sigmoid and Tanh compute something
  else than the QDQ model (26.8 and 43 dB against the CPU, 88-92 dB with the natural range;
  BERT's 16-bit pooler output fell to 6.6 dB on the emulator).
* A MatMul of a constant weight and the bias Add after it are quantized as one Gemm
  (``matmul_bias_as_gemm``: Reshape to 2-D, Gemm, Reshape back), which QNN builds as
  FullyConnected with an int32 bias at ``s_in · s_w``; as two ops, the product gets a
  requantization of its own before the bias (one rounding and one clipping point more: the
  example transformer's a16w8 output lost 0.8 dB on the emulator to it). onnxruntime's QNN
  recipe makes the same Gemm.
* Conv and Gemm biases are corrected for the mean output shift their int8 weights' rounding
  causes (``bias_correction``: ``b -= ΔW · E[x]``, E[x] the per-input-channel mean over the
  calibration set; a bias-less Conv or Gemm gets an int32 bias, which QNN builds in the same
  unit). onnxruntime's QNN recipe rounds weights alone; Qualcomm's SNPE quantizer offers bias
  correction ("BC"). On the light CNNs (random weights, CPU QDQ, 32 fresh samples) it gained
  4.3-4.6 dB on ZFNet, AlexNet and VGG-19 a8w8 and 9.4-10 dB in a16w8, 10.6 dB on SqueezeNet
  a8w8, 0.6 dB on ResNet-50 a8w8 (3.5 in a16w8); the transformer fixtures' Gemms read
  LayerNorm outputs of mean about 0 and are unchanged (Whisper a8w8: -0.02 ± 0.04 dB).
* Under 8-bit activations the graph outputs are **uint16** (``wide_outputs``; not a KV cache
  tied to a graph input): their own 8-bit rounding is the one error no later op hides, and the
  CPU dequantizes them anyway. An op whose activations mix 8 and 16 bits (the op writing such an
  output, a promoted tensor's producer and readers, a 16-bit mask path into an 8-bit Add)
  computes in 16 bits between exact converts (``uniform-unit-types`` in ``finish``; a Gemm's
  int32 bias at the converted input's scale): onnxruntime forms no QDQ node unit of a mixed op,
  so QNN built it in fp16 and refused its per-channel weights. Inception-v1 a8w8 on the
  emulator: 42.86 -> 81.5 dB (the recipe 42.87).
* 4-bit weights (``a16w4``, v69 and later): int4 blocks on MatMul only (``int4_ops``); a Gemm's
  int4 blocks leave a standalone per-channel DQ on the CPU, so Gemm and Conv keep int8 weights.
  v68 refuses the block-quantized MatMul and runs no 4-bit scheme.
* float32 models, and float islands of quantized ones, run in fp16 on v69 and later: the target's
  QNN options (``mapc targets --show qnn-htp``, and the compiled model's metadata) turn on
  ``enable_htp_fp16_precision`` with the architecture's ``soc_model``. Without it, float ops
  QNN validated still fail when it finalizes the graph (``QNN_COMMON_ERROR_MEM_ALLOC``).
* Static shapes only, rank at most 5 (4 for InstanceNormalization, RMSNormalization and
  BatchNormalization). int64 tensors are accepted: the EP narrows them to int32. Gathers take
  run-time indices (the embedding lookup of token ids runs on HTP).
* A QuantizeLinear of a graph input or a DequantizeLinear of a graph output is left to the CPU
  by the EP's defaults: the application hands the NPU quantized tensors (or pays one
  conversion on the CPU at each end).
* LRN takes only 8-bit activations (error 3110 for 16 bits, after the layout transform, so the
  session fails): a 16-bit compile decomposes it into Mul/Conv/Add/Pow (``decompose-lrn``).
* A strided, dilated depthwise Conv (1-D or 2-D) becomes a stride-1 Conv and a strided Slice,
  and a dilation over a kernel axis of size 1 is dropped (``unstride-conv``): HTP's
  DepthWiseConv2d refuses the combination after the layout transform, and the whole session
  fails.
* A float AveragePool with padding becomes a depthwise Conv of weights ``1 / K`` and, when the
  padding is not counted, a product with the constant ``K / count`` (``average-pool-as-conv``,
  after quantization): HTP's fp16 PoolAvg2d with padding computes wrong values for some shapes
  (fewer than 32 channels with the padding not counted; one channel with it counted), silently,
  or aborts (Inception-v1's last pool), and a float Pad in front leaves stale values.
* A float constant-mode Pad of the last two axes at their ends only becomes Concats with
  constant blocks (``pad-as-concat``, after quantization): HTP's fp16 Pad of that shape leaves
  stale values in the padded column, silently.
* A float MaxPool's stride over a kernel axis of size 1 moves into a strided Slice
  (``unstride-pool``, after quantization): HTP's fp16 MaxPool with kernel ``[2, 1]`` at strides
  ``[2, 2]`` builds and then aborts the process when it runs.
* The compiled model is the plain QDQ graph (``lowering = none``): the QNN EP forms its
  partitions itself. ``--emit epcontext`` adds the EPContext model with the context binary QNN
  compiled for the architecture.

Architectures (``--target qnn-htp:v75``; plain ``qnn-htp`` is v73): v68 (Snapdragon 888), v69
(8 Gen 1), v73 (8 Gen 2, the default), v75 (8 Gen 3, X Elite), v79 (8 Elite), v81 (8 Elite
Gen 5). v68 has no fp16 compute: float models must be quantized there.

Measured against onnxruntime's QNN recipe (``benchmarks/qnn.py``, docs/qnn-benchmark.md: 2 examples,
9 CNNs, 12 transformer exports, a8w8 and a16w8, 42 runs on the v73 emulator): QNN builds every
output with every node but the boundary Q/DQ on HTP and agrees with this target's plan on every
node; SQNR at least the recipe's on 34 of the 35 runs both built (Inception-v1 a8w8 42.86
against 42.87: the 8-bit rounding of a nearly constant output; ZFNet a8w8 36.6 against 32.4 dB,
BERT a16w8 42.8 against 29.7), and within 1 dB of the CPU QDQ estimate on all 42. Unquantized (fp16 mode,
the same 21 models), every node of every model on HTP and the plan right on every node. A
real-size 2-layer Llama (hidden 2048,
vocabulary 32000) builds with 268 of 269 nodes on HTP.

Performance: a roofline of a v73-class HTP (scalar clock 1 GHz, 8 MiB of VTCM); only relative
figures are meaningful. QNN's own profiling is the authority for latency.
"""

from __future__ import annotations

import dataclasses
import inspect

from mapc.ir import UsageError
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
    VendorCompiler,
)

NAME = "qnn-htp"
#: The HTP architectures the QNN EP's ``htp_arch`` option names, oldest first, and the SoC of each.
ARCHITECTURES = {
    "v68": "Snapdragon 888",
    "v69": "Snapdragon 8 Gen 1",
    "v73": "Snapdragon 8 Gen 2",
    "v75": "Snapdragon 8 Gen 3 / X Elite",
    "v79": "Snapdragon 8 Elite",
    "v81": "Snapdragon 8 Elite Gen 5",
}
DEFAULT_ARCH = "v73"
#: QNN's SoC model id of each architecture's phone SoC (SM8350, SM8450, SM8550, SM8650, SM8750,
#: SM8850; the QNN SDK's SoC table, QnnTypes.h ``QNN_SOC_MODEL_*``). The QNN EP needs it for fp16
#: precision; with it the emulator builds a float model in fp16 on each of v69..v81
#: (tests/targets/qnn/test_architectures.py).
SOC_MODELS = {"v68": "30", "v69": "36", "v73": "43", "v75": "57", "v79": "69", "v81": "87"}
#: Architectures without fp16 compute (HTP Op Def Supplement: FP16 from v69 on; the emulator
#: fails to finalize Gelu, Gather and CumSum in fp16 on v68).
NO_FP16 = frozenset({"v68"})
#: Architectures without int4 weights: v68 refuses the block-quantized MatMul (``Failed to add BQ
#: MatMul node``, backendValidateOpConfig error 3110); v69 and later build it.
NO_INT4 = frozenset({"v68"})

#: int64 tensors are accepted: the EP narrows them to int32 (base_op_builder.cc ProcessInt64Tensors).
DTYPES = frozenset({"uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "bool", "int4"})

#: ONNX ops the QNN EP maps to HTP ops (op_builder_factory.cc) that HTP validated in the
#: emulator for uint8 and uint16 activations.
OPS = frozenset(
    {
        # element-wise
        "Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sqrt", "Reciprocal", "Abs", "Neg", "Exp", "Log",
        "Sin", "Cos", "Tanh", "Sigmoid", "Relu", "LeakyRelu", "PRelu", "Elu", "Clip", "HardSigmoid", "HardSwish",
        "Gelu", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Where", "Cast",
        "Round", "Floor", "Ceil", "Sign", "Sum",
        # linear algebra and normalization
        "Conv", "ConvTranspose", "MatMul", "Gemm", "LayerNormalization", "RMSNormalization", "BatchNormalization",
        "InstanceNormalization", "Softmax", "LogSoftmax", "LRN", "RotaryEmbedding",
        # pooling and reductions
        "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum", "ReduceMax",
        "ReduceMin", "ReduceProd", "ReduceL2", "ArgMax", "ArgMin", "TopK", "CumSum",
        # data movement
        "Reshape", "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Pad", "Resize",
        "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "Gather", "GatherElements", "GatherND", "ScatterND",
        # quantization
        "QuantizeLinear", "DequantizeLinear",
    }
)  # fmt: skip

BASE = Target(
    name=NAME,
    description="Qualcomm Hexagon NPU (HTP v73; qnn-htp:v68..v81 for others) as onnxruntime's QNN EP builds it: QDQ uint8/uint16, fp16; checkable with --check-with-qnn.",
    tensors=TensorLimits(
        dtypes=DTYPES,
        float32_as="float16",
        bias_dtypes=frozenset({"int32", "float16"}),
        static_shapes=True,
        max_rank=5,
    ),
    ops=OpSet(
        supported=OPS,
        dtypes={
            "QuantizeLinear": frozenset({"float32", "float16", "uint8", "int8", "uint16", "int16"}),
            "DequantizeLinear": frozenset({"float32", "float16", "uint8", "int8", "uint16", "int16", "int32", "int4"}),
            "Cast": DTYPES | {"float32"},
            # 16-bit signed data fails validation (3110) with either scale type.
            "LayerNormalization": frozenset({"uint8", "uint16", "int8", "float16"}),
            # quantized Sum is wrong (channels lost when it reads another Sum); peephole makes it Add.
            "Sum": frozenset({"float16"}),
            # signed data: the EP turns the scale unsigned and the session fails after the layout transform.
            "InstanceNormalization": frozenset({"uint8", "uint16", "float16"}),
        },
        # instancenormalization_op_builder.cc (rank 3-4), rmsnormalization_op_builder.cc and
        # batchnormalization_op_builder.cc (rank <= 4).
        max_rank={"InstanceNormalization": 4, "RMSNormalization": 4, "BatchNormalization": 4},
    ),
    conv=ConvLimits(max_spatial_dims=3),
    pool=PoolLimits(),
    limits=OpLimits(
        matmul_dynamic_weights=True,
        matmul_dynamic_dtypes=frozenset({"uint8", "uint16", "int8", "float16"}),
        norm_scale_sign_matches_input=True,
        gather_dynamic_indices=True,
        gemm_dynamic_weights=True,
        standalone_per_axis_dequantize=False,
        rotary_position_ids=False,
        gemm_any_alpha=False,
        single_element_matmul=False,
        boundary_qdq_on_host=True,
    ),
    quantization=QuantizationSupport(
        schemes=("a8w8", "a16w8", "a16w4"),
        activation_types=("uint8", "uint16"),
        symmetric_activations=False,
        per_channel_matmul=True,
        norm_scale_type="uint8",
        norm_bias_type="uint8",
        dedicated_dequantizers=True,
        matmul_bias_as_gemm=True,
        fixed_range_ops=("Softmax", "Sigmoid", "Tanh"),
        int4_ops=("MatMul",),
        bias_correction=True,
        wide_outputs=True,
    ),
    performance=Performance(
        clock_mhz=1000,
        macs_per_cycle={"int8": 8192, "uint8": 8192, "int16": 2048, "uint16": 2048, "float16": 2048, "bool": 8192},
        vector_ops_per_cycle=1024,
        memory_gbps=51,
        sram_kib=8192,
        sram_gbps=512,
        transfer_gbps=16,
        dispatch_us=50,
        op_overhead_us=0.1,
    ),
    host=APPLICATION_CPU,
    lowering="none",
    min_opset=23,
    prepare=("decompose-attention", "unstride-conv", "decompose-lrn", "pool-as-global", "pad-before-conv", "norm-input-second"),
    finish=("uniform-unit-types", "average-pool-as-conv", "pad-as-concat", "unstride-pool"),
    vendor=VendorCompiler("qnn", {}),
    notes=inspect.cleandoc(__doc__ or ""),
    sources=(
        "onnxruntime QNN EP op builders (onnxruntime/core/providers/qnn/builder/opbuilder/, op_builder_factory.cc)",
        "Qualcomm QNN SDK 'HTP Op Def Supplement' (per-op INT8/INT16/FP16 input, weight and bias types)",
        "onnxruntime.ai 'QNN Execution Provider' (QDQ requirements, htp_arch, EPContext)",
        "onnxruntime-qnn 2.7.0 HTP emulator: tests/targets/qnn/ (every rule accepted and refused by QNN itself)",
    ),
)


def provider_options(version: str) -> dict[str, str]:
    """The QNN EP options that build for ``version``: the arch, its SoC, fp16 where it has it."""
    options = {"htp_arch": version.removeprefix("v")}
    if version in SOC_MODELS:
        options["soc_model"] = SOC_MODELS[version]
        if version not in NO_FP16:
            options["enable_htp_fp16_precision"] = "1"
    return options


def qnn_htp(arch: str = DEFAULT_ARCH) -> Target:
    """The ``qnn-htp`` target for one HTP architecture (``v73`` or ``73``)."""
    version = arch if arch.startswith("v") else f"v{arch}"
    if version not in ARCHITECTURES:
        raise UsageError(f"unknown HTP architecture {arch!r} for {NAME} (known: {', '.join(ARCHITECTURES)})")
    options = provider_options(version)
    tensors = BASE.tensors
    if "enable_htp_fp16_precision" not in options:
        tensors = dataclasses.replace(tensors, dtypes=tensors.dtypes - {"float16"}, float32_as=None)
    quantization, ops = BASE.quantization, BASE.ops
    if version in NO_INT4:
        tensors = dataclasses.replace(tensors, dtypes=tensors.dtypes - {"int4"})
        ops = dataclasses.replace(ops, dtypes={op: dtypes - {"int4"} for op, dtypes in ops.dtypes.items()})
        quantization = dataclasses.replace(quantization, schemes=tuple(s for s in quantization.schemes if s != "a16w4"))
    return dataclasses.replace(
        BASE,
        name=NAME if version == DEFAULT_ARCH else f"{NAME}:{version}",
        description=BASE.description.replace(f"HTP {DEFAULT_ARCH};", f"HTP {version}, {ARCHITECTURES[version]};"),
        domain="mapc.qnn_htp" if version == DEFAULT_ARCH else f"mapc.qnn_htp_{version}",
        tensors=tensors,
        quantization=quantization,
        ops=ops,
        vendor=VendorCompiler("qnn", options),
    )


QNN_HTP = qnn_htp(DEFAULT_ARCH)
