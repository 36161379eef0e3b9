"""Scaled dot-product attention -> ``Attention`` (opset 23), multi-head and grouped-query.

Matches, after canonicalisation (see ``canonical_attention.py``)::

    MatMul(Q, Kᵀ) -> [Mul(scale)] -> [Add(mask)] -> [Add(mask2)] -> [Cast] -> Softmax(last axis)
      -> [Cast]... -> [Where(IsNaN(p), 0, p)] -> [Cast] -> MatMul(·, V)

on 4-D ``[batch, heads, seq, head_size]`` tensors, as both torch.onnx exporters write it for
eager and SDPA attention. ``Kᵀ`` may be any Transpose of K (TorchScript's ``[0, 2, 3, 1]`` on
the unsplit K) or an explicit one; K and V may be repeated per query head (``repeat_kv``:
Unsqueeze -> Expand -> Reshape), which is folded into grouped-query attention when the shapes
prove it. Produces ``Attention(Q, K, V[, attn_mask])`` with ``scale`` set exactly (1.0 when the
scores are not scaled) and the mask kept explicit as ``attn_mask`` (two masks are summed first);
``is_causal`` stays 0. A Cast pair around the Softmax becomes ``softmax_precision``. The
SDPA NaN guard needs nothing: ``Attention`` gives fully masked rows zeros.

For onnxruntime 1.31 the mask is adjusted without changing its meaning (see
:func:`_mask_for_onnxruntime`). Below opset 23 the node is ``mapc.Attention`` (see
``functions.py``), whose body is the matched computation and needs no adjustment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import Alt, Match, NearMiss, NoMatch, const, constant_tensor, op, producer, scalar_value, small_constant, var
from mapc.passes.fusion.context import Dim, FusionContext, FusionRule, same_dim, same_dims, show_dims
from mapc.passes.fusion.functions import Body

FIX_SHAPES = "fix the input shapes and fold shape arithmetic first (fix-shapes, fold-constants)"


def _casts(inner):
    """``inner``, or one or two Casts of it."""
    return Alt((op.Cast(op.Cast(inner, name="cast_b2"), name="cast_b1"), op.Cast(inner, name="cast_a1"), inner))


def _pattern():
    scores = op.MatMul(var("q"), var("kt"), name="scores")
    scaled = op["Mul", "Div"](scores, var("scale"), name="scale_mul") | scores
    masked_once = op.Add(scaled, var("mask"), name="mask_add")
    masked = op.Add(masked_once, var("mask2"), name="mask_add2") | masked_once | scaled
    probabilities = op.Softmax(op.Cast(masked, name="softmax_in") | masked, name="softmax")
    cast = _casts(probabilities)
    guarded = op.Where(op.IsNaN(cast, name="isnan"), const("zero", 0.0), cast, name="nan_guard") | cast
    weights = op.Cast(guarded, name="weights_cast") | guarded
    return op.MatMul(weights, var("v"), name="context")


@dataclass
class AttentionPlan:
    """What the rewrite needs: tensors, their layout, and the attributes."""

    q: gs.Tensor
    k_source: gs.Tensor
    k_perm: list[int] | None
    v: gs.Tensor
    masks: list[gs.Tensor]
    scale: float
    n_rep: int
    head_size: Dim
    softmax_precision: int | None
    guard: bool
    scores_shape: list[Dim]
    dtype: np.dtype


class AttentionFusion(FusionRule):
    """Scaled dot-product attention (eager or SDPA, masked or not, MHA or GQA) -> Attention."""

    name = "attention"
    pattern = _pattern()
    near_miss_after = "softmax"
    near_miss_fix = "the scores are not MatMul(Q, Kᵀ) [* scale] [+ mask]: see docs/passes/fusion.md for the accepted forms"

    def check(self, match: Match, ctx: FusionContext) -> AttentionPlan:
        ctx.require_op("Attention")
        q, kt, v = match.tensors["q"], match.tensors["kt"], match.tensors["v"]
        q_shape, kt_shape, v_shape = ctx.shape(q), ctx.shape(kt), ctx.shape(v)
        if not (q_shape and kt_shape and v_shape and len(q_shape) == len(kt_shape) == len(v_shape) == 4):
            raise NearMiss(
                "rank",
                f"Q, Kᵀ and V must be 4-D [batch, heads, seq, head_size]; their shapes are {show_dims(q_shape)}, {show_dims(kt_shape)}, {show_dims(v_shape)}",
                ctx.shapes_fix(FIX_SHAPES) if None in (q_shape, kt_shape, v_shape) else "attention on other layouts is not fused",
            )
        softmax = match.nodes["softmax"]
        default_axis = -1 if ctx.opset >= 13 else 1
        if softmax.attrs.get("axis", default_axis) not in (-1, 3):
            raise NearMiss("softmax-axis", f"the Softmax normalises axis {softmax.attrs.get('axis', default_axis)}, not the key axis", None)
        dtype = ctx.dtype(q)
        if dtype is None or dtype.kind != "f" or ctx.dtype(v) != dtype:
            raise NearMiss("dtype", f"Q and V must share one float type (Q: {dtype}, V: {ctx.dtype(v)})", None)

        k_source, k_perm = untranspose(kt)
        k_for_repeat = k_source if k_perm is None else None
        k_repeat = repeated_kv(k_for_repeat, ctx) if k_for_repeat is not None else None
        v_repeat = repeated_kv(v, ctx)
        n_rep = 1
        if isinstance(k_repeat, tuple) and isinstance(v_repeat, tuple) and k_repeat[1] == v_repeat[1]:
            (k_source, n_rep), (v, _) = k_repeat, v_repeat
        elif k_repeat is not None or v_repeat is not None:
            ctx.remark(
                "gqa-unproven",
                "K/V are repeated per query head (repeat_kv) but the shapes do not prove the expansion; fused as multi-head attention on the repeated K/V",
                ctx.shapes_fix(FIX_SHAPES),
            )
        k_shape = [kt_shape[0], kt_shape[1], kt_shape[3], kt_shape[2]]
        if n_rep > 1:
            k_shape, v_shape = ctx.shape(k_source), ctx.shape(v)
        self._check_dims(q_shape, k_shape, v_shape, n_rep, ctx)

        masks = [match.tensors[name] for name in ("mask", "mask2") if name in match.tensors]
        scores_shape = ctx.shape(match.nodes["scores"].outputs[0]) or [q_shape[0], q_shape[1], q_shape[2], k_shape[2]]
        masked_node = match.nodes.get("mask_add2") or match.nodes.get("mask_add")
        for mask in masks:
            if ctx.dtype(mask) != dtype:
                raise NearMiss("mask-dtype", f"the mask {mask.name!r} is {ctx.dtype(mask)}, not {dtype}", None)
        if masked_node is not None and not same_dims(ctx.shape(masked_node.outputs[0]) or [], scores_shape):
            raise NearMiss(
                "mask-shape",
                f"adding the mask changes the scores' shape {show_dims(scores_shape)} to {show_dims(ctx.shape(masked_node.outputs[0]))} (or shapes are unknown)",
                ctx.shapes_fix(FIX_SHAPES),
            )

        scale = 1.0
        if "scale_mul" in match.nodes:
            value = scalar_value(match.tensors["scale"])
            if value is None or value == 0:
                computed = constant_tensor(match.tensors["scale"]) is None
                raise NearMiss(
                    "scale",
                    "the scores are scaled by a value computed at run time" if computed else "the scores are scaled by a tensor, not a scalar",
                    "fold constants first (fold-constants)" if computed else None,
                )
            if not same_dims(ctx.shape(match.nodes["scale_mul"].outputs[0]) or [], ctx.shape(match.nodes["scores"].outputs[0]) or [None]):
                raise NearMiss("scale", "the scale's shape broadcasts the scores up (or shapes are unknown)", ctx.shapes_fix(FIX_SHAPES))
            scale = value if match.nodes["scale_mul"].op == "Mul" else 1.0 / value
        return AttentionPlan(
            q=q,
            k_source=k_source,
            k_perm=k_perm,
            v=v,
            masks=masks,
            scale=scale,
            n_rep=n_rep,
            head_size=q_shape[3],
            softmax_precision=_softmax_precision(match, dtype),
            guard="nan_guard" in match.nodes,
            scores_shape=scores_shape,
            dtype=dtype,
        )

    @staticmethod
    def _check_dims(q: list[Dim], k: list[Dim], v: list[Dim], n_rep: int, ctx: FusionContext) -> None:
        if not (same_dim(q[0], k[0]) and same_dim(q[0], v[0])):
            raise NearMiss(
                "batch-unproven",
                f"batch dims not provably equal: Q {show_dims(q)}, K {show_dims(k)}, V {show_dims(v)}",
                ctx.shapes_fix(FIX_SHAPES),
            )
        if not (same_dim(q[3], k[3]) and same_dim(k[2], v[2])):
            raise NearMiss(
                "dims-unproven",
                f"head_size or kv sequence not provably equal: Q {show_dims(q)}, K {show_dims(k)}, V {show_dims(v)}",
                ctx.shapes_fix(FIX_SHAPES),
            )
        if not same_dim(k[1], v[1]):
            raise NearMiss("heads-unproven", f"K and V head counts differ: {show_dims(k)}, {show_dims(v)}", ctx.shapes_fix(FIX_SHAPES))
        if n_rep > 1 or same_dim(q[1], k[1]) or k[1] == 1:
            return
        raise NearMiss(
            "heads-unproven",
            f"head dims not provably equal: Q has {q[1] if q[1] is not None else '?'} heads, K/V {k[1] if k[1] is not None else '?'}",
            ctx.shapes_fix(FIX_SHAPES),
        )

    def rewrite(self, match: Match, plan: AttentionPlan, ctx: FusionContext) -> gs.Tensor:
        k = plan.k_source
        if plan.k_perm is not None:
            k = ctx.node("Transpose", [k], attrs={"perm": plan.k_perm}, dtype=k.dtype, name="attention_k")
        mask = None
        if plan.masks:
            mask = plan.masks[0]
            if len(plan.masks) == 2:
                mask = ctx.node("Add", plan.masks, dtype=plan.dtype, name="attention_mask_sum")
            if ctx.opset >= 23:
                mask = ctx.shared(("attention-mask", id(mask), tuple(map(str, plan.scores_shape))), lambda: _mask_for_onnxruntime(ctx, mask, plan))
        attrs: dict[str, object] = {"scale": float(plan.scale)}
        if plan.softmax_precision is not None:
            attrs["softmax_precision"] = plan.softmax_precision
        inputs = [plan.q, k, plan.v] + ([mask] if mask is not None else [])
        formal = ["Q", "K", "V"] + (["attn_mask"] if mask is not None else [])
        out = match.root.outputs[0]
        return ctx.fused(
            "Attention",
            inputs,
            formal,
            attrs,
            lambda body: decompose_attention(body, plan, mask is not None),
            dtype=out.dtype,
            shape=ctx.shape(out),
        )


def _softmax_precision(match: Match, dtype: np.dtype) -> int | None:
    """The Softmax's element type when a Cast pair around it computes it in another type."""
    cast_in = match.nodes.get("softmax_in")
    if cast_in is None:
        return None
    target = int(cast_in.attrs.get("to", 0))
    if onnx.helper.tensor_dtype_to_np_dtype(target) == dtype:
        return None
    return target


