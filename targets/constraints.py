"""The built-in constraint rules, generic ones first, then one group per op family.

Each function's docstring is the rule text users read (first line) and its explanation; the
limits in braces come from the target record (:mod:`mapc.targets.spec`). A rule whose limit a
target leaves unset is not part of that target. Fix hints name the pass or flag that would
make the node pass, where one exists.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx.defs
import onnx_graphsurgeon as gs
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from mapc.ir import clip_bounds, constant_value, is_graph_input, is_graph_output, is_static, producer
from mapc.passes import activation_types
from mapc.targets.rules import Constraint, constraint, registered_constraints
from mapc.targets.spec import CONTROL_FLOW_OPS, Target
from mapc.targets.views import BIAS_INPUTS, PARAMETER_INPUTS, WEIGHT_INPUTS, NodeView, dims_text

Result = tuple[bool, str]
OK: Result = (True, "")

CONV_OPS = ("Conv", "ConvTranspose")
POOL_OPS = ("MaxPool", "AveragePool", "LpPool")
NORMALIZING_OPS = ("Softmax", "LogSoftmax", "LayerNormalization", "RMSNormalization")
REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare")
FLOAT_DTYPES = ("float32", "float64", "bfloat16", "float16")
GATHER_OPS = ("Gather", "GatherElements", "GatherND")

#: How to make a node pass, by what it lacks. Pass names are mapc's; flags are `mapc compile`'s.
FIX_HOST = ("the shapes are static: these values are computed from an input's data; compute them on the host "
            "(an attention mask: --mask-as-input)")
FIX_FOLD = "give static input shapes (--input-shape NAME:D1,D2,... or --dim NAME=VALUE) so fix-shapes and fold-constants turn the shape arithmetic into constants"
FIX_QUANTIZE = "quantize the model: --quantize with --calibration DIR (the quantize pass)"

FIX_RUN_FOLD = "its input's shape is static: fold-constants replaces it by a constant (the default pipeline runs it)"

#: Shape arithmetic: what makes it constant depends on why it stayed (:func:`_shape_fix`).
SHAPE_ARITHMETIC_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "Range"})

#: Fixes for ops a target does not run, where a rewrite would turn them into ones it does.
FIX_BY_OP = {
    "If": "fold-constants removes an If whose condition is a constant",
    "Erf": "fuse the erf-based GELU into Gelu (fuse pass)",
    "IsNaN": "drop the NaN guard of the attention mask (attention-mask pass)",
    "BatchNormalization": "fold BatchNormalization into the Conv or Gemm before it (fuse pass)",
}


# -- fix hints --------------------------------------------------------------------------------------


def fix_dynamic_shape(node: NodeView, target: Target, detail: str) -> str:
    """Name the graph inputs whose symbolic dims reach this node, with an --input-shape example."""
    names = {d for _, tensor in node.all_tensors() for d in (tensor.shape or ()) if isinstance(d, str)}
    sources = sorted({name for dim in names for name, _ in node.model.dim_sources.get(dim, [])})
    if not sources:
        return _shape_fix(node)
    examples = []
    for name in sources:
        shape = node.model.input_shapes.get(name, ())
        examples.append(f"--input-shape {name}:" + ",".join(f"<{d}>" if isinstance(d, str) else str(d) for d in shape))
    return "fix the input shapes: " + " ".join(examples)


def fix_dtype(node: NodeView, target: Target, detail: str) -> str | None:
    if any(f" is {kind}" in detail for kind in FLOAT_DTYPES):
        return FIX_QUANTIZE
    if " is int64" in detail and node.op in ("Shape", "Size", "Gather", "Concat", "Unsqueeze", "Squeeze", "Cast", "Range"):
        return _fold_or_host(node)
    return None


def _fold_or_host(node: NodeView) -> str:
    """FIX_HOST once the node's shapes are static: its values come from an input's data, and
    giving shapes again would not help; otherwise :func:`_shape_fix`."""
    if all(tensor.static for _, tensor in node.all_tensors()):
        return FIX_HOST
    return _shape_fix(node)


def _shape_fix(node: NodeView) -> str:
    """Why shape arithmetic at ``node`` stayed, as the fix a user can act on; never a request
    for what is already done. FIX_FOLD while a graph input has a symbolic dim. With every input
    static: where shape inference stopped on the way to this node (a data-dependent op, a
    reshape to values read from an input, a custom op), else (a Shape/Size of a static tensor)
    that fold-constants replaces it, else FIX_HOST."""
    if not node.model.inputs_static:
        return FIX_FOLD
    stops = {s["node"]: s for _, tensor in node.all_tensors() for s in node.model.inference_stops.get(tensor.name, [])}
    if stops:
        where = "; ".join(f"{s['op']} {s['node']!r}: {s['reason']}" for s in stops.values())
        return f"the input shapes are already static; shape inference stops at {where}, so the shapes after it cannot be folded"
    if node.op in ("Shape", "Size"):
        return FIX_RUN_FOLD
    return FIX_HOST


def fix_unsupported_op(node: NodeView, target: Target, detail: str) -> str | None:
    if node.op in SHAPE_ARITHMETIC_OPS:
        return _shape_fix(node)
    return FIX_BY_OP.get(node.op)


def fix_parameters(node: NodeView, target: Target, detail: str) -> str | None:
    if node.op in GATHER_OPS:
        return None  # data-dependent lookups (embeddings) stay on the host
    return _fold_or_host(node)


# -- allow rules ------------------------------------------------------------------------------------


@constraint("op.listed", kind="allow", fix=fix_unsupported_op)
def constraint_op_listed(node: NodeView, target: Target) -> Result:
    """The operator is one of the {derived.op_count} this target runs: {ops.supported}."""
    if node.op == "Constant" or node.op in target.ops.supported:
        return OK
    return False, f"{node.op} is not one of them"


@constraint("ort.kernel", kind="allow", kinds=("host",))
def constraint_ort_kernel(node: NodeView, target: Target) -> Result:
    """onnxruntime's CPU execution provider has a kernel for the op at the model's opset.

    Ops ONNX defines as functions (onnxruntime expands them) and the model's own local
    functions count as supported too.
    """
    domain, _, op = node.op.rpartition("::")
    versions = _cpu_kernel_versions().get((domain, op))
    opset = node.model.opset if not domain else 1
    if versions and any(low <= opset <= high for low, high in versions):
        return OK
    if onnx.defs.has(op, domain) and _expands_to_function(op, domain, opset):
        return OK
    if domain not in ("", "ai.onnx", "ai.onnx.ml", "com.microsoft"):
        return OK  # a model-local function or custom op the model defines; loading checked it
    return False, f"no CPU kernel for {node.op} at opset {opset}"


@functools.cache
def _cpu_kernel_versions() -> dict[tuple[str, str], list[tuple[int, int]]]:
    table: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for kernel in ort_state.get_all_opkernel_def():
        if kernel.provider == "CPUExecutionProvider":
            domain = "" if kernel.domain == "ai.onnx" else kernel.domain
            table.setdefault((domain, kernel.op_name), []).append(tuple(kernel.version_range))
    return table


def _expands_to_function(op: str, domain: str, opset: int) -> bool:
    try:
        schema = onnx.defs.get_schema(op, opset, domain)
    except onnx.defs.SchemaError:
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


# -- generic vetoes ---------------------------------------------------------------------------------


@constraint("op.control-flow", ops=CONTROL_FLOW_OPS, when=lambda t: not t.ops.control_flow, fix=fix_unsupported_op)
def constraint_no_control_flow(node: NodeView, target: Target) -> Result:
    """Control flow (If, Loop, Scan) runs on the host.

    The device executes a fixed dataflow graph; branches and loops are decided by the CPU.
    """
    return False, f"{node.op} holds subgraphs"


@constraint("shape.static", when=lambda t: t.tensors.static_shapes, fix=fix_dynamic_shape)
def constraint_static_shapes(node: NodeView, target: Target) -> Result:
    """Every tensor the op reads or writes must have a static shape.

    The device is compiled for fixed shapes: symbolic dims (``batch``) and dims shape inference
    cannot work out both fall back. Fixing the input shapes and folding the shape arithmetic
    usually makes the whole graph static.
    """
    problems = []
    for role, tensor in node.shaped_tensors():
        if tensor.shape is None:
            problems.append(f"{role} has an unknown shape")
        elif not tensor.static:
            problems.append(f"{role} has dims {dims_text(tensor.shape)}")
    return (not problems, "; ".join(problems[:3]))


@constraint("tensor.rank", when=lambda t: t.tensors.max_rank is not None)
def constraint_rank(node: NodeView, target: Target) -> Result:
    """Tensors must have rank at most {tensors.max_rank}."""
    limit = target.tensors.max_rank
    assert limit is not None
    problems = [f"{role} has rank {tensor.rank}" for role, tensor in node.shaped_tensors() if tensor.rank is not None and tensor.rank > limit]
    return (not problems, "; ".join(problems[:3]))


@constraint("tensor.op-rank", when=lambda t: bool(t.ops.max_rank))
def constraint_op_rank(node: NodeView, target: Target) -> Result:
    """Some ops take lower ranks than the tensors' limit: {ops.max_rank}."""
    limit = target.ops.max_rank.get(node.op)
    if limit is None:
        return OK
    problems = [f"{role} has rank {tensor.rank}" for role, tensor in node.shaped_tensors() if tensor.rank is not None and tensor.rank > limit]
    return (not problems, "; ".join(problems[:3]))


