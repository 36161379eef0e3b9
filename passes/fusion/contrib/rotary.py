"""onnxruntime's contrib ``RotaryEmbedding`` -> the standard ``RotaryEmbedding`` (opset 23)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, op, var
from mapc.passes.fusion.context import STANDARD_SINCE, FusionContext, FusionRule, show_dims
from mapc.passes.fusion.contrib.common import ORT, float_dtype, ints

UPGRADE = f"upgrade the model: --target-opset {STANDARD_SINCE['RotaryEmbedding']}"


@dataclass
class RotaryPlan:
    attrs: dict[str, int]
    #: sequence length when ``position_ids`` is the 1-element start position, else None
    start_of: int | None


def standard_rotary(ctx: FusionContext, x: gs.Tensor, cos: gs.Tensor, sin: gs.Tensor, positions: gs.Tensor, attrs: dict[str, int],
                    out: gs.Tensor | None = None) -> gs.Tensor:
    """``RotaryEmbedding(x, cos[positions], sin[positions])`` of the ai.onnx domain (opset 23): the
    caches gathered at the ``[B, S]`` positions (``[B, S, dim/2]``, what the op computes from
    ``position_ids``), so the op reads float caches as mapc's rotary fusion writes it and the
    integer gather stays on the host."""
    dtype = np.dtype(x.dtype) if x.dtype is not None else None
    caches = [ctx.node("Gather", [cache, positions], dtype=dtype, name="rope_cache") for cache in (cos, sin)]
    output = gs.Variable(ctx.model.fresh_name("rotaryembedding_out"), dtype=x.dtype, shape=ctx.shape(out if out is not None else x))
    ctx.model.graph.nodes.append(gs.Node("RotaryEmbedding", name=ctx.model.fresh_name("RotaryEmbedding"), attrs=dict(attrs),
                                         inputs=[x, *caches], outputs=[output]))
    return output


def positions_from_start(ctx: FusionContext, x: gs.Tensor, start: gs.Tensor, seq: int) -> gs.Tensor:
    """``[B, S]`` positions ``start + 0..S-1`` from a 1-element int64 ``start`` (B from ``x``)."""
    offsets = ctx.const(np.arange(seq, dtype=np.int64)[None, :], "positions")
    row = ctx.node("Add", [start, offsets], dtype=np.dtype(np.int64), name="positions")
    batch = ctx.node("Shape", [x], attrs={"start": 0, "end": 1}, dtype=np.dtype(np.int64), name="batch")
    shape = ctx.node("Concat", [batch, ints(ctx, [seq])], attrs={"axis": 0}, dtype=np.dtype(np.int64), name="positions_shape")
    return ctx.node("Expand", [row, shape], dtype=np.dtype(np.int64), name="positions")


class ContribRotaryToStandard(FusionRule):
    """com.microsoft RotaryEmbedding -> RotaryEmbedding (ai.onnx, opset 23).

    Matches ``RotaryEmbedding(x, position_ids, cos_cache, sin_cache)`` with ``x`` ``[B, S, hidden]``
    or ``[B, N, S, H]``, ``position_ids`` ``[B, S]`` or the 1-element start position (S static),
    ``scale`` 1 and no packed batching. Produces the standard op on the caches gathered at the
    positions (``[B, S, dim/2]``), with the same ``interleaved``, ``rotary_embedding_dim`` and
    ``num_heads`` (for a 3-D input without
    ``num_heads``, the head size is twice the cache width, as the kernel infers it), with the
    start position expanded to ``[B, S]`` positions. Below opset 23 a near-miss asks for the upgrade.
    """

    name = "contrib-rotary"
    pattern = op.RotaryEmbedding(var("x"), var("positions"), var("cos"), var("sin"), name="rotary", domain=ORT)

    def check(self, match: Match, ctx: FusionContext) -> RotaryPlan:
        node = match.root
        if ctx.opset < STANDARD_SINCE["RotaryEmbedding"]:
            raise NearMiss("opset", f"RotaryEmbedding is a standard op from opset 23; the model has {ctx.opset}", UPGRADE)
        if float(node.attrs.get("scale", 1.0)) != 1.0 or int(node.attrs.get("is_packed_batching", 0)):
            raise NearMiss("variant", "a scaled or packed-batching RotaryEmbedding is not rewritten", None)
        float_dtype(ctx, match.tensors["x"])
        shape, cache, positions = (ctx.shape(match.tensors[n]) for n in ("x", "cos", "positions"))
        if shape is None or len(shape) not in (3, 4) or cache is None or len(cache) != 2 or positions is None:
            raise NearMiss("shape", f"the input {show_dims(shape)} or cache {show_dims(cache)} is not [B, S, hidden] / [B, N, S, H] and "
                           "[positions, dim/2]", ctx.shapes_fix("run shape inference (fix-shapes)"))
        attrs = {"interleaved": int(node.attrs.get("interleaved", 0))}
        rotary_dim, heads = int(node.attrs.get("rotary_embedding_dim", 0)), int(node.attrs.get("num_heads", 0))
        if rotary_dim:
            attrs["rotary_embedding_dim"] = rotary_dim
        if len(shape) == 3:
            hidden, width = ctx.static(shape[2]), ctx.static(cache[1])
            if not heads and (hidden is None or width is None or hidden % (2 * width)):
                raise NearMiss("shape", f"the head count of {show_dims(shape)} with a cache {show_dims(cache)} is not known", "set num_heads")
            attrs["num_heads"] = heads or hidden // (2 * width)
        start_of = None
        if len(positions) == 1:
            start_of = ctx.static(shape[1] if len(shape) == 3 else shape[2])
            if start_of is None or ctx.static(positions[0]) != 1:
                raise NearMiss("positions", f"a start position needs a static sequence length ({show_dims(shape)})", ctx.shapes_fix("fix the input shapes (fix-shapes)"))
        elif len(positions) != 2:
            raise NearMiss("positions", f"position_ids {show_dims(positions)} is neither [B, S] nor a start position", None)
        return RotaryPlan(attrs, start_of)

    def rewrite(self, match: Match, plan: RotaryPlan, ctx: FusionContext) -> gs.Tensor:
        x, positions = match.tensors["x"], match.tensors["positions"]
        if plan.start_of is not None:
            positions = positions_from_start(ctx, x, positions, plan.start_of)
        return standard_rotary(ctx, x, match.tensors["cos"], match.tensors["sin"], positions, plan.attrs, match.root.outputs[0])
