"""onnxruntime's contrib ``MultiHeadAttention`` -> the decomposed attention that the ``attention``
rule fuses into a standard ``Attention``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, op, optional_input, var
from mapc.passes.fusion.context import Dim, FusionContext, FusionRule, same_dim, show_dims
from mapc.passes.fusion.contrib import sdpa
from mapc.passes.fusion.contrib.common import ORT, float_dtype, unread

#: Input slots of MultiHeadAttention.
QUERY, KEY, VALUE, BIAS, MASK, ATTENTION_BIAS, PAST_KEY, PAST_VALUE, PAST_LENGTH, CACHE_INDIRECTION = range(10)


@dataclass
class MhaPlan:
    dtype: np.dtype
    heads: int
    layout: str  # "separate" (3-D Q, K, V) or "bnsh" (K, V already [B, N, L, H])
    head_size: int  # of Q and K
    v_head_size: int
    seq: int | None
    total: int | None  # past + kv length
    past: int | None
    mask_layout: str | None
    causal: bool


class ContribMultiHeadAttentionToStandard(FusionRule):
    """com.microsoft MultiHeadAttention -> MatMul, Softmax attention that ``attention`` then fuses.

    Matches ``MultiHeadAttention(query, key, value[, bias][, key_padding_mask][, attention_bias]
    [, past_key, past_value])`` with Q, K, V ``[B, S|L, hidden]`` (self or cross attention) or K
    and V already split into heads ``[B, N, L, H]`` (cross attention on a computed cache, no
    bias); a past only with 3-D K/V; a key padding mask absent, raw ``[B, T]`` or ``[B, S, T]``
    (values <= 0 mask) or ``[B]`` end positions (T static); ``unidirectional`` 0 or 1 (self
    attention, static lengths). Produces what the CPU kernel computes: Q/K/V plus their bias
    slices, heads split, K/V appended to the past (the ``present_key``/``present_value`` outputs),
    ``softmax(q kᵀ · scale + mask + attention_bias) v`` with ``mask_filter_value`` at padded keys
    and future keys excluded, heads merged back; 16-bit floats biased and attended in float32. Left
    alone with a near-miss: packed KV/QKV (onnxruntime's CPU kernel does not implement them, so
    nothing could check the rewrite), the ``qk`` output read, a shared-buffer
    ``past_sequence_length``, a ``cache_indirection`` (beam search), the ``3*B+2`` mask layout.
    """

    name = "contrib-multi-head-attention"
    pattern = op.MultiHeadAttention(var("query"), ..., name="mha", domain=ORT)

    def check(self, match: Match, ctx: FusionContext) -> MhaPlan:
        node = match.root
        if optional_input(node, PAST_LENGTH) is not None or optional_input(node, CACHE_INDIRECTION) is not None:
            raise NearMiss("variant", "a shared past/present buffer (past_sequence_length) or beam search (cache_indirection) is not rewritten", None)
        if not unread(ctx.graph, node, range(3, len(node.outputs))):
            raise NearMiss("outputs", "the qk output is read", None)
        dtype = float_dtype(ctx, node.inputs[QUERY])
        heads = int(node.attrs["num_heads"])
        query, key, value = (ctx.shape(t) if t is not None else None for t in (optional_input(node, s) for s in (QUERY, KEY, VALUE)))
        layout, head_size, v_head_size, kv_seq = self._layout(ctx, node, heads, query, key, value)
        past_k, past_v = optional_input(node, PAST_KEY), optional_input(node, PAST_VALUE)
        past: int | None = 0
        if (past_k is None) != (past_v is None):
            raise NearMiss("past", "only one of past_key and past_value is given", None)
        if past_k is not None:
            shape = ctx.shape(past_k)
            if layout != "separate" or shape is None or len(shape) != 4 or not same_dim(shape[1], heads):
                raise NearMiss("past", f"a past {show_dims(shape)} is rewritten only as [B, N, P, H] with 3-D key and value", sdpa.FIX_SHAPES)
            past = ctx.static(shape[2])
        elif not unread(ctx.graph, node, range(1, 3)) and layout == "bnsh":
            raise NearMiss("present", "present outputs of a cross attention on a computed cache are not rewritten", None)
        seq = ctx.static(query[1])
        total = None if past is None or ctx.static(kv_seq) is None else past + ctx.static(kv_seq)
        causal = bool(int(node.attrs.get("unidirectional", 0)))
        if causal and (total is None or seq is None or total != past + seq):
            raise NearMiss("causal", "a unidirectional MultiHeadAttention is rewritten only as self attention with static sequence and past lengths",
                           sdpa.FIX_SHAPES)
        mask = optional_input(node, MASK)
        total_dim: Dim = total if total is not None else (kv_seq if past == 0 else None)
        mask_layout = None if mask is None else sdpa.mask_layout(ctx, mask, query[0], query[1], total_dim)
        return MhaPlan(dtype, heads, layout, head_size, v_head_size, seq, total, past, mask_layout, causal)

    @staticmethod
    def _layout(ctx: FusionContext, node: gs.Node, heads: int, query, key, value) -> tuple[str, int, int, Dim]:
        """(layout, Q/K head size, V head size, kv sequence dim) from the input shapes."""
        bias = optional_input(node, BIAS) is not None
        last = ctx.static(query[-1]) if query else None
        if query is None or last is None or len(query) not in (3, 5):
            raise NearMiss("shape", f"the query {show_dims(query)} is not [B, S, hidden] with a static hidden size", sdpa.FIX_SHAPES)
        if len(query) == 5 or (key is not None and len(key) == 5):
            raise NearMiss("packed", "packed QKV or KV: onnxruntime's CPU kernel does not implement it, so the rewrite could not be checked "
                           "against it", "unpack Q, K and V in the exporter")
        if last % heads:
            raise NearMiss("shape", f"the query's hidden size {last} is not divisible by num_heads {heads}", None)
        if key is None:
            raise NearMiss("shape", "there is no key", None)
        if value is None or len(key) != len(value) or len(key) not in (3, 4):
            raise NearMiss("shape", f"key {show_dims(key)} and value {show_dims(value)} are not both [B, L, hidden] or [B, N, L, H]", sdpa.FIX_SHAPES)
        if len(key) == 4:
            if bias or not (same_dim(key[1], heads) and same_dim(value[1], heads) and same_dim(key[2], value[2])) or ctx.static(key[3]) != last // heads:
                raise NearMiss("shape", f"key {show_dims(key)} and value {show_dims(value)} are not [B, N, L, H] (without bias)", sdpa.FIX_SHAPES)
            v_head = ctx.static(value[3])
            if v_head is None:
                raise NearMiss("shape", f"the value's head size is unknown {show_dims(value)}", sdpa.FIX_SHAPES)
            return "bnsh", last // heads, v_head, key[2]
        k_hidden, v_hidden = ctx.static(key[2]), ctx.static(value[2])
        if k_hidden != last or v_hidden is None or v_hidden % heads or not same_dim(key[1], value[1]):
            raise NearMiss("shape", f"key {show_dims(key)} and value {show_dims(value)} do not match the query {show_dims(query)}", sdpa.FIX_SHAPES)
        return "separate", last // heads, v_hidden // heads, key[1]

    def rewrite(self, match: Match, plan: MhaPlan, ctx: FusionContext) -> list[gs.Tensor]:
        node = match.root
        dtype, heads = plan.dtype, plan.heads
        inner = sdpa.compute_dtype(dtype)
        q, k, v = self._heads(ctx, node, plan)
        past_k, past_v = (optional_input(node, slot) for slot in (PAST_KEY, PAST_VALUE))
        k = sdpa.with_past(ctx, past_k if past_k is None else sdpa.cast_to(ctx, past_k, inner), k, inner)
        v = sdpa.with_past(ctx, past_v if past_v is None else sdpa.cast_to(ctx, past_v, inner), v, inner)
        fill = float(node.attrs.get("mask_filter_value", -10000.0))
        masks = []
        mask = optional_input(node, MASK)
        if mask is not None:
            masks.append(sdpa.padding_mask(ctx, mask, plan.mask_layout, plan.total, fill, sdpa.compute_dtype(dtype)))
        if plan.causal:
            masks.append(sdpa.causal_mask(ctx, plan.seq, plan.past, sdpa.compute_dtype(dtype)))
        masks = sdpa.combine(ctx, masks, sdpa.compute_dtype(dtype))
        if optional_input(node, ATTENTION_BIAS) is not None:
            masks.append(optional_input(node, ATTENTION_BIAS))
        scale = float(node.attrs.get("scale", 0.0)) or plan.head_size ** -0.5
        context = sdpa.attend(ctx, q, k, v, scale, masks, dtype)
        out = node.outputs[0]
        outputs = [sdpa.merge_heads(ctx, context, heads * plan.v_head_size, out)]
        for slot, tensor in ((1, k), (2, v)):
            if len(node.outputs) > slot:
                outputs.append(node.outputs[slot] if unread(ctx.graph, node, range(slot, slot + 1)) else sdpa.cast_to(ctx, tensor, dtype))
        return outputs + list(node.outputs[3:])

    @staticmethod
    def _heads(ctx: FusionContext, node: gs.Node, plan: MhaPlan) -> tuple[gs.Tensor, gs.Tensor, gs.Tensor]:
        """Q, K, V of the new tokens as ``[B, N, S|L, H]``, in the kernel's compute type (the bias is
        added in float32 to 16-bit inputs, as the kernel adds it)."""
        dtype, heads, size = sdpa.compute_dtype(plan.dtype), plan.heads, plan.head_size
        query, key, value = (sdpa.cast_to(ctx, node.inputs[slot], dtype) for slot in (QUERY, KEY, VALUE))
        bias = optional_input(node, BIAS)
        bias = None if bias is None else sdpa.cast_to(ctx, bias, dtype)
        hidden, v_hidden = heads * size, heads * plan.v_head_size
        if bias is not None:
            query, key, value = (ctx.node("Add", [t, sdpa.slice_last(ctx, bias, start, end, dtype)], dtype=dtype, name="bias_add")
                                 for t, start, end in ((query, 0, hidden), (key, hidden, 2 * hidden), (value, 2 * hidden, 2 * hidden + v_hidden)))
        q = sdpa.split_heads(ctx, query, heads, size, dtype)
        if plan.layout == "bnsh":
            return q, key, value
        return q, sdpa.split_heads(ctx, key, heads, size, dtype), sdpa.split_heads(ctx, value, heads, plan.v_head_size, dtype)