@constraint("tensor.dims", when=lambda t: t.tensors.max_dim is not None)
def constraint_dims(node: NodeView, target: Target) -> Result:
    """Every dim must be between 1 and {tensors.max_dim}."""
    limit = target.tensors.max_dim
    assert limit is not None
    problems = []
    for role, tensor in node.shaped_tensors():
        bad = [d for d in tensor.shape or () if isinstance(d, int) and not 1 <= d <= limit]
        if bad:
            problems.append(f"{role} has dims {dims_text(tensor.shape)}")
    return (not problems, "; ".join(problems[:3]))


@constraint("tensor.batch", when=lambda t: t.tensors.max_batch is not None, fix="fix the batch size to 1: --input-shape NAME:1,... or --dim BATCH_DIM=1")
def constraint_batch(node: NodeView, target: Target) -> Result:
    """Feature maps (rank 3 or more) must have a batch (axis 0) of at most {tensors.max_batch}."""
    limit = target.tensors.max_batch
    assert limit is not None
    problems = []
    for role, tensor in node.shaped_tensors():
        if tensor.weight or tensor.shape is None or len(tensor.shape) < 3:
            continue
        batch = tensor.shape[0]
        if isinstance(batch, int) and batch > limit:
            problems.append(f"{role} has batch {batch}")
    return (not problems, "; ".join(problems[:3]))


