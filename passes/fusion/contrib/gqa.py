"""onnxruntime's contrib ``GroupQueryAttention`` -> a KV-cache update and the decomposed grouped
attention that the ``attention`` rule fuses into a standard ``Attention``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, op, optional_input, small_constant, var
from mapc.passes.fusion.context import STANDARD_SINCE, Dim, FusionContext, FusionRule, show_dims
from mapc.passes.fusion.contrib import sdpa
from mapc.passes.fusion.contrib.common import ORT, float_dtype, ints, unread
from mapc.passes.fusion.contrib.rotary import UPGRADE, standard_rotary

QUERY, KEY, VALUE, PAST_KEY, PAST_VALUE, SEQLENS_K, TOTAL_LENGTH, COS, SIN, POSITION_IDS, ATTENTION_BIAS = range(11)
#: Optional inputs the rewrite does not handle, by slot.
UNHANDLED = {11: "head_sink", 12: "k_scale", 13: "v_scale", 14: "q_norm_weight",
             15: "k_norm_weight", 16: "query_seqlens"}
#: Attributes that must keep their default, with it.
DEFAULTS = {"causal": 1, "softcap": 0.0, "smooth_softmax": 0, "qk_output": 0, "sliding_window_cache": 0}
I64 = np.dtype(np.int64)
BOOL = np.dtype(bool)


@dataclass
class GqaPlan:
    dtype: np.dtype
    batch: Dim
    heads: int
    kv_heads: int
    head_size: int
    seq: int
    total: int  # total_sequence_length
    past: int  # past buffer length (0 without past)
    first_prompt: bool
    packed: bool
    rotary_dim: int  # 0 without rotary
    scale: float
    window: int  # local_window_size when it hides keys, else 0

    @property
    def length(self) -> int:
        """The present buffer's sequence length, as the kernel sizes it."""
        return max(self.total, self.past)


