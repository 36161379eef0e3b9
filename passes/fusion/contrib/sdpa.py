"""The decomposed attention every contrib attention rewrite emits, and its masks.

Each contrib attention op becomes heads split out of ``[B, S, N*H]`` activations, K/V appended to
their past, ``softmax(Q Kᵀ · scale + mask) V`` on ``[B, N, S, H]`` tensors (in float32 for 16-bit
inputs, as the kernels compute) and the heads merged back: the form the ``attention`` rule fuses
into a standard ``Attention``. Masks are additive float tensors that broadcast to the scores
``[B, N, S, T]`` (``T`` = past + new keys), built the way onnxruntime's CPU kernels build theirs:
a padded key adds ``mask_filter_value`` (so a fully padded row still averages), a future key of a
causal op is excluded outright (it adds the type's lowest value, which zeroes its weight as the
kernel's exclusion does).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import NearMiss
from mapc.passes.fusion.context import Dim, FusionContext, same_dim, show_dims
from mapc.passes.fusion.contrib.common import ints

FIX_SHAPES = "fix the input shapes and fold shape arithmetic first (fix-shapes, fold-constants)"


def split_heads(ctx: FusionContext, x: gs.Tensor, heads: int, head_size: int, dtype: np.dtype) -> gs.Tensor:
    """``[B, S, heads*head_size]`` -> ``[B, heads, S, head_size]``."""
    split = ctx.node("Reshape", [x, ints(ctx, [0, 0, heads, head_size])], dtype=dtype, name="heads")
    return ctx.node("Transpose", [split], attrs={"perm": [0, 2, 1, 3]}, dtype=dtype, name="heads_first")


def merge_heads(ctx: FusionContext, context: gs.Tensor, hidden: int, out: gs.Tensor) -> gs.Tensor:
    """``[B, N, S, H]`` -> ``[B, S, N*H]`` (``hidden`` = N*H), typed like ``out``."""
    last = ctx.node("Transpose", [context], attrs={"perm": [0, 2, 1, 3]}, dtype=out.dtype, name="heads_last")
    return ctx.node("Reshape", [last, ints(ctx, [0, 0, hidden])], dtype=out.dtype, shape=ctx.shape(out), name="heads_merged")


def slice_last(ctx: FusionContext, x: gs.Tensor, start: int, end: int, dtype: np.dtype) -> gs.Tensor:
    """``x[..., start:end]``."""
    return ctx.node("Slice", [x, ints(ctx, [start]), ints(ctx, [end]), ints(ctx, [-1])], dtype=dtype, name="part")


def with_past(ctx: FusionContext, past: gs.Tensor | None, new: gs.Tensor, dtype: np.dtype) -> gs.Tensor:
    """The keys (or values) attended: ``Concat(past, new)`` on the sequence axis of ``[B, N, *, H]``."""
    if past is None:
        return new
    return ctx.node("Concat", [past, new], attrs={"axis": 2}, dtype=dtype, name="with_past")


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The type onnxruntime's CPU attention kernels compute in: float32 for 16-bit floats."""
    return np.dtype(np.float32) if dtype.itemsize < 4 else dtype


def cast_to(ctx: FusionContext, tensor: gs.Tensor, dtype: np.dtype) -> gs.Tensor:
    """``tensor`` as ``dtype`` (itself when it has that type already)."""
    if ctx.dtype(tensor) == dtype:
        return tensor
    return ctx.node("Cast", [tensor], attrs={"to": onnx.helper.np_dtype_to_tensor_dtype(dtype)}, dtype=dtype, name="attention_in")


def attend(ctx: FusionContext, q: gs.Tensor, k: gs.Tensor, v: gs.Tensor, scale: float, masks: list[gs.Tensor], dtype: np.dtype) -> gs.Tensor:
    """``softmax(q kᵀ · scale + Σ masks) v`` on ``[B, N, S, H]`` tensors of ``dtype`` (at most two
    masks). 16-bit floats are computed in float32 (Q, K, V and the masks cast up unless they are
    already, the result cast back), as the kernels do: float16 scores would round away what the
    kernels keep."""
    io_dtype, dtype = dtype, compute_dtype(dtype)
    q, k, v = (cast_to(ctx, t, dtype) for t in (q, k, v))
    masks = [cast_to(ctx, m, dtype) for m in masks]
    k_t = ctx.node("Transpose", [k], attrs={"perm": [0, 1, 3, 2]}, dtype=dtype, name="keys_t")
    scores = ctx.node("MatMul", [q, k_t], dtype=dtype, name="scores")
    scores = ctx.node("Mul", [scores, ctx.const(np.asarray(scale, dtype), "scale")], dtype=dtype, name="scaled_scores")
    for mask in masks:
        scores = ctx.node("Add", [scores, mask], dtype=dtype, name="masked_scores")
    probs = ctx.node("Softmax", [scores], attrs={"axis": -1}, dtype=dtype, name="probs")
    context = ctx.node("MatMul", [probs, v], dtype=dtype, name="context")
    if dtype == io_dtype:
        return context
    return ctx.node("Cast", [context], attrs={"to": onnx.helper.np_dtype_to_tensor_dtype(io_dtype)}, dtype=io_dtype, name="attention_out")


