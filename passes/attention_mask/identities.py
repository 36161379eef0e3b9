"""R5 follow-up: identity index chains in mask subgraphs collapse once shapes are static.

After shapes are fixed and the causal part folded, exporters' masks keep index plumbing whose
constant indices enumerate the whole tensor in order (the research note's R5 listings):

* ``Slice`` whose constant bounds cover every axis fully: the identity;
* ``Gather`` whose constant indices are ``0..n-1`` along the axis: the identity;
* ``GatherND`` (``batch_dims=0``) whose constant index rows enumerate every element in order:
  a ``Reshape`` to the index grid's shape (the identity when shapes agree);
* ``ScatterND`` whose constant index rows cover every element in order: its ``updates``
  (reshaped to the data's shape).

Only nodes on mask paths are touched, and only when every shape involved is a known integer.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, replace_all_uses
from mapc.passes.attention_mask.fills import small_constant


def collapse_identities(model: Model, nodes: Iterable[gs.Node]) -> int:
    """Bypass the identity index nodes among ``nodes``; return how many were bypassed."""
    collapsed = 0
    for node in list(nodes):
        if not node.outputs or not node.inputs:
            continue
        replacement = _identity_source(model, node)
        if replacement is not None:
            replace_all_uses(model, node.outputs[0], replacement)
            collapsed += 1
    return collapsed


def _static(shape: object) -> tuple[int, ...] | None:
    if shape is None or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):  # type: ignore[union-attr]
        return None
    return tuple(int(d) for d in shape)  # type: ignore[union-attr]


def _identity_source(model: Model, node: gs.Node) -> gs.Tensor | None:
    data = node.inputs[0]
    shape = _static(data.shape)
    if shape is None or (node.domain or "") not in ("", "ai.onnx"):
        return None
    if node.op == "Slice":
        return data if _full_slice(node, shape) else None
    if node.op == "Gather":
        indices = small_constant(node.inputs[1])
        axis = int(node.attrs.get("axis", 0)) % max(len(shape), 1)
        if indices is None or indices.ndim != 1 or not shape:
            return None
        normalized = np.where(indices < 0, indices + shape[axis], indices)
        return data if np.array_equal(normalized, np.arange(shape[axis])) else None
    if node.op == "GatherND" and int(node.attrs.get("batch_dims", 0)) == 0:
        indices = small_constant(node.inputs[1])
        if indices is None or not _enumerates(indices, shape):
            return None
        return _reshaped(model, data, indices.shape[:-1])
    if node.op == "ScatterND" and node.attrs.get("reduction", "none") == "none":
        indices = small_constant(node.inputs[1])
        updates = node.inputs[2]
        if indices is None or not _enumerates(indices, shape):
            return None
        return _reshaped(model, updates, shape)
    return None


def _full_slice(node: gs.Node, shape: tuple[int, ...]) -> bool:
    parts = [small_constant(t) for t in node.inputs[1:]]
    if len(parts) < 2 or any(p is None for p in parts):
        return False
    starts, ends = parts[0], parts[1]
    axes = parts[2] if len(parts) > 2 and parts[2] is not None else np.arange(len(starts))
    steps = parts[3] if len(parts) > 3 and parts[3] is not None else np.ones(len(starts), np.int64)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        size = shape[int(axis) % len(shape)]
        if step != 1:
            return False
        begin = max(0, start + size) if start < 0 else min(start, size)
        finish = max(0, end + size) if end < 0 else min(end, size)
        if begin != 0 or finish != size:
            return False
    return True


def _enumerates(indices: np.ndarray, shape: tuple[int, ...]) -> bool:
    """True if the index rows (last axis) list every element of ``shape`` once, in C order."""
    if indices.ndim < 1 or indices.shape[-1] != len(shape) or indices.size // max(len(shape), 1) != int(np.prod(shape)):
        return False
    rows = indices.reshape(-1, len(shape))
    rows = np.where(rows < 0, rows + np.asarray(shape), rows)
    expected = np.indices(shape).reshape(len(shape), -1).T
    return np.array_equal(rows, expected)


def _reshaped(model: Model, tensor: gs.Tensor, shape: tuple[int, ...]) -> gs.Tensor:
    if _static(tensor.shape) == tuple(shape):
        return tensor
    out = gs.Variable(model.fresh_name("attention_mask_reshape"), dtype=tensor.dtype, shape=list(shape))
    target = gs.Constant(model.fresh_name("attention_mask_shape"), np.asarray(shape, dtype=np.int64))
    model.graph.nodes.append(gs.Node("Reshape", name=model.fresh_name("attention_mask/Reshape"), inputs=[tensor, target], outputs=[out]))
    return out