class ContribGroupQueryAttentionToStandard(FusionRule):
    """com.microsoft GroupQueryAttention -> KV-cache update + grouped attention that ``attention`` fuses.

    Matches ``GroupQueryAttention(query, key, value[, past_key, past_value], seqlens_k,
    total_sequence_length[, cos_cache, sin_cache])`` (or packed QKV in ``query``) with static
    sequence length, head size and past buffer length, a constant ``total_sequence_length`` T,
    causal attention without softcap, smooth softmax or quantized cache; a local window shorter
    than the buffer only after the first prompt. With
    ``L = max(T, past)``, ``past_b = 0`` on the first prompt (S = T) and ``seqlens_k[b] + 1 - S``
    otherwise, it produces what the CPU kernel computes: rotary (``do_rotary``) as the standard
    ``RotaryEmbedding`` at positions ``past_b + s`` (or ``position_ids``); the present K/V ``[B, kv_heads, L, H]``
    holding the past below ``past_b``, the new K/V from ``past_b`` on and zeros after; query ``s``
    attending key ``j`` when ``j <= past_b + s`` and ``j <= seqlens_k[b]``, K/V heads repeated per
    query group (fused as GQA), an ``attention_bias`` over the whole buffer added to the scores,
    16-bit floats attended in float32. Left alone with a near-miss:
    a first prompt with a window shorter than the buffer, softcap, smooth softmax, quantized caches,
    ``head_sink``, Q/K norms, ``query_seqlens``, the ``output_qk`` output.
    """

    name = "contrib-group-query-attention"
    pattern = op.GroupQueryAttention(var("query"), ..., name="gqa", domain=ORT)

    def check(self, match: Match, ctx: FusionContext) -> GqaPlan:
        node = match.root
        attrs = node.attrs
        for key, default in DEFAULTS.items():
            if key in attrs and attrs[key] != default:
                raise NearMiss("variant", f"{key}={attrs[key]} is not rewritten (only {key}={default})", None)
        for quantized in ("k_quant_type", "v_quant_type"):
            if attrs.get(quantized, "NONE") != "NONE":
                raise NearMiss("variant", "a quantized KV cache is not rewritten", None)
        unhandled = [name for slot, name in UNHANDLED.items() if optional_input(node, slot) is not None]
        if unhandled:
            raise NearMiss("inputs", f"the inputs {', '.join(unhandled)} are not rewritten", None)
        if not unread(ctx.graph, node, range(3, len(node.outputs))):
            raise NearMiss("outputs", "the output_qk output is read", None)
        dtype = float_dtype(ctx, node.inputs[QUERY])
        heads, kv_heads = int(attrs["num_heads"]), int(attrs["kv_num_heads"])
        query = ctx.shape(node.inputs[QUERY])
        seq, width = (ctx.static(query[1]), ctx.static(query[2])) if query is not None and len(query) == 3 else (None, None)
        packed = optional_input(node, KEY) is None
        groups = heads + 2 * kv_heads if packed else heads
        if seq is None or width is None or width % groups or heads % kv_heads:
            raise NearMiss("shape", f"the query {show_dims(query)} is not [B, S, hidden] with static S and hidden", sdpa.FIX_SHAPES)
        head_size = width // groups
        if not packed:
            key, value = ctx.shape(node.inputs[KEY]), ctx.shape(node.inputs[VALUE]) if optional_input(node, VALUE) is not None else None
            if key is None or value is None or len(key) != 3 or len(value) != 3 or ctx.static(key[1]) != seq \
                    or ctx.static(key[2]) != kv_heads * head_size or ctx.static(value[2]) != kv_heads * head_size:
                raise NearMiss("shape", f"key {show_dims(key)} and value {show_dims(value)} are not [B, S, kv_heads*head_size]", sdpa.FIX_SHAPES)
        lengths = ctx.shape(node.inputs[SEQLENS_K])
        if lengths is None or len(lengths) not in (1, 2) or (len(lengths) == 2 and ctx.static(lengths[1]) != 1):
            raise NearMiss("seqlens", f"seqlens_k {show_dims(lengths)} is not [B] (or [B, 1])", sdpa.FIX_SHAPES)
        total = small_constant(node.inputs[TOTAL_LENGTH])
        if total is None or total.size != 1:
            raise NearMiss("total-length", "total_sequence_length is computed at run time", sdpa.FIX_SHAPES)
        total = int(total.reshape(-1)[0])
        past = 0
        if optional_input(node, PAST_KEY) is not None or optional_input(node, PAST_VALUE) is not None:
            shapes = [ctx.shape(t) if t is not None else None for t in (optional_input(node, PAST_KEY), optional_input(node, PAST_VALUE))]
            if any(s is None or len(s) != 4 or ctx.static(s[2]) is None or ctx.static(s[1]) != kv_heads for s in shapes):
                raise NearMiss("past", f"the past {show_dims(shapes[0])} is not [B, kv_heads, P, H] with a static P", sdpa.FIX_SHAPES)
            past = ctx.static(shapes[0][2])
        first_prompt = seq == total
        if not first_prompt and past == 0:
            raise NearMiss("total-length", f"without a past, total_sequence_length {total} must equal the sequence length {seq}", None)
        window = int(attrs.get("local_window_size", -1))
        window = window if 0 < window < max(total, past) else 0  # a window spanning the buffer hides nothing
        if window and first_prompt:
            raise NearMiss("window", f"a sliding window ({window} keys) on a first prompt: the kernel reads past the end of a padded "
                           "sequence there, so its rows are not reproducible", None)
        bias = optional_input(node, ATTENTION_BIAS)
        bias_shape = None if bias is None else ctx.shape(bias)
        if bias is not None and (bias_shape is None or len(bias_shape) != 4 or ctx.static(bias_shape[-1]) != max(total, past)):
            raise NearMiss("attention-bias", f"the attention bias {show_dims(bias_shape)} does not span the {max(total, past)} keys of the buffer",
                           sdpa.FIX_SHAPES)
        rotary_dim = self._rotary(node, ctx, head_size)
        scale = float(attrs.get("scale", 0.0)) or head_size ** -0.5
        return GqaPlan(dtype, query[0], heads, kv_heads, head_size, seq, total, past, first_prompt, packed, rotary_dim, scale, window)

    @staticmethod
    def _rotary(node: gs.Node, ctx: FusionContext, head_size: int) -> int:
        """The rotary width (0 without ``do_rotary``)."""
        if not int(node.attrs.get("do_rotary", 0)):
            if optional_input(node, POSITION_IDS) is not None:
                raise NearMiss("inputs", "position_ids without do_rotary is not rewritten", None)
            return 0
        if ctx.opset < STANDARD_SINCE["RotaryEmbedding"]:
            raise NearMiss("opset", f"the rotary part becomes the standard RotaryEmbedding of opset 23; the model has {ctx.opset}", UPGRADE)
        given = optional_input(node, POSITION_IDS)
        if given is not None and (ctx.rank(given) != 2 or ctx.dtype(given) != I64):
            raise NearMiss("rotary", f"position_ids {show_dims(ctx.shape(given))} is not an int64 [B, S]", sdpa.FIX_SHAPES)
        cache = ctx.shape(node.inputs[COS]) if optional_input(node, COS) is not None and optional_input(node, SIN) is not None else None
        half = ctx.static(cache[1]) if cache is not None and len(cache) == 2 else None
        if half is None or 2 * half > head_size:
            raise NearMiss("rotary", f"the cos/sin cache {show_dims(cache)} is not [positions, rotary_dim/2] with a static width", sdpa.FIX_SHAPES)
        return 2 * half

    def rewrite(self, match: Match, plan: GqaPlan, ctx: FusionContext) -> list[gs.Tensor]:
        node = match.root
        dtype, size = plan.dtype, plan.head_size
        q, k, v = self._projections(ctx, node, plan)
        seqlens = ctx.node("Cast", [node.inputs[SEQLENS_K]], attrs={"to": onnx.TensorProto.INT64}, dtype=I64, name="seqlens")
        if ctx.rank(node.inputs[SEQLENS_K]) == 2:
            seqlens = ctx.node("Reshape", [seqlens, ints(ctx, [-1])], dtype=I64, name="seqlens")
        totals = ctx.with_axes("Unsqueeze", ctx.node("Add", [seqlens, ctx.const(np.asarray(1, np.int64), "one")], dtype=I64, name="totals"),
                               [1], dtype=I64, name="totals_column")  # [B, 1]
        steps = ctx.const(np.arange(plan.seq, dtype=np.int64)[None, :], "steps")  # [1, S]
        if plan.first_prompt:
            past_b = None
            positions = steps
        else:
            past_b = ctx.node("Sub", [totals, ctx.const(np.asarray(plan.seq, np.int64), "seq")], dtype=I64, name="past_lengths")  # [B, 1]
            positions = ctx.node("Add", [past_b, steps], dtype=I64, name="positions")  # [B, S]
        if plan.rotary_dim:
            q, k = self._rotate(ctx, node, plan, q, k, self._rotary_positions(ctx, node, plan, positions))
        q4 = sdpa.split_heads(ctx, q, plan.heads, size, dtype)
        k4, v4 = (sdpa.split_heads(ctx, t, plan.kv_heads, size, dtype) for t in (k, v))
        present_k, present_v = (self._present(ctx, plan, new, optional_input(node, slot), past_b) for new, slot in ((k4, PAST_KEY), (v4, PAST_VALUE)))
        mask = self._mask(ctx, plan, positions, totals)
        keys, values = (self._repeat(ctx, plan, sdpa.cast_to(ctx, t, sdpa.compute_dtype(dtype))) for t in (present_k, present_v))
        masks = [mask] if optional_input(node, ATTENTION_BIAS) is None else [mask, node.inputs[ATTENTION_BIAS]]
        context = sdpa.attend(ctx, q4, keys, values, plan.scale, masks, dtype)
        outputs = [sdpa.merge_heads(ctx, context, plan.heads * size, node.outputs[0])]
        for slot, tensor in ((1, present_k), (2, present_v)):
            if len(node.outputs) > slot:
                outputs.append(node.outputs[slot] if unread(ctx.graph, node, range(slot, slot + 1)) else tensor)
        return outputs + list(node.outputs[3:])

    @staticmethod
    def _projections(ctx: FusionContext, node: gs.Node, plan: GqaPlan) -> tuple[gs.Tensor, gs.Tensor, gs.Tensor]:
        """Q, K, V ``[B, S, heads*H]`` (sliced out of packed QKV)."""
        if not plan.packed:
            return node.inputs[QUERY], node.inputs[KEY], node.inputs[VALUE]
        hq, hk = plan.heads * plan.head_size, plan.kv_heads * plan.head_size
        x, dtype = node.inputs[QUERY], plan.dtype
        return sdpa.slice_last(ctx, x, 0, hq, dtype), sdpa.slice_last(ctx, x, hq, hq + hk, dtype), sdpa.slice_last(ctx, x, hq + hk, hq + 2 * hk, dtype)

    @staticmethod
    def _rotary_positions(ctx: FusionContext, node: gs.Node, plan: GqaPlan, positions: gs.Tensor) -> gs.Tensor:
        """The positions the kernel rotates at: ``past_b + s``, or the ``position_ids`` given (on a
        first prompt only their first element, counted up along the sequence, as the kernel reads them)."""
        given = optional_input(node, POSITION_IDS)
        if given is None:
            return positions
        if not plan.first_prompt:
            return given
        first = ctx.node("Slice", [given, ints(ctx, [0, 0]), ints(ctx, [1, 1])], dtype=I64, name="first_position")  # [1, 1]
        return ctx.node("Add", [first, ctx.const(np.arange(plan.seq, dtype=np.int64)[None, :], "steps")], dtype=I64, name="positions")

    @staticmethod
    def _rotate(ctx: FusionContext, node: gs.Node, plan: GqaPlan, q: gs.Tensor, k: gs.Tensor, positions: gs.Tensor) -> tuple[gs.Tensor, gs.Tensor]:
        """Q and K rotated at the kernel's positions ``past_b + s`` (``s`` on a first prompt, its
        padding rows included)."""
        batch = ctx.node("Shape", [q], attrs={"start": 0, "end": 1}, dtype=I64, name="batch")
        shape = ctx.node("Concat", [batch, ints(ctx, [plan.seq])], attrs={"axis": 0}, dtype=I64, name="positions_shape")
        positions = ctx.node("Expand", [positions, shape], dtype=I64, name="positions")
        attrs = {"interleaved": int(node.attrs.get("rotary_interleaved", 0))}
        if plan.rotary_dim != plan.head_size:
            attrs["rotary_embedding_dim"] = plan.rotary_dim
        cos, sin = node.inputs[COS], node.inputs[SIN]
        return (standard_rotary(ctx, t, cos, sin, positions, attrs | {"num_heads": heads}) for t, heads in ((q, plan.heads), (k, plan.kv_heads)))

    @staticmethod
    def _present(ctx: FusionContext, plan: GqaPlan, new: gs.Tensor, past: gs.Tensor | None, past_b: gs.Tensor | None) -> gs.Tensor:
        """The present buffer ``[B, kv_heads, L, H]``: past rows below ``past_b``, the new rows at
        ``past_b .. past_b+S-1``, zeros after. Its shape is set (the graph output's annotation may
        be onnxruntime's guess that present has the past's length)."""
        dtype, length = plan.dtype, plan.length
        dims = [plan.batch, plan.kv_heads, length, plan.head_size]
        if past is None and length == plan.seq:
            return ctx.node("Identity", [new], dtype=dtype, shape=dims, name="present")
        rows = ctx.const(np.arange(length, dtype=np.int64)[None, :], "rows")  # [1, L]
        offset = ctx.node("Sub", [rows, past_b], dtype=I64, name="new_row") if past_b is not None else rows  # [B|1, L]
        below = ctx.node("Less", [offset, ctx.const(np.asarray(0, np.int64), "zero")], dtype=BOOL, name="from_past")
        fresh = ctx.node("And", [ctx.node("Not", [below], dtype=BOOL, name="from_new"),
                                 ctx.node("Less", [offset, ctx.const(np.asarray(plan.seq, np.int64), "seq")], dtype=BOOL, name="to_new")],
                         dtype=BOOL, name="fresh")
        gathered = _rows_of(ctx, plan, new, offset)
        zero = ctx.const(np.asarray(0, dtype), "zero")
        rest: gs.Tensor = zero
        if past is not None:
            if plan.past < length:
                past = ctx.node("Pad", [past, ints(ctx, [0, 0, 0, 0, 0, 0, length - plan.past, 0])], dtype=dtype, name="past_padded")
            below = ctx.with_axes("Unsqueeze", below, [1, 3], dtype=BOOL, name="from_past")
            rest = ctx.node("Where", [below, past, zero], dtype=dtype, name="kept_past")
        fresh = ctx.with_axes("Unsqueeze", fresh, [1, 3], dtype=BOOL, name="fresh")
        return ctx.node("Where", [fresh, gathered, rest], dtype=dtype, shape=dims, name="present")

    @staticmethod
    def _mask(ctx: FusionContext, plan: GqaPlan, positions: gs.Tensor, totals: gs.Tensor) -> gs.Tensor:
        """``[B, 1, S, L]``: 0 where query ``s`` sees key ``j`` (``j <= past_b + s``, ``j <
        seqlens_k + 1`` and, with a local window ``w``, ``j > past_b + s - w``), the type's lowest
        elsewhere."""
        keys = ctx.const(np.arange(plan.length, dtype=np.int64)[None, None, :], "keys")  # [1, 1, L]
        reach = ctx.with_axes("Unsqueeze", positions, [2], dtype=I64, name="reach")  # [B|1, S, 1]
        causal = ctx.node("Not", [ctx.node("Greater", [keys, reach], dtype=BOOL, name="future")], dtype=BOOL, name="causal")
        filled = ctx.node("Less", [keys, ctx.with_axes("Unsqueeze", totals, [2], dtype=I64, name="filled_to")], dtype=BOOL, name="filled")
        keep = ctx.node("And", [causal, filled], dtype=BOOL, name="keep")
        if plan.window:  # the kernel keeps the last `window` keys up to the query's own
            start = ctx.node("Sub", [reach, ctx.const(np.asarray(plan.window, np.int64), "window")], dtype=I64, name="window_start")
            keep = ctx.node("And", [keep, ctx.node("Greater", [keys, start], dtype=BOOL, name="in_window")], dtype=BOOL, name="keep")
        keep = ctx.with_axes("Unsqueeze", keep, [1], dtype=BOOL, name="keep_heads")
        dtype = sdpa.compute_dtype(plan.dtype)
        return ctx.node("Where", [keep, ctx.const(np.asarray(0, dtype), "unmasked"), ctx.const(np.asarray(np.finfo(dtype).min, dtype), "excluded")],
                        dtype=dtype, name="additive_mask")

    @staticmethod
    def _repeat(ctx: FusionContext, plan: GqaPlan, tensor: gs.Tensor) -> gs.Tensor:
        """repeat_kv: ``[B, kv_heads, L, H]`` -> ``[B, heads, L, H]`` (the attention fusion undoes it into GQA)."""
        times = plan.heads // plan.kv_heads
        if times == 1:
            return tensor
        dtype = ctx.dtype(tensor)
        grown = ctx.node("Expand", [ctx.with_axes("Unsqueeze", tensor, [2], dtype=dtype, name="kv_group"), ints(ctx, [1, 1, times, 1, 1])],
                         dtype=dtype, name="kv_repeat")
        return ctx.node("Reshape", [grown, ints(ctx, [0, plan.heads, plan.length, plan.head_size])], dtype=dtype, name="kv_repeated")