def untranspose(kt: gs.Tensor) -> tuple[gs.Tensor, list[int] | None]:
    """K for ``Kᵀ``: (source tensor, permutation to apply to it, None when the source is K)."""
    node = producer(kt)
    if node is not None and node.op == "Transpose" and len(node.attrs.get("perm", [])) == 4:
        perm = list(node.attrs["perm"])
        composed = [perm[0], perm[1], perm[3], perm[2]]
        return node.inputs[0], (None if composed == [0, 1, 2, 3] else composed)
    return kt, [0, 1, 3, 2]


def repeated_kv(tensor: gs.Tensor, ctx: FusionContext) -> tuple[gs.Tensor, int] | str | None:
    """For ``repeat_kv``'s Unsqueeze(axis 2) -> Expand -> Reshape: (the unrepeated tensor, times).

    Returns None when ``tensor`` is not built that way, ``"unproven"`` when it is but the shapes
    do not prove that the Reshape merges the new axis into the head axis.
    """
    reshape = producer(tensor)
    if reshape is None or reshape.op != "Reshape":
        return None
    expand = producer(reshape.inputs[0])
    if expand is None or expand.op != "Expand":
        return None
    unsqueeze = producer(expand.inputs[0])
    if unsqueeze is None or unsqueeze.op != "Unsqueeze":
        return None
    axes = small_constant(unsqueeze.inputs[1]) if len(unsqueeze.inputs) > 1 else np.asarray(unsqueeze.attrs.get("axes", []))
    source = unsqueeze.inputs[0]
    src, expanded, out = ctx.shape(source), ctx.shape(expand.outputs[0]), ctx.shape(tensor)
    if axes is None or [int(a) for a in np.asarray(axes).reshape(-1)] not in ([2], [-3]):
        return None
    if src is None or expanded is None or out is None or len(src) != 4 or len(expanded) != 5 or len(out) != 4:
        return "unproven"
    kept = same_dims([expanded[0], expanded[1], expanded[3], expanded[4]], src) and same_dims([out[0], out[2], out[3]], [src[0], src[2], src[3]])
    heads, kv_heads, times = ctx.static(out[1]), ctx.static(src[1]), ctx.static(expanded[2])
    if not kept or heads is None or kv_heads is None or kv_heads == 0 or heads % kv_heads:
        return "unproven"
    if times is not None and times * kv_heads != heads:
        return "unproven"
    return source, heads // kv_heads