@constraint("dtype.data", fix=fix_dtype)
def constraint_data_dtypes(node: NodeView, target: Target) -> Result:
    """Data tensors must have one of the target's dtypes: {tensors.dtypes}; {derived.float32_policy}.

    Ops with their own list: {derived.op_dtypes}. In a QDQ model an op computes on the quantized
    type of the DequantizeLinear before it and QuantizeLinear after it. Parameter inputs
    (shapes, axes, quantization scales) are compile-time constants and exempt; biases follow
    the bias dtypes ({tensors.bias_dtypes}).
    """
    allowed = target.op_dtypes(node.op)
    problems = []
    for role, tensor in node.data_tensors():
        if tensor.dtype is not None and not _dtype_ok(tensor.dtype, allowed, target):
            problems.append(f"{role} is {tensor.dtype}")
    for position in BIAS_INPUTS.get(node.op, ()):
        bias = node.input(position)
        if bias is not None and bias.dtype is not None:
            if not (_dtype_ok(bias.dtype, allowed, target) or bias.dtype in target.tensors.bias_dtypes):
                problems.append(f"bias {bias.name!r} is {bias.dtype}")
    return (not problems, "; ".join(dict.fromkeys(problems[:3])))


def _dtype_ok(dtype: str, allowed: frozenset[str], target: Target) -> bool:
    if dtype in allowed:
        return True
    return dtype == "float32" and target.tensors.float32_as is not None and target.tensors.float32_as in allowed


@constraint("params.constant", ops=PARAMETER_INPUTS, fix=fix_parameters)
def constraint_constant_parameters(node: NodeView, target: Target) -> Result:
    """Parameter inputs (shapes, axes, pads, scales, indices, bounds) must be compile-time constants.

    A Reshape whose shape is computed from ``Shape`` at run time, or a Gather whose indices
    are data (an embedding lookup), cannot be compiled for the device; gathers with data
    indices can where the target says so (gather dynamic indices: {limits.gather_dynamic_indices}).
    """
    if node.op in GATHER_OPS and target.limits.gather_dynamic_indices:
        return OK
    problems = []
    for position in PARAMETER_INPUTS.get(node.op, ()):
        tensor = node.input(position)
        if tensor is not None and not tensor.constant:
            problems.append(f"input {position} ({tensor.name!r}) is computed at run time")
    return (not problems, "; ".join(problems[:3]))


@constraint("weights.constant", ops=WEIGHT_INPUTS)
def constraint_constant_weights(node: NodeView, target: Target) -> Result:
    """Weights and biases of Conv, ConvTranspose and Gemm must be constants (Gemm's computed weights allowed: {limits.gemm_dynamic_weights}).

    Initializers count, also behind a DequantizeLinear (quantized weights).
    """
    if node.op == "Gemm" and target.limits.gemm_dynamic_weights:
        return OK
    problems = []
    for position in WEIGHT_INPUTS.get(node.op, ()):
        tensor = node.input(position)
        if tensor is not None and not tensor.weight:
            problems.append(f"input {position} ({tensor.name!r}) is computed at run time")
    return (not problems, "; ".join(problems))


@constraint("matmul.constant-weights", ops=("MatMul", "MatMulInteger"), when=lambda t: not t.limits.matmul_dynamic_weights)
def constraint_matmul_weights(node: NodeView, target: Target) -> Result:
    """MatMul's second operand must be a constant: the device has no activation-by-activation product.

    Attention scores (Q·Kᵀ) and context (P·V) multiply two activations and stay on the host.
    """
    weights = node.input(1)
    if weights is None or weights.weight:
        return OK
    return False, f"operand {weights.name!r} is computed at run time"


@constraint("matmul.dynamic-dtype", ops=("MatMul",), when=lambda t: t.limits.matmul_dynamic_dtypes is not None)
def constraint_matmul_dynamic_dtype(node: NodeView, target: Target) -> Result:
    """A MatMul of two activations must compute in one of: {limits.matmul_dynamic_dtypes}.

    Qualcomm HTP refuses a 16-bit signed activation-by-activation MatMul (QNN
    ``backendValidateOpConfig`` error 3110, "Failed to add fused Matmul node").
    """
    allowed = target.limits.matmul_dynamic_dtypes or frozenset()
    operands = [node.input(0), node.input(1)]
    if any(operand is None or operand.weight for operand in operands):
        return OK
    problems = [f"operand {operand.name!r} is {operand.dtype}" for operand in operands if operand is not None and operand.dtype is not None and not _dtype_ok(operand.dtype, allowed, target)]
    return (not problems, "; ".join(problems))