def _rows_of(ctx: FusionContext, plan: GqaPlan, new: gs.Tensor, offset: gs.Tensor) -> gs.Tensor:
    """``[B, kv_heads, L, H]`` whose row ``j`` is new row ``clip(offset[b, j], 0, S-1)``: the
    one new row broadcast when decoding (S = 1), else a GatherElements."""
    if plan.seq == 1:
        return ctx.node("Expand", [new, ints(ctx, [1, 1, plan.length, 1])], dtype=plan.dtype, name="new_rows")
    index = ctx.node("Clip", [offset, ctx.const(np.asarray(0, np.int64), "low"), ctx.const(np.asarray(plan.seq - 1, np.int64), "high")],
                     dtype=I64, name="new_index")
    lead = ctx.node("Shape", [new], attrs={"start": 0, "end": 2}, dtype=I64, name="lead")
    shape = ctx.node("Concat", [lead, ints(ctx, [plan.length, plan.head_size])], attrs={"axis": 0}, dtype=I64, name="present_shape")
    index = ctx.node("Expand", [ctx.with_axes("Unsqueeze", index, [1, 3], dtype=I64, name="new_index"), shape], dtype=I64,
                     name="new_index")
    return ctx.node("GatherElements", [new, index], attrs={"axis": 2}, dtype=plan.dtype, name="new_rows")