def _mask_for_onnxruntime(ctx: FusionContext, mask: gs.Tensor, plan: AttentionPlan) -> gs.Tensor:
    """The same additive mask in the form onnxruntime 1.31's Attention computes as specified.

    * Its CPU kernel reads a mask value of exactly the type's lowest as -inf, so a row masked
      with it everywhere gives zeros instead of the specified uniform average. Half of lowest is
      just as absorbing (adding any score below 1e31 leaves it unchanged) and is read as a number:
      lowest becomes lowest / 2, in the constant when the mask is one or a Where of constants.
    * It needs the last two dims to be exactly [q_seq, kv_seq]: a broadcasting mask is expanded.
    """
    return _expand_mask(ctx, _avoid_lowest(ctx, mask, plan.dtype), plan)


def _avoid_lowest(ctx: FusionContext, mask: gs.Tensor, dtype: np.dtype) -> gs.Tensor:
    lowest = np.finfo(dtype).min
    replacement = np.asarray(lowest / 2, dtype=dtype)
    value = small_constant(mask, max_bytes=1 << 24)
    if value is not None:
        if not np.any(value == lowest):
            return mask
        return ctx.const(np.where(value == lowest, replacement, value).astype(dtype), "attention_mask")
    node = producer(mask)
    if node is not None and node.op == "Where" and all(small_constant(t) is not None for t in node.inputs[1:]):
        branches = [small_constant(t) for t in node.inputs[1:]]
        if not any(np.any(b == lowest) for b in branches):
            return mask
        fixed = [ctx.const(np.where(b == lowest, replacement, b).astype(b.dtype), "mask_fill") for b in branches]
        return ctx.node("Where", [node.inputs[0], *fixed], dtype=mask.dtype, shape=ctx.shape(mask), name="attention_mask")
    is_lowest = ctx.node("Equal", [mask, ctx.const(np.asarray(lowest, dtype=dtype), "lowest")], name="mask_is_lowest")
    return ctx.node("Where", [is_lowest, ctx.const(replacement, "half_lowest"), mask], dtype=mask.dtype, shape=ctx.shape(mask), name="attention_mask")