# -- convolution --------------------------------------------------------------------------------------


def _kernel(node: NodeView) -> list[int] | None:
    kernel = node.attr("kernel_shape")
    if kernel:
        return [int(k) for k in kernel]
    weights = node.input(1)
    if weights is not None and weights.shape is not None and is_static(weights.shape[2:]):
        return [int(d) for d in weights.shape[2:]]  # type: ignore[arg-type]
    return None


def _dilated_kernel(node: NodeView) -> list[int] | None:
    kernel = _kernel(node)
    if kernel is None:
        return None
    dilations = list(node.attr("dilations") or [1] * len(kernel))
    return [d * (k - 1) + 1 for k, d in zip(kernel, dilations)]


def _hw(values: list[int]) -> str:
    return "x".join(str(v) for v in values)


@constraint("conv.spatial-dims", ops=CONV_OPS, when=lambda t: t.conv.max_spatial_dims is not None)
def constraint_conv_spatial_dims(node: NodeView, target: Target) -> Result:
    """Conv and ConvTranspose may have at most {conv.max_spatial_dims} spatial dims."""
    kernel = _kernel(node)
    limit = target.conv.max_spatial_dims
    if kernel is None or limit is None or len(kernel) <= limit:
        return OK
    return False, f"the kernel is {len(kernel)}-D ({_hw(kernel)})"


@constraint("conv.kernel-height", ops=CONV_OPS, when=lambda t: t.conv.max_kernel_height is not None)
def constraint_conv_kernel_height(node: NodeView, target: Target) -> Result:
    """The dilated kernel height must be at most {conv.max_kernel_height}.

    Height is the first spatial axis (the only one of a 1-D convolution); the dilated extent is
    ``dilation * (kernel - 1) + 1``.
    """
    kernel = _dilated_kernel(node)
    limit = target.conv.max_kernel_height
    if not kernel or limit is None or kernel[0] <= limit:
        return OK
    return False, f"the dilated kernel height is {kernel[0]}"


@constraint("conv.kernel-width", ops=CONV_OPS, when=lambda t: t.conv.max_kernel_width is not None)
def constraint_conv_kernel_width(node: NodeView, target: Target) -> Result:
    """The dilated kernel width must be at most {conv.max_kernel_width}."""
    kernel = _dilated_kernel(node)
    limit = target.conv.max_kernel_width
    if not kernel or len(kernel) < 2 or limit is None or kernel[1] <= limit:
        return OK
    return False, f"the dilated kernel width is {kernel[1]}"


@constraint("conv.kernel-area", ops=CONV_OPS, when=lambda t: t.conv.max_kernel_area is not None)
def constraint_conv_kernel_area(node: NodeView, target: Target) -> Result:
    """The kernel area (product of the kernel dims) must be at most {conv.max_kernel_area}."""
    kernel = _kernel(node)
    limit = target.conv.max_kernel_area
    if not kernel or limit is None or int(np.prod(kernel)) <= limit:
        return OK
    return False, f"the kernel is {_hw(kernel)} = {int(np.prod(kernel))}"


def _stride_range(target: Target) -> tuple[int, int]:
    return target.conv.min_stride or 1, target.conv.max_stride or 1 << 30


@constraint("conv.stride", ops=("Conv",), when=lambda t: t.conv.min_stride is not None or t.conv.max_stride is not None)
def constraint_conv_stride(node: NodeView, target: Target) -> Result:
    """Conv strides must be between {conv.min_stride} and {conv.max_stride}."""
    strides = [int(s) for s in node.attr("strides") or []]
    low, high = _stride_range(target)
    if all(low <= s <= high for s in strides):
        return OK
    return False, f"strides are {_hw(strides)}"


@constraint("conv.transpose-stride", ops=("ConvTranspose",), when=lambda t: t.conv.transpose_max_stride is not None)
def constraint_conv_transpose_stride(node: NodeView, target: Target) -> Result:
    """ConvTranspose strides must be at most {conv.transpose_max_stride}."""
    strides = [int(s) for s in node.attr("strides") or []]
    limit = target.conv.transpose_max_stride
    if limit is None or all(s <= limit for s in strides):
        return OK
    return False, f"strides are {_hw(strides)}"


@constraint("conv.dilation", ops=CONV_OPS, when=lambda t: t.conv.max_dilation is not None)
def constraint_conv_dilation(node: NodeView, target: Target) -> Result:
    """Dilations must be at most {conv.max_dilation}."""
    dilations = [int(d) for d in node.attr("dilations") or []]
    limit = target.conv.max_dilation
    if limit is None or all(d <= limit for d in dilations):
        return OK
    return False, f"dilations are {_hw(dilations)}"


@constraint("conv.channels", ops=CONV_OPS, when=lambda t: t.conv.max_channels is not None)
def constraint_conv_channels(node: NodeView, target: Target) -> Result:
    """Input and output channels (axis 1) must be at most {conv.max_channels}."""
    limit = target.conv.max_channels
    assert limit is not None
    problems = []
    for role, tensor in (("input", node.input(0)), ("output", node.outputs[0] if node.outputs else None)):
        if tensor is not None and tensor.shape is not None and len(tensor.shape) > 1:
            channels = tensor.shape[1]
            if isinstance(channels, int) and channels > limit:
                problems.append(f"{role} has {channels} channels")
    return (not problems, "; ".join(problems))


