"""The cost model: MACs and bytes per node from static shapes, and roofline time per device.

Per node, :func:`node_work` counts multiply-accumulates (Conv, ConvTranspose, MatMul, Gemm,
Attention), element-wise work (outputs, or inputs for reductions and pooling windows) and the
bytes it moves: weights (constant inputs), activations read and written. Reshape-like ops are
views and cost nothing. A symbolic dim counts as the value the user fixed (``--dim``/shapes in
the pass context) or 1, and the report says the estimate assumed so.

:func:`node_seconds` turns work into time on one device: ``max(compute, memory) + op overhead``
where compute is MACs at the device's rate for the op's dtype plus element-wise work at its
vector rate, and memory is weights at main-memory bandwidth plus each activation at SRAM
bandwidth if it fits in SRAM (else main memory). On an accelerator, float32 counts as the
dtype the target computes it in, and QDQ ops as their quantized type.

These are estimates from data-sheet peaks, not measurements: they rank placements and show
where time goes; real numbers need the device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mapc.targets.spec import Performance, Target
from mapc.targets.views import NodeView, TensorView

#: Ops that only reinterpret a buffer: no compute and no memory traffic.
VIEW_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Constant", "Shape", "Size"})
#: Element-wise work per output element for ops heavier than one operation.
WORK_PER_ELEMENT = {
    "Softmax": 3,
    "LogSoftmax": 3,
    "LayerNormalization": 5,
    "RMSNormalization": 4,
    "InstanceNormalization": 4,
    "BatchNormalization": 2,
    "Gelu": 4,
    "Erf": 4,
    "RotaryEmbedding": 3,
    "Resize": 4,
}
REDUCTIONS = frozenset({"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "GlobalAveragePool", "GlobalMaxPool", "ArgMax", "ArgMin"})
SUB_BYTE = {"int4": 0.5, "uint4": 0.5}


@dataclass(frozen=True)
class Work:
    """What one node does: MACs, element-wise operations, and the tensors it touches."""

    macs: int
    vector_ops: int
    dtype: str
    weights: tuple[tuple[str, int], ...]
    activations: tuple[tuple[str, int], ...]
    assumed_dims: bool


def node_work(node: NodeView, dims: Mapping[str, int]) -> Work:
    """Count ``node``'s MACs, element-wise work and the elements of each tensor it touches."""
    assumed = False

    def count(tensor: TensorView | None) -> int:
        nonlocal assumed
        if tensor is None or tensor.shape is None:
            assumed = assumed or tensor is not None
            return 0
        total = 1
        for dim in tensor.shape:
            if isinstance(dim, int):
                total *= dim
            else:
                assumed = True
                total *= int(dims.get(dim, 1)) if isinstance(dim, str) else 1
        return total

    if node.op in VIEW_OPS:
        return Work(0, 0, _compute_dtype(node), (), (), False)
    weights = tuple((t.dtype or "float32", count(t)) for t in node.inputs if t is not None and t.weight)
    activations = tuple(
        (t.dtype or "float32", count(t)) for t in [*node.inputs, *node.outputs] if t is not None and not t.weight
    )
    macs = _macs(node, count)
    outputs = sum(count(t) for t in node.outputs)
    if node.op in REDUCTIONS:
        vector_ops = count(node.input(0))
    elif node.op in ("MaxPool", "AveragePool", "LpPool"):
        vector_ops = outputs * int(np.prod(node.attr("kernel_shape") or [1]))
    elif macs:
        vector_ops = outputs  # bias, requantization and activation of the output
    else:
        vector_ops = outputs * WORK_PER_ELEMENT.get(node.op, 1)
    return Work(int(macs), int(vector_ops), _compute_dtype(node), weights, activations, assumed)


def _compute_dtype(node: NodeView) -> str:
    for tensor in [node.input(0), *node.outputs]:
        if tensor is not None and tensor.dtype is not None:
            return tensor.dtype
    return "float32"


