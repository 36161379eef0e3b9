"""Ops that compute nothing once shapes are static: bypass them (or make them one Reshape).

* ``Reshape``/``Expand``/``Squeeze``/``Unsqueeze``/``Flatten`` whose output shape is the input's;
* ``Cast``/``CastLike`` to the type the input already has;
* ``Transpose`` by the identity permutation, or one that only moves size-1 axes (a Reshape);
* ``Slice`` with unit steps that keeps the whole input;
* ``Concat`` of a single input, and inputs of size 0 along the Concat's axis;
* ``Gather``/``GatherND`` whose constant indices enumerate the input in order (a Reshape);
* ``ScatterND`` whose constant indices cover the whole data tensor in order (its updates, reshaped);
* ``Identity``, and ``Dropout`` at inference (``cleanup``'s no-ops).

Every rewrite is exact: the output holds the same elements in the same order. The rules are
shared: ``peephole`` runs :data:`IDENTITY_RULES`, ``cleanup`` :data:`NOOP_RULES`, ``fuse``
the Cast identity among its canonical forms and ``attention-mask`` :data:`INDEX_RULES` on mask
subgraphs.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from mapc.ir import RewriteContext, constant_value, int_constant, is_default_domain, rule, same_dtype, static_shape


@rule("Reshape", "Expand", "Squeeze", "Unsqueeze", "Flatten")
def identity_reshape(ctx: RewriteContext, node: gs.Node) -> bool:
    """A Reshape-like op whose output shape is its input's: the input."""
    return _same_shape(ctx, node)


def _same_shape(rw: RewriteContext, node: gs.Node) -> bool:
    data, result = node.inputs[0], node.outputs[0]
    shape = static_shape(data)
    return shape is not None and shape == static_shape(result) and same_dtype(data, result) and rw.bypass(node, data)


@rule("Cast", "CastLike")
def identity_cast(rw: RewriteContext, node: gs.Node) -> bool:
    """Cast or CastLike to the type its input already has: the input."""
    data = node.inputs[0]
    if data.dtype is None:
        return False
    if node.op == "Cast":
        target = node.attrs.get("to")
        if target is None or helper.np_dtype_to_tensor_dtype(np.dtype(data.dtype)) != target:
            return False
    elif len(node.inputs) < 2 or not same_dtype(data, node.inputs[1]):
        return False
    return rw.bypass(node, data)


@rule("Transpose")
def transpose_simplified(rw: RewriteContext, node: gs.Node) -> bool:
    """Transpose by the identity permutation: the input; one that only moves size-1 axes: a Reshape."""
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


@rule("Slice")
def identity_slice(rw: RewriteContext, node: gs.Node) -> bool:
    """Slice with unit steps that keeps the whole input: the input."""
    if len(node.inputs) >= 5 and not node.inputs[4].is_empty():
        steps = int_constant(node.inputs[4])
        if steps is None or not np.all(steps == 1):
            return False
    return _same_shape(rw, node)


@rule("Concat")
def single_input_concat(rw: RewriteContext, node: gs.Node) -> bool:
    """Concat of one input: the input."""
    return len(node.inputs) == 1 and rw.bypass(node, node.inputs[0])


@rule("Concat")
def empty_concat_inputs(rw: RewriteContext, node: gs.Node) -> bool:
    """Concat inputs of size 0 along the axis add nothing: dropped (partial rotary with every
    dim rotated concatenates an empty pass-through slice)."""
    shapes = [static_shape(tensor) for tensor in node.inputs]
    if len(node.inputs) < 2 or any(shape is None or not shape for shape in shapes):
        return False
    axis = int(node.attrs.get("axis", 0)) % len(shapes[0])
    kept = [tensor for tensor, shape in zip(node.inputs, shapes) if shape[axis] != 0]
    if not kept or len(kept) == len(node.inputs):
        return False
    if len(kept) == 1:
        return rw.bypass(node, kept[0])
    rw.become(node, "Concat", kept, {"axis": node.attrs.get("axis", 0)})
    return True


@rule("Gather")
def gather_in_order(rw: RewriteContext, node: gs.Node) -> bool:
    """Gather whose constant indices list the axis in order: the input (a Reshape to the index shape)."""
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


@rule("GatherND")
def gathernd_in_order(rw: RewriteContext, node: gs.Node) -> bool:
    """GatherND whose constant index rows enumerate the input in order: a Reshape (or the input)."""
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


@rule("ScatterND")
def scatternd_covering(rw: RewriteContext, node: gs.Node) -> bool:
    """ScatterND whose constant index rows cover the whole data tensor in order: its updates, reshaped."""
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


def _reshape_or_bypass(rw: RewriteContext, node: gs.Node, data: gs.Tensor, shape: tuple[int, ...]) -> bool:
    if static_shape(data) == shape:
        return rw.bypass(node, data)
    return rw.reshape(node, data, shape)


@rule("Identity", plain=False)
def identity_op(rw: RewriteContext, node: gs.Node) -> bool:
    """Identity: its input."""
    return is_default_domain(node) and bool(node.inputs) and bool(node.outputs) and rw.bypass(node, node.inputs[0])


@rule("Dropout", plain=False)
def inference_dropout(rw: RewriteContext, node: gs.Node) -> bool:
    """Dropout when not training (no training_mode, or a constant false one) whose mask is unused: its input."""
    if not is_default_domain(node) or not node.inputs or not node.outputs:
        return False
    if len(node.outputs) > 1 and not node.outputs[1].is_empty() and bool(node.outputs[1].outputs):
        return False
    if len(node.inputs) >= 3 and not node.inputs[2].is_empty():
        training = constant_value(node.inputs[2])
        if training is None or bool(np.asarray(training).any()):
            return False
    return rw.bypass(node, node.inputs[0])


#: The identities ``peephole`` runs, in order.
IDENTITY_RULES = [
    identity_reshape,
    identity_cast,
    transpose_simplified,
    identity_slice,
    single_input_concat,
    empty_concat_inputs,
    gather_in_order,
    gathernd_in_order,
    scatternd_covering,
]
#: Ops that compute nothing at inference (``cleanup``).
NOOP_RULES = [identity_op, inference_dropout, identity_cast]
#: Index plumbing that selects everything in order (``attention-mask`` runs them on mask subgraphs).
INDEX_RULES = [identity_slice, gather_in_order, gathernd_in_order, scatternd_covering]