@constraint("conv.groups", ops=CONV_OPS, when=lambda t: not t.conv.grouped)
def constraint_conv_groups(node: NodeView, target: Target) -> Result:
    """Grouped convolutions must be ordinary (group 1) or depthwise (group = input channels)."""
    group = int(node.attr("group", 1))
    data = node.input(0)
    channels = data.shape[1] if data is not None and data.shape is not None and len(data.shape) > 1 else None
    if group == 1 or group == channels:
        return OK
    return False, f"group is {group} for {channels if channels is not None else 'unknown'} input channels"


# -- pooling --------------------------------------------------------------------------------------------


@constraint("pool.kernel-height", ops=POOL_OPS, when=lambda t: t.pool.max_kernel_height is not None)
def constraint_pool_kernel_height(node: NodeView, target: Target) -> Result:
    """Pooling kernel height must be at most {pool.max_kernel_height}."""
    kernel = [int(k) for k in node.attr("kernel_shape") or []]
    limit = target.pool.max_kernel_height
    if not kernel or limit is None or kernel[0] <= limit:
        return OK
    return False, f"the kernel height is {kernel[0]}"


@constraint("pool.kernel-area", ops=POOL_OPS, when=lambda t: t.pool.max_kernel_area is not None)
def constraint_pool_kernel_area(node: NodeView, target: Target) -> Result:
    """Pooling kernel area must be at most {pool.max_kernel_area}."""
    kernel = [int(k) for k in node.attr("kernel_shape") or []]
    limit = target.pool.max_kernel_area
    if not kernel or limit is None or int(np.prod(kernel)) <= limit:
        return OK
    return False, f"the kernel is {_hw(kernel)} = {int(np.prod(kernel))}"


@constraint("pool.stride", ops=POOL_OPS, when=lambda t: t.pool.min_stride is not None or t.pool.max_stride is not None)
def constraint_pool_stride(node: NodeView, target: Target) -> Result:
    """Pooling strides must be between {pool.min_stride} and {pool.max_stride}."""
    strides = [int(s) for s in node.attr("strides") or []]
    low, high = target.pool.min_stride or 1, target.pool.max_stride or 1 << 30
    if all(low <= s <= high for s in strides):
        return OK
    return False, f"strides are {_hw(strides)}"


@constraint("pool.padded-average", ops=("AveragePool",), when=lambda t: t.pool.max_padded_avg_kernel is not None)
def constraint_padded_average_pool(node: NodeView, target: Target) -> Result:
    """AveragePool with padding may have a kernel of at most {pool.max_padded_avg_kernel} in each dim."""
    kernel = [int(k) for k in node.attr("kernel_shape") or []]
    padded = any(int(p) for p in node.attr("pads") or []) or node.attr("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER", b"SAME_UPPER", b"SAME_LOWER")
    limit = target.pool.max_padded_avg_kernel
    if not padded or limit is None or all(k <= limit for k in kernel):
        return OK
    return False, f"the kernel is {_hw(kernel)} with padding"


# -- other op families ----------------------------------------------------------------------------------


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@constraint("resize.mode", ops=("Resize",), when=lambda t: t.limits.resize_modes is not None)
def constraint_resize_mode(node: NodeView, target: Target) -> Result:
    """Resize mode must be one of: {limits.resize_modes}; only the last two axes may be scaled."""
    problems = []
    mode = _text(node.attr("mode", "nearest"))
    if target.limits.resize_modes is not None and mode not in target.limits.resize_modes:
        problems.append(f"mode is {mode}")
    data, out = node.input(0), node.outputs[0] if node.outputs else None
    if data is not None and out is not None and data.shape is not None and out.shape is not None and len(data.shape) > 2:
        if tuple(data.shape[:-2]) != tuple(out.shape[:-2]):
            problems.append(f"it resizes {dims_text(data.shape)} to {dims_text(out.shape)}")
    return (not problems, "; ".join(problems))


@constraint("pad.mode", ops=("Pad",), when=lambda t: t.limits.pad_modes is not None, fix="rewrite reflect/edge padding as Slice + Concat")
def constraint_pad_mode(node: NodeView, target: Target) -> Result:
    """Pad mode must be one of: {limits.pad_modes}."""
    mode = _text(node.attr("mode", "constant"))
    if target.limits.pad_modes is None or mode in target.limits.pad_modes:
        return OK
    return False, f"mode is {mode}"


@constraint("norm.last-axis", ops=NORMALIZING_OPS, when=lambda t: t.limits.normalize_last_axis_only)
def constraint_normalize_last_axis(node: NodeView, target: Target) -> Result:
    """Softmax, LogSoftmax and the normalizations must normalize over the last axis only."""
    data = node.input(0)
    if data is None or data.rank is None:
        return OK
    rank = data.rank
    default = -1 if node.op != "Softmax" or node.model.opset >= 13 else 1
    axis = int(node.attr("axis", default))
    axis = axis + rank if axis < 0 else axis
    if axis == rank - 1:
        return OK
    return False, f"axis is {axis} of a rank-{rank} input"