def _expand_mask(ctx: FusionContext, mask: gs.Tensor, plan: AttentionPlan) -> gs.Tensor:
    """``mask`` with its last two dims made exactly [q_seq, kv_seq] (onnxruntime requires it)."""
    shape = ctx.shape(mask) or []
    seq_dims = plan.scores_shape[2:]
    if len(shape) >= 2 and same_dims(shape[-2:], seq_dims):
        return mask
    rank = max(len(shape), 2)
    static = [ctx.static(d) for d in seq_dims]
    if None not in static:
        target: gs.Tensor = ctx.const(np.asarray([1] * (rank - 2) + static, dtype=np.int64), "mask_shape")
    else:
        parts = [ctx.const(np.ones(rank - 2, dtype=np.int64), "ones")] if rank > 2 else []
        k = plan.k_source
        for tensor, axis in ((plan.q, 2), (k, 2 if plan.k_perm is None else plan.k_perm.index(2))):
            full = ctx.node("Shape", [tensor], name="mask_seq_shape")
            parts.append(ctx.node("Slice", [full, ctx.const(np.asarray([axis], np.int64)), ctx.const(np.asarray([axis + 1], np.int64))], name="mask_seq_dim"))
        target = ctx.node("Concat", parts, attrs={"axis": 0}, name="mask_shape")
    return ctx.node("Expand", [mask, target], dtype=mask.dtype, name="attention_mask")