def mask_layout(ctx: FusionContext, mask: gs.Tensor, batch: Dim, seq: Dim, total: Dim) -> str:
    """How onnxruntime reads a key padding mask: ``"raw"`` (``[B, T]``, 0 masks), ``"raw3d"``
    (``[B, S, T]``) or ``"ends"`` (``[B]``: keys at and after the end are masked, T static).
    Raises :class:`NearMiss` for the other layouts or when the shapes do not prove which."""
    shape = ctx.shape(mask)
    dtype = ctx.dtype(mask)
    if shape is None or dtype is None or dtype.kind not in "iu":
        raise NearMiss("mask", f"the mask's shape or integer type is unknown ({show_dims(shape)}, {dtype})", FIX_SHAPES)
    if len(shape) == 2 and same_dim(shape[0], batch) and same_dim(shape[1], total):
        return "raw"
    if len(shape) == 3 and same_dim(shape[0], batch) and same_dim(shape[1], seq) and same_dim(shape[2], total):
        return "raw3d"
    if len(shape) == 1 and same_dim(shape[0], batch) and ctx.static(total) is not None:
        return "ends"
    raise NearMiss(
        "mask",
        f"the mask {show_dims(shape)} is not provably [batch, total] or [batch, seq, total] 0/1, or [batch] end positions with a "
        f"static total {total} (start positions, packed and 4-D masks are not rewritten)",
        FIX_SHAPES,
    )


def padding_mask(ctx: FusionContext, mask: gs.Tensor, layout: str, total: int | None, fill: float, dtype: np.dtype) -> gs.Tensor:
    """The additive mask ``[B, 1, 1 or S, T]`` of a key padding mask in ``layout``: 0 where a key
    is attended (raw value > 0, or position < end), ``fill`` where it is masked."""
    zero = ctx.const(np.asarray(0, dtype=ctx.dtype(mask)), "zero")
    if layout in ("raw", "raw3d"):
        keep = ctx.node("Greater", [mask, zero], dtype=np.dtype(bool), name="keep")
    else:
        ends = ctx.with_axes("Unsqueeze", mask, [1], dtype=ctx.dtype(mask), name="ends")
        positions = ctx.const(np.arange(total, dtype=ctx.dtype(mask))[None, :], "key_positions")
        keep = ctx.node("Less", [positions, ends], dtype=np.dtype(bool), name="keep")
    additive = ctx.node("Where", [keep, ctx.const(np.asarray(0.0, dtype), "unmasked"), ctx.const(np.asarray(fill, dtype), "mask_filter")],
                        dtype=dtype, name="additive_mask")
    return ctx.with_axes("Unsqueeze", additive, [1, 2] if layout != "raw3d" else [1], dtype=dtype, name="mask_heads")


def causal_mask(ctx: FusionContext, seq: int, past: int, dtype: np.dtype) -> gs.Constant:
    """``[1, 1, S, past+S]``: the type's lowest value where key ``j`` lies after query ``i``
    (``j > past + i``), 0 elsewhere. Every row keeps key 0, so no row is fully excluded."""
    rows, cols = np.arange(seq)[:, None], np.arange(past + seq)[None, :]
    return ctx.const(np.where(cols > past + rows, np.finfo(dtype).min, 0.0).astype(dtype)[None, None], "causal_mask")


def combine(ctx: FusionContext, masks: list[gs.Tensor], dtype: np.dtype) -> list[gs.Tensor]:
    """Sum the masks into one (the attention fusion takes at most two)."""
    if len(masks) <= 1:
        return masks
    total = masks[0]
    for mask in masks[1:]:
        total = ctx.node("Add", [total, mask], dtype=dtype, name="mask_sum")
    return [total]