@constraint("reduce.axis-size", ops=REDUCE_OPS, when=lambda t: t.limits.max_reduce_axis is not None)
def constraint_reduce_axis_size(node: NodeView, target: Target) -> Result:
    """Each reduced axis may be at most {limits.max_reduce_axis} long."""
    data = node.input(0)
    limit = target.limits.max_reduce_axis
    if data is None or data.shape is None or limit is None:
        return OK
    axes = node.attr("axes") or node.constant_ints(1)
    rank = len(data.shape)
    chosen = range(rank) if not axes else [int(a) + rank if int(a) < 0 else int(a) for a in axes]
    long_axes = [a for a in chosen if 0 <= a < rank and isinstance(data.shape[a], int) and data.shape[a] > limit]
    if not long_axes:
        return OK
    return False, "reduces " + ", ".join(f"axis {a} of size {data.shape[a]}" for a in long_axes)


# -- quantization ---------------------------------------------------------------------------------------


@constraint("qdq.graph-boundary", ops=("QuantizeLinear", "DequantizeLinear"), when=lambda t: t.limits.boundary_qdq_on_host)
def constraint_boundary_qdq(node: NodeView, target: Target) -> Result:
    """A QuantizeLinear of a graph input, or a DequantizeLinear of a graph output, runs on the host.

    The device's graph takes and returns quantized tensors; converting the application's float
    tensors is the host's job. onnxruntime's QNN EP does this by default ("QNN EP is configured
    to not take Q nodes that consume a graph input" / "DQ nodes that generate a graph output").
    """
    graph = node.model.graph
    if node.op == "QuantizeLinear" and node.node.inputs and is_graph_input(graph, node.node.inputs[0]):
        return False, f"it quantizes graph input {node.node.inputs[0].name!r}"
    if node.op == "DequantizeLinear" and node.node.outputs and is_graph_output(graph, node.node.outputs[0]):
        if _after_channel_first_op(node.node):
            return OK  # the EP's NHWC layout transform puts a Transpose between it and the output
        return False, f"it dequantizes graph output {node.node.outputs[0].name!r}"
    return OK


@constraint("qdq.graph-input-reshape", ops=("DequantizeLinear", "Reshape", "QuantizeLinear"), when=lambda t: t.limits.boundary_qdq_on_host)
def constraint_graph_input_reshape(node: NodeView, target: Target) -> Result:
    """A Reshape unit between a graph input's boundary quantizer and a channel-first op runs on the host.

    onnxruntime-qnn 2.7.0 leaves ``Q(input) -> DQ -> Reshape -> Q -> DQ -> GlobalAveragePool``'s
    first four nodes on the CPU ("QNN EP is configured to not take Q nodes that consume a graph
    input", for the Reshape's unit too: by the look of it, the NHWC layout Transpose moved in
    front of the Reshape). Read by a Sigmoid, the same Reshape runs on HTP, and so does an
    Unsqueeze, MaxPool or Relu in its place. Found by the QNN property test (a Transpose that
    only moves a size-1 axis, which ``peephole`` makes a Reshape).
    """
    graph = node.model.graph
    if node.op == "DequantizeLinear":
        reshapes = [reader for reader in node.node.outputs[0].outputs if reader.op == "Reshape" and _feeds_channel_first_op(reader)] if node.node.outputs else []
        if reshapes and _dequantizes_graph_input(graph, node.node):
            return False, f"it feeds Reshape {reshapes[0].name!r} of graph input {producer(node.node.inputs[0]).inputs[0].name!r}"
        return OK
    reshape = node.node if node.op == "Reshape" else producer(node.node.inputs[0]) if node.node.inputs else None
    if reshape is None or reshape.op != "Reshape" or not reshape.inputs or not _feeds_channel_first_op(reshape):
        return OK
    source = producer(reshape.inputs[0])
    if source is not None and source.op == "DequantizeLinear" and _dequantizes_graph_input(graph, source):
        return False, f"it belongs to the Reshape of graph input {producer(source.inputs[0]).inputs[0].name!r}"
    return OK


def _feeds_channel_first_op(reshape: gs.Node) -> bool:
    """``reshape``'s output reaches a channel-first op through its QuantizeLinear/DequantizeLinear."""
    return any(
        reader.op in CHANNEL_FIRST_OPS
        for q in reshape.outputs[0].outputs if q.op == "QuantizeLinear"
        for dq in q.outputs[0].outputs if dq.op == "DequantizeLinear"
        for reader in dq.outputs[0].outputs
    ) if reshape.outputs else False


def _dequantizes_graph_input(graph: gs.Graph, dequantize: gs.Node) -> bool:
    """``dequantize`` reads the QuantizeLinear of a graph input."""
    source = producer(dequantize.inputs[0]) if dequantize.inputs else None
    return source is not None and source.op == "QuantizeLinear" and bool(source.inputs) and is_graph_input(graph, source.inputs[0])