def decompose_attention(body: Body, plan: AttentionPlan, masked: bool) -> str:
    """The canonical decomposition: the body of ``mapc.Attention`` (opset < 23)."""
    q, k, v = body.inputs[:3]
    if plan.n_rep > 1:
        k, v = (_repeat_heads(body, tensor, plan.n_rep) for tensor in (k, v))
    scores = body.add("MatMul", [q, body.add("Transpose", [k], perm=[0, 1, 3, 2])])
    if plan.scale != 1.0:
        scores = body.add("Mul", [scores, body.const(np.asarray(plan.scale, dtype=plan.dtype))])
    if masked:
        scores = body.add("Add", [scores, body.inputs[3]])
    if plan.softmax_precision is not None:
        scores = body.add("Cast", [scores], to=plan.softmax_precision)
    weights = body.add("Softmax", [scores], axis=-1)
    if plan.softmax_precision is not None:
        weights = body.add("Cast", [weights], to=onnx.helper.np_dtype_to_tensor_dtype(plan.dtype))
    if plan.guard:
        zero = body.const(np.zeros((), dtype=plan.dtype))
        weights = body.add("Where", [body.add("IsNaN", [weights]), zero, weights])
    return body.add("MatMul", [weights, v])


def _repeat_heads(body: Body, tensor: str, times: int) -> str:
    """repeat_kv: [b, hk, l, d] -> [b, hk * times, l, d], each head repeated ``times`` in a row."""
    shape = body.add("Shape", [tensor])
    batch = body.add("Slice", [shape, body.ints([0]), body.ints([1])])
    rest = body.add("Slice", [shape, body.ints([2]), body.ints([4])])
    target = body.add("Concat", [batch, body.ints([-1]), rest], axis=0)
    grown = body.add("Expand", [body.unsqueeze(tensor, [2]), body.ints([1, 1, times, 1, 1])])
    return body.add("Reshape", [grown, target])


class AttentionOnUnrepeatedKV(FusionRule):
    """Attention(Q, repeat_kv(K), repeat_kv(V), ...) -> Attention(Q, K, V, ...).

    The dynamo exporter writes GQA as an ONNX ``Attention`` whose K and V went through
    ``repeat_kv`` (Unsqueeze -> Expand -> Reshape, a rank-5 tensor NPUs refuse). Attention-23
    takes 4-D K/V with fewer heads than Q itself: query head ``h`` reads K/V head
    ``h // (q_heads / kv_heads)``, exactly the head ``repeat_kv`` copied there. Matches only when
    the shapes prove both repeats (same factor, static heads); produces the same Attention on
    the unrepeated K and V.
    """

    name = "attention-unrepeat-kv"
    pattern = op.Attention(var("q"), var("k"), var("v"), ..., name="attention")

    def check(self, match: Match, ctx: FusionContext) -> tuple[gs.Tensor, gs.Tensor]:
        attention = match.nodes["attention"]
        if len(attention.outputs) > 1 and any(not t.is_empty() for t in attention.outputs[1:]):
            raise NoMatch  # present K/V outputs expose the repeated heads
        if len(attention.inputs) > 4 and any(not t.is_empty() for t in attention.inputs[4:]):
            raise NoMatch  # a past cache would have to be repeated too
        k_repeat, v_repeat = repeated_kv(match.tensors["k"], ctx), repeated_kv(match.tensors["v"], ctx)
        if k_repeat is None and v_repeat is None:
            raise NoMatch
        if not (isinstance(k_repeat, tuple) and isinstance(v_repeat, tuple) and k_repeat[1] == v_repeat[1]):
            raise NearMiss("gqa-unproven", "K and V are not both provably repeated by the same factor", ctx.shapes_fix(FIX_SHAPES))
        if ctx.rank(match.tensors["q"]) != 4:
            raise NoMatch
        return k_repeat[0], v_repeat[0]

    def rewrite(self, match: Match, kv: tuple[gs.Tensor, gs.Tensor], ctx: FusionContext) -> gs.Tensor:
        attention = match.nodes["attention"]
        out = attention.outputs[0]
        inputs = [match.tensors["q"], *kv, *attention.inputs[3:]]
        return ctx.node("Attention", inputs, attrs=dict(attention.attrs), dtype=out.dtype, shape=ctx.shape(out),
                        name=attention.name or "attention")
