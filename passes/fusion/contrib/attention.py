"""onnxruntime's contrib ``Attention`` (packed QKV weights) -> the decomposed attention that the
``attention`` rule fuses into a standard ``Attention``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, op, optional_input, var
from mapc.passes.fusion.context import FusionContext, FusionRule, show_dims
from mapc.passes.fusion.contrib import sdpa
from mapc.passes.fusion.contrib.common import ORT, float_dtype, unread


@dataclass
class PackedPlan:
    dtype: np.dtype
    heads: int
    sizes: tuple[int, int, int]  # hidden sizes of Q, K, V
    seq: int | None
    past: int | None  # past length (0 without past)
    mask_layout: str | None
    causal: bool


class ContribAttentionToStandard(FusionRule):
    """com.microsoft Attention -> MatMul, Softmax attention that ``attention`` then fuses.

    Matches ``Attention(input, weights[, bias][, mask_index][, past][, attention_bias])`` with
    ``num_heads``, optional ``qkv_hidden_sizes``, ``unidirectional`` 0 or 1, no rotary, no shared
    past/present buffer, and a ``mask_index`` that is absent, a raw ``[B, T]`` or ``[B, S, T]`` 0/1
    mask or ``[B]`` end positions (T = past + S static). ``past`` is ``[2, B, N, P, H]``; the
    ``present`` output, when read, is past and new K/V stacked the same way. Produces what the CPU
    kernel computes: ``q, k, v`` from ``input @ weights + bias``, K/V appended to the past,
    ``softmax(q kᵀ · scale + m + causal + attention_bias) v`` with ``mask_filter_value`` added at
    padded keys and future keys excluded (``unidirectional``), heads merged back.
    """

    name = "contrib-attention"
    pattern = op.Attention(var("x"), ..., name="attention", domain=ORT)

    def check(self, match: Match, ctx: FusionContext) -> PackedPlan:
        node = match.root
        attrs = node.attrs
        if int(attrs.get("do_rotary", 0)) or int(attrs.get("past_present_share_buffer", 0)) or optional_input(node, 6) is not None:
            raise NearMiss("variant", "a rotary Attention or one sharing its past and present buffer is not rewritten", None)
        if not unread(ctx.graph, node, range(2, len(node.outputs))):
            raise NearMiss("outputs", "an output other than the attention and present is read", None)
        past = optional_input(node, 4)
        if past is None and not unread(ctx.graph, node, range(1, 2)):
            raise NearMiss("present", "present is read but there is no past", None)
        dtype = float_dtype(ctx, node.inputs[0])
        heads = int(attrs["num_heads"])
        weights, shape = ctx.shape(node.inputs[1]), ctx.shape(node.inputs[0])
        width = ctx.static(weights[1]) if weights is not None and len(weights) == 2 else None
        sizes = tuple(int(s) for s in attrs["qkv_hidden_sizes"]) if "qkv_hidden_sizes" in attrs else (None if width is None else (width // 3,) * 3)
        if shape is None or len(shape) != 3 or sizes is None or width is None or sum(sizes) != width or any(s % heads for s in sizes):
            raise NearMiss("shape", f"the input {show_dims(shape)} or packed weights {show_dims(weights)} are not [B, S, *] and "
                           "[*, q+k+v hidden] with hidden sizes divisible by num_heads", sdpa.FIX_SHAPES)
        seq = ctx.static(shape[1])
        past_len: int | None = 0
        if past is not None:
            past_shape = ctx.shape(past)
            if sizes[0] != sizes[1] or sizes[1] != sizes[2]:
                raise NearMiss("past", "a past needs equal Q, K and V hidden sizes", None)
            if past_shape is None or len(past_shape) != 5:
                raise NearMiss("past", f"the past {show_dims(past_shape)} is not [2, B, N, P, H]", sdpa.FIX_SHAPES)
            past_len = ctx.static(past_shape[3])
        causal = bool(int(attrs.get("unidirectional", 0)))
        total = None if seq is None or past_len is None else seq + past_len
        if causal and total is None:
            raise NearMiss("causal", "a unidirectional Attention needs static sequence and past lengths", sdpa.FIX_SHAPES)
        mask = optional_input(node, 3)
        keys = total if total is not None else (shape[1] if past_len == 0 else None)  # a symbolic S is T without past
        layout = None if mask is None else sdpa.mask_layout(ctx, mask, shape[0], shape[1], keys)
        return PackedPlan(dtype, heads, sizes, seq, past_len, layout, causal)

    def rewrite(self, match: Match, plan: PackedPlan, ctx: FusionContext) -> list[gs.Tensor]:
        node = match.root
        dtype, heads = plan.dtype, plan.heads
        hq, hk, hv = plan.sizes
        x, out = node.inputs[0], node.outputs[0]
        inner = sdpa.compute_dtype(dtype)  # the kernel projects 16-bit inputs in float32 too
        qkv = ctx.node("MatMul", [sdpa.cast_to(ctx, x, inner), sdpa.cast_to(ctx, node.inputs[1], inner)], dtype=inner, name="qkv")
        bias = optional_input(node, 2)
        if bias is not None:
            qkv = ctx.node("Add", [qkv, sdpa.cast_to(ctx, bias, inner)], dtype=inner, name="qkv_bias")
        q = sdpa.split_heads(ctx, sdpa.slice_last(ctx, qkv, 0, hq, inner), heads, hq // heads, inner)
        k = sdpa.split_heads(ctx, sdpa.slice_last(ctx, qkv, hq, hq + hk, inner), heads, hk // heads, inner)
        v = sdpa.split_heads(ctx, sdpa.slice_last(ctx, qkv, hq + hk, hq + hk + hv, inner), heads, hv // heads, inner)
        past = optional_input(node, 4)
        if past is not None:
            past_k, past_v = (sdpa.cast_to(ctx, ctx.node("Gather", [past, ctx.const(np.asarray(i, np.int64), "index")], attrs={"axis": 0},
                                                         dtype=dtype, name="past_part"), inner) for i in (0, 1))
            k, v = sdpa.with_past(ctx, past_k, k, inner), sdpa.with_past(ctx, past_v, v, inner)
        fill = float(node.attrs.get("mask_filter_value", -10000.0))
        masks = []
        mask = optional_input(node, 3)
        if mask is not None:
            total = None if plan.seq is None or plan.past is None else plan.seq + plan.past
            masks.append(sdpa.padding_mask(ctx, mask, plan.mask_layout, total, fill, sdpa.compute_dtype(dtype)))
        if plan.causal:
            masks.append(sdpa.causal_mask(ctx, plan.seq, plan.past, sdpa.compute_dtype(dtype)))
        masks = sdpa.combine(ctx, masks, sdpa.compute_dtype(dtype))
        attention_bias = optional_input(node, 5)
        if attention_bias is not None:
            masks.append(attention_bias)
        scale = float(node.attrs.get("scale", 0.0)) or (hq // heads) ** -0.5
        context = sdpa.attend(ctx, q, k, v, scale, masks, dtype)
        outputs = [sdpa.merge_heads(ctx, context, hv, out)]
        if len(node.outputs) > 1:
            if past is not None and not unread(ctx.graph, node, range(1, 2)):
                stacked = [ctx.with_axes("Unsqueeze", sdpa.cast_to(ctx, t, dtype), [0], dtype=dtype, name="present_part") for t in (k, v)]
                outputs.append(ctx.node("Concat", stacked, attrs={"axis": 0}, dtype=dtype, shape=ctx.shape(node.outputs[1]), name="present"))
            else:
                outputs.append(node.outputs[1])
        return outputs + list(node.outputs[2:])
