"""Ops that compute nothing once shapes are static: bypass them (or make them one Reshape).

* ``Reshape``/``Expand``/``Squeeze``/``Unsqueeze``/``Flatten`` whose output shape is the input's;
* ``Cast``/``CastLike`` to the type the input already has;
* ``Transpose`` by the identity permutation, or one that only moves size-1 axes (a Reshape);
* ``Slice`` with unit steps that keeps the whole input;
* ``Concat`` of a single input;
* ``Gather``/``GatherND`` whose constant indices enumerate the input in order (a Reshape);
* ``ScatterND`` whose constant indices cover the whole data tensor in order (its updates, reshaped).

Every rewrite is exact: the output holds the same elements in the same order.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import dtype_to_onnx

from mapc.passes.peephole.rewrite import Rewriter, Rule, int_constant, is_plain, same_dtype, static_shape


def same_shape(rw: Rewriter, node: gs.Node) -> bool:
    data, result = node.inputs[0], node.outputs[0]
    shape = static_shape(data)
    return shape is not None and shape == static_shape(result) and same_dtype(data, result) and rw.bypass(node, data)


def cast_to_same_type(rw: Rewriter, node: gs.Node) -> bool:
    data = node.inputs[0]
    if data.dtype is None:
        return False
    if node.op == "Cast":
        target = node.attrs.get("to")
        if target is None or dtype_to_onnx(np.dtype(data.dtype)) != target:
            return False
    elif len(node.inputs) < 2 or not same_dtype(data, node.inputs[1]):
        return False
    return rw.bypass(node, data)


def transpose(rw: Rewriter, node: gs.Node) -> bool:
    data = node.inputs[0]
    shape = static_shape(data)
    rank = len(shape) if shape is not None else (len(data.shape) if data.shape is not None else None)
    if rank is None:
        return False
    perm = list(node.attrs.get("perm", range(rank - 1, -1, -1)))
    if perm == list(range(rank)):
        return rw.bypass(node, data)
    if shape is None:
        return False
    moved = [axis for axis in perm if shape[axis] != 1]
    if moved != sorted(moved):
        return False
    return _reshape_or_bypass(rw, node, data, tuple(shape[axis] for axis in perm))


def full_slice(rw: Rewriter, node: gs.Node) -> bool:
    if len(node.inputs) >= 5 and not node.inputs[4].is_empty():
        steps = int_constant(node.inputs[4])
        if steps is None or not np.all(steps == 1):
            return False
    return same_shape(rw, node)


def single_concat(rw: Rewriter, node: gs.Node) -> bool:
    return len(node.inputs) == 1 and rw.bypass(node, node.inputs[0])


def gather_in_order(rw: Rewriter, node: gs.Node) -> bool:
    data, indices = node.inputs[0], node.inputs[1]
    shape, index = static_shape(data), int_constant(indices)
    if shape is None or index is None or not shape:
        return False
    axis = int(node.attrs.get("axis", 0)) % len(shape)
    size = shape[axis]
    flat = np.where(index < 0, index + size, index).reshape(-1)
    if not np.array_equal(flat, np.arange(size)):
        return False
    return _reshape_or_bypass(rw, node, data, shape[:axis] + tuple(index.shape) + shape[axis + 1 :])


def gathernd_in_order(rw: Rewriter, node: gs.Node) -> bool:
    data, indices = node.inputs[0], node.inputs[1]
    shape, index = static_shape(data), int_constant(indices)
    batch = int(node.attrs.get("batch_dims", 0))
    if shape is None or index is None or index.ndim < 1:
        return False
    depth = index.shape[-1]
    if depth < 1 or batch + depth > len(shape) or tuple(index.shape[:batch]) != shape[:batch]:
        return False
    if not _enumerates(index, shape[batch : batch + depth], batch):
        return False
    return _reshape_or_bypass(rw, node, data, tuple(index.shape[:-1]) + shape[batch + depth :])


def scatternd_covering(rw: Rewriter, node: gs.Node) -> bool:
    data, indices, updates = node.inputs[0], node.inputs[1], node.inputs[2]
    shape, index = static_shape(data), int_constant(indices)
    if shape is None or index is None or index.ndim < 1 or node.attrs.get("reduction", "none") != "none":
        return False
    depth = index.shape[-1]
    if depth < 1 or depth > len(shape) or not _enumerates(index, shape[:depth], 0):
        return False
    return same_dtype(updates, data) and _reshape_or_bypass(rw, node, updates, shape)


def _enumerates(index: np.ndarray, dims: tuple[int, ...], batch: int) -> bool:
    """True if, for every batch position, ``index`` lists every position of ``dims`` once, in
    row-major order (negative indices count from the end)."""
    count = int(np.prod(dims, dtype=np.int64))
    batches = int(np.prod(index.shape[:batch], dtype=np.int64))
    if int(np.prod(index.shape[batch:-1], dtype=np.int64)) != count:
        return False
    sizes = np.asarray(dims, dtype=np.int64)
    normalized = np.where(index < 0, index + sizes, index).reshape(batches, count, len(dims))
    grid = np.stack(np.unravel_index(np.arange(count), dims), axis=-1) if count else np.zeros((0, len(dims)), np.int64)
    return bool(np.all(normalized == grid[None]))


def _reshape_or_bypass(rw: Rewriter, node: gs.Node, data: gs.Tensor, shape: tuple[int, ...]) -> bool:
    if static_shape(data) == shape:
        return rw.bypass(node, data)
    return rw.reshape(node, data, shape)


def _plain(rule):  # type: ignore[no-untyped-def]
    def guarded(rw: Rewriter, node: gs.Node) -> bool:
        return is_plain(node) and bool(node.inputs) and len(node.outputs) == 1 and rule(rw, node)

    return guarded


RULES = [
    Rule("identity_reshape", ("Reshape", "Expand", "Squeeze", "Unsqueeze", "Flatten"), _plain(same_shape)),
    Rule("identity_cast", ("Cast", "CastLike"), _plain(cast_to_same_type)),
    Rule("transpose_simplified", ("Transpose",), _plain(transpose)),
    Rule("identity_slice", ("Slice",), _plain(full_slice)),
    Rule("single_input_concat", ("Concat",), _plain(single_concat)),
    Rule("gather_in_order", ("Gather",), _plain(gather_in_order)),
    Rule("gathernd_in_order", ("GatherND",), _plain(gathernd_in_order)),
    Rule("scatternd_covering", ("ScatterND",), _plain(scatternd_covering)),
]