#: Ops whose QDQ node unit takes a per-channel weight DequantizeLinear (at input 1).
PER_AXIS_READERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@constraint("qdq.standalone-per-axis", ops=("DequantizeLinear",), when=lambda t: not t.limits.standalone_per_axis_dequantize)
def constraint_standalone_per_axis(node: NodeView, target: Target) -> Result:
    """A per-channel DequantizeLinear runs only inside the QDQ node unit of the op it feeds.

    Qualcomm HTP takes per-channel weights as part of a Conv, ConvTranspose, Gemm or MatMul unit;
    when no unit takes the DequantizeLinear (another reader, a Gemm whose bias is not a 1-D
    int32 DequantizeLinear, an op whose output is not quantized, or one whose data input and
    output types differ, which the EP builds in float), the QNN EP refuses it ("QNN EP does not
    support a standalone DQ op with per-channel quantization"). A Conv -> Relu/Clip ->
    QuantizeLinear chain is a unit when the quantizer makes the activation redundant (the EP's
    ``conv_activation_fusion.cc``: Relu when the quantized range starts at or above 0, Clip when
    its bounds enclose the quantized range).
    """
    scale = node.node.inputs[1] if len(node.node.inputs) > 1 else None
    if scale is None or not node.node.outputs or not is_static(scale.shape) or int(np.prod([int(d) for d in scale.shape])) <= 1:
        return OK
    output = node.node.outputs[0]
    standalone = [reader for reader in output.outputs if not _takes_per_axis_weight(reader, output)]
    if not standalone and output.outputs:
        return OK
    who = ", ".join(f"{reader.op} {reader.name!r}" for reader in standalone) or "no reader"
    return False, f"its per-channel scale reaches {who} outside a weight unit"


def _takes_per_axis_weight(reader: gs.Node, tensor: gs.Tensor) -> bool:
    """``reader``'s node unit takes ``tensor``: its weight (with a unit-forming bias) or its int32
    bias, and its output is quantized."""
    if reader.op not in PER_AXIS_READERS or len(reader.inputs) < 2 or not _output_quantized(reader) or len(activation_types(reader)) > 1:
        return False
    has_bias = reader.op != "MatMul" and len(reader.inputs) > 2 and bool(reader.inputs[2].name)
    if reader.inputs[1] is tensor:
        return not has_bias or _is_int32_vector_bias(reader.inputs[2])
    return has_bias and reader.inputs[2] is tensor and _is_int32_vector_bias(tensor)


def _output_quantized(node: gs.Node) -> bool:
    """Every output of ``node`` is read by QuantizeLinear nodes only, or (a Conv's) by one
    Relu/Clip that the QuantizeLinear after it makes redundant."""
    if all(t.outputs and all(r.op == "QuantizeLinear" for r in t.outputs) for t in node.outputs):
        return True
    if node.op not in ("Conv", "ConvTranspose") or len(node.outputs) != 1 or len(node.outputs[0].outputs) != 1:
        return False
    activation = node.outputs[0].outputs[0]
    readers = activation.outputs[0].outputs if activation.op in ("Relu", "Clip") and activation.outputs else []
    return len(readers) == 1 and readers[0].op == "QuantizeLinear" and _activation_redundant(activation, readers[0])


def _activation_redundant(activation: gs.Node, quantizer: gs.Node) -> bool:
    """The per-tensor ``quantizer`` clamps at least where Relu/Clip ``activation`` does."""
    if len(quantizer.inputs) < 3:
        return False
    scale, zero_point = constant_value(quantizer.inputs[1]), constant_value(quantizer.inputs[2])
    if scale is None or zero_point is None or np.size(scale) != 1 or np.size(zero_point) != 1:
        return False
    info = np.iinfo(np.asarray(zero_point).dtype)
    scale, zero_point = float(np.asarray(scale).reshape(())), int(np.asarray(zero_point).reshape(()))
    low, high = scale * (info.min - zero_point), scale * (info.max - zero_point)
    if activation.op == "Relu":
        return low >= 0
    bounds = clip_bounds(activation)
    if bounds is None:
        return False
    epsilon = float(np.finfo(np.float32).eps)
    return (bounds[0] is None or bounds[0] - low <= epsilon) and (bounds[1] is None or high - bounds[1] <= epsilon)


def _is_int32_vector_bias(bias: gs.Tensor) -> bool:
    source = producer(bias)
    return source is not None and source.op == "DequantizeLinear" and bias.shape is not None and len(bias.shape) == 1 \
        and source.inputs[0].dtype == np.int32


#: Ops onnxruntime's layout transformation rewrites to channels-last for an NHWC execution
#: provider such as QNN's (``layout_transformation.cc``: the layout-sensitive ops).
CHANNEL_FIRST_OPS = frozenset({
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LRN",
    "DepthToSpace", "SpaceToDepth", "Resize", "InstanceNormalization", "BatchNormalization", "GridSample",
})  # fmt: skip


#: Ops onnxruntime's transpose optimizer moves the layout transform's Transpose through
#: (``transpose_optimizer``: elementwise ops, Concat, Q/DQ), towards the graph output.
TRANSPOSE_TRANSPARENT_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "Concat", "Add", "Sub", "Mul", "Div", "Max", "Min", "Relu", "Clip",
    "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "HardSwish", "Elu", "Abs", "Neg", "Exp", "Sqrt",
})  # fmt: skip