def _macs(node: NodeView, count) -> int:  # type: ignore[no-untyped-def]
    op = node.op
    if op == "Conv":
        weights = node.input(1)
        if weights is None or weights.shape is None or not node.outputs:
            return 0
        return count(node.outputs[0]) * _product(weights.shape[1:])
    if op == "ConvTranspose":
        weights = node.input(1)
        if weights is None or weights.shape is None:
            return 0
        return count(node.input(0)) * _product(weights.shape[1:])
    if op in ("MatMul", "MatMulInteger"):
        a = node.input(0)
        if a is None or a.shape is None or not a.shape or not node.outputs:
            return 0
        depth = a.shape[-1]
        return count(node.outputs[0]) * (depth if isinstance(depth, int) else 1)
    if op == "Gemm":
        a = node.input(0)
        if a is None or a.shape is None or len(a.shape) != 2 or not node.outputs:
            return 0
        depth = a.shape[0] if node.attr("transA", 0) else a.shape[1]
        return count(node.outputs[0]) * (depth if isinstance(depth, int) else 1)
    if op == "Attention":
        return _attention_macs(node)
    return 0


def _attention_macs(node: NodeView) -> int:
    query, key, value = node.input(0), node.input(1), node.input(2)
    if any(t is None or not t.static for t in (query, key, value)):
        return 0
    q, k, v = (tuple(int(d) for d in t.shape) for t in (query, key, value))  # type: ignore[union-attr]
    if len(q) == 4:  # [batch, heads, q_len, head_size]
        batch, heads, q_len, head = q
        return batch * heads * q_len * k[2] * (head + v[3])
    heads = int(node.attr("q_num_heads", 1))
    kv_heads = int(node.attr("kv_num_heads", heads)) or heads
    batch, q_len, hidden = q
    value_head = v[2] // kv_heads
    return batch * q_len * k[1] * (hidden + value_head * heads)


def _product(values: Sequence[object]) -> int:
    total = 1
    for value in values:
        total *= value if isinstance(value, int) else 1
    return total


def bytes_per_element(dtype: str, target: Target | None = None) -> float:
    """Storage size of one element; on an accelerator float32 takes the width it computes in."""
    if target is not None and dtype == "float32" and target.tensors.float32_as:
        dtype = target.tensors.float32_as
    if dtype in SUB_BYTE:
        return SUB_BYTE[dtype]
    try:
        return float(np.dtype(dtype).itemsize)
    except TypeError:
        return 2.0 if dtype in ("bfloat16", "float8") else 4.0


def node_seconds(work: Work, device: Performance, accelerator: Target | None = None) -> float:
    """Roofline time of one node on ``device`` (``accelerator`` given when it is the NPU)."""
    dtype = work.dtype
    if accelerator is not None and dtype == "float32" and accelerator.tensors.float32_as:
        dtype = accelerator.tensors.float32_as
    clock = device.clock_mhz * 1e6
    compute = work.macs / (device.macs_rate(dtype) * clock) + work.vector_ops / (device.vector_ops_per_cycle * clock)
    main = device.memory_gbps * 1e9
    sram = (device.sram_gbps or device.memory_gbps) * 1e9
    sram_bytes = device.sram_kib * 1024
    memory = sum(n * bytes_per_element(t, accelerator) for t, n in work.weights) / main
    for tensor_dtype, elements in work.activations:
        size = elements * bytes_per_element(tensor_dtype, accelerator)
        memory += size / (sram if size <= sram_bytes else main)
    overhead = device.op_overhead_us * 1e-6 if (work.macs or work.vector_ops) else 0.0
    return max(compute, memory) + overhead


def transfer_seconds(nbytes: float, target: Target) -> float:
    """Time to move ``nbytes`` between host and device."""
    bandwidth = target.performance.transfer_gbps or target.performance.memory_gbps
    return nbytes / (bandwidth * 1e9)


def tensor_bytes(tensor: TensorView, dims: Mapping[str, int]) -> int:
    """Bytes of a tensor as the host stores it (symbolic dims as fixed, else 1)."""
    if tensor.shape is None:
        return 0
    total = 1
    for dim in tensor.shape:
        total *= dim if isinstance(dim, int) else int(dims.get(dim, 1)) if isinstance(dim, str) else 1
    return int(total * bytes_per_element(tensor.stored_dtype or "float32"))