def _after_channel_first_op(dequantize: gs.Node) -> bool:
    """The DQ's data is a channel-first op's feature map (rank 3 or more), reached through ops
    the transpose optimizer moves the layout Transpose across; every non-constant input on the
    way must come from a channel-first op (with a graph input among them, the EP may keep the
    Transpose in front: QNN left a Concat of a Conv and the input unmoved)."""
    tensor = dequantize.inputs[0] if dequantize.inputs else None
    return tensor is not None and _channels_last_after_layout(tensor, {})


def _channels_last_after_layout(tensor: gs.Tensor, seen: dict[int, bool]) -> bool:
    if id(tensor) in seen:
        return seen[id(tensor)]
    seen[id(tensor)] = False
    source = producer(tensor)
    if source is None or tensor.shape is None or len(tensor.shape) < 3:
        return False
    if source.op in CHANNEL_FIRST_OPS:
        result = True
    elif source.op in TRANSPOSE_TRANSPARENT_OPS:
        data = source.inputs[:1] if source.op in ("QuantizeLinear", "DequantizeLinear", "Clip") else source.inputs
        variable = [t for t in data if constant_value(t) is None]
        result = bool(variable) and all(_channels_last_after_layout(t, seen) for t in variable)
    else:
        result = False
    seen[id(tensor)] = result
    return result


@constraint("matmul.single-element", ops=("MatMul", "Gemm"), when=lambda t: not t.limits.single_element_matmul)
def constraint_single_element_matmul(node: NodeView, target: Target) -> Result:
    """MatMul and Gemm must not read a single-element data input.

    Qualcomm HTP's compiler never finishes finalizing a FullyConnected of a ``[1, 1]`` input (the
    emulator was still compiling after minutes, 8- and 16-bit alike).
    """
    data = node.input(0)
    if data is None or data.shape is None or not data.static or int(np.prod([int(d) for d in data.shape])) != 1:  # type: ignore[arg-type]
        return OK
    return False, f"input {data.name!r} has shape {dims_text(data.shape)}"


@constraint("gemm.alpha", ops=("Gemm",), when=lambda t: not t.limits.gemm_any_alpha, fix="fold alpha into the constant weight")
def constraint_gemm_alpha(node: NodeView, target: Target) -> Result:
    """Gemm's alpha must be 1.

    Qualcomm HTP runs Gemm as FullyConnected, which "only support[s] alpha=1.0" (QNN EP).
    """
    alpha = float(node.attr("alpha", 1.0))
    if alpha == 1.0:
        return OK
    return False, f"alpha is {alpha:g}"


@constraint("rope.position-ids", ops=("RotaryEmbedding",), when=lambda t: not t.limits.rotary_position_ids)
def constraint_rotary_position_ids(node: NodeView, target: Target) -> Result:
    """RotaryEmbedding must take cos/sin already gathered per position, without position_ids.

    Qualcomm HTP builds a RotaryEmbedding whose caches are ``[batch, sequence, rotary_dim / 2]``
    and refuses one that gathers them by ``position_ids`` ("Failed to create native
    RotaryEmbedding node", ``backendValidateOpConfig``).
    """
    positions = node.input(3)
    if positions is None:
        return OK
    return False, f"it gathers its caches by position_ids {positions.name!r}"


@constraint("norm.scale-sign", ops=("LayerNormalization",), when=lambda t: t.limits.norm_scale_sign_matches_input,
            fix="quantize for this target (its quantization section sets norm_scale_type)")
def constraint_norm_scale_sign(node: NodeView, target: Target) -> Result:
    """A quantized LayerNorm scale must be signed exactly when its data input is, unless the bias
    is an 8- or 16-bit tensor.

    Qualcomm HTP (onnxruntime-qnn 2.7.0, emulated) validates LayerNorm with an int32 bias or none
    only for uint8/uint16 data with a uint8 scale, or int8 data with an int8 scale; any other mix
    fails ``backendValidateOpConfig`` (error 3110), and the QNN EP used to abort the process on
    it. With a uint8 bias it takes an int8 scale over unsigned data too, and InstanceNorm takes a
    scale of either sign.
    """
    data, scale, bias = node.input(0), node.input(1), node.input(2)
    if data is None or scale is None or data.dtype is None or scale.dtype is None:
        return OK
    if not (_is_integer(data.dtype) and _is_integer(scale.dtype)):
        return OK
    if data.dtype.startswith("u") == scale.dtype.startswith("u"):
        return OK
    if bias is not None and bias.dtype is not None and _is_integer(bias.dtype):
        return OK
    return False, f"the data is {data.dtype} and the scale {scale.dtype}" + (f" with a {bias.dtype} bias" if bias is not None else " without a bias")


def _is_integer(dtype: str) -> bool:
    return dtype.startswith(("int", "uint")) and dtype != "int32"


def constraints_for(target: Target) -> list[Constraint]:
    """The constraints that make up ``target``, allow constraints first, in registration order."""
    chosen = [c for c in registered_constraints() if target.kind in c.kinds and c.when(target)]
    return sorted(chosen, key=lambda c: c.kind != "allow")
