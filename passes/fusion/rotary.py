"""Rotate-half rotary position embedding -> ``RotaryEmbedding`` (opset 23).

Matches HuggingFace's ``q * cos + rotate_half(q) * sin`` on a 4-D ``[batch, heads, seq, head]``
tensor, where ``rotate_half(x) = Concat(-x[..., h:], x[..., :h])`` and ``cos``/``sin`` are
``[batch, 1, seq, head]`` (an Unsqueeze of a ``[batch, seq, head]`` table), and the partial form
that rotates the first ``rotary_dim`` channels and concatenates the rest unchanged. The
table must provably repeat its first half (``Cos(Concat(f, f))``, as every rotate-half RoPE
builds it), so its first half is the op's ``cos_cache``/``sin_cache`` ``[batch, seq, dim/2]``.

Produces ``RotaryEmbedding(x, cos_half, sin_half)`` (``interleaved=0``, ``rotary_embedding_dim``
for the partial form). onnxruntime 1.31 wants the caches' batch to equal the input's, so a table
built for batch 1 is expanded. Below opset 23 the node is ``mapc.RotaryEmbedding``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, constant_tensor, op, producer, scalar_value, small_constant, var, walk
from mapc.passes.fusion.context import FusionContext, FusionRule, same_dim, show_dims
from mapc.passes.fusion.functions import Body

FOLD_FIRST = "fold shape arithmetic to constants first (fix-shapes, fold-constants)"
#: Constant cos/sin tables up to this size are checked and sliced at compile time.
CONSTANT_TABLE_BYTES = 1 << 26


def _rope(x):
    low = op.Slice(x, ..., name="low")
    high = op.Slice(x, ..., name="high")
    rotated = op.Concat(op.Neg(high, name="neg"), low, name="rotate_half")
    return op.Add(op.Mul(x, var("cos"), name="mul_cos"), op.Mul(rotated, var("sin"), name="mul_sin"), name="rope")


@dataclass
class RotaryPlan:
    x: gs.Tensor
    cos: gs.Tensor | np.ndarray
    sin: gs.Tensor | np.ndarray
    half: int
    rotary_dim: int
    head_size: int
    cache_rank: int
    expand_batch: bool
    batch: int | None


class _RotaryBase(FusionRule):
    near_miss_after = "rotate_half"
    near_miss_fix = "only rotate-half RoPE (x * cos + rotate_half(x) * sin) is fused"

    def plan(self, match: Match, ctx: FusionContext, x: gs.Tensor, rotated: gs.Tensor, rotary_dim: int | None) -> RotaryPlan:
        ctx.require_op("RotaryEmbedding")
        shape = ctx.shape(x)
        if shape is None or len(shape) != 4 or ctx.static(shape[3]) is None:
            raise NearMiss("rank", f"the rotated tensor must be 4-D [batch, heads, seq, head] with a static head size; it is {show_dims(shape)}", ctx.shapes_fix(FOLD_FIRST))
        head = ctx.static(shape[3])
        width = rotary_dim if rotary_dim is not None else head
        if width % 2:
            raise NearMiss("odd-dim", f"the rotary dim {width} is odd", None)
        half = width // 2
        if _last_axis(match.nodes["rotate_half"].attrs.get("axis"), 4) is False:
            raise NearMiss("concat-axis", "rotate_half concatenates along another axis than the last", None)
        for name, start, end in (("low", 0, half), ("high", half, width)):
            _check_slice(match.nodes[name], rotated, ctx, start, end)
        cos, sin = match.tensors["cos"], match.tensors["sin"]
        caches = [_cache_table(t, ctx, width) for t in (cos, sin)]
        table = list(caches[0].shape) if isinstance(caches[0], np.ndarray) else ctx.shape(caches[0])
        rank = len(table)
        if not same_dim(table[-2], shape[2]):
            raise NearMiss("seq-unproven", f"the cos/sin table {show_dims(table)} does not provably cover the sequence of {show_dims(shape)}", ctx.shapes_fix(FOLD_FIRST))
        table_batch = table[0] if rank == 3 else 1
        expand = not same_dim(table_batch, shape[0])
        if expand and table_batch != 1:
            raise NearMiss("batch-unproven", f"the cos/sin table batch {table[0]} is neither 1 nor the input's batch {shape[0]}", ctx.shapes_fix(FOLD_FIRST))
        return RotaryPlan(x, caches[0], caches[1], half, width, head, rank, expand, ctx.static(shape[0]))

    def emit(self, plan: RotaryPlan, ctx: FusionContext, out: gs.Tensor) -> gs.Tensor:
        caches = [
            ctx.shared(("rope-cache", _identity(t), plan.half, plan.expand_batch, plan.batch or id(plan.x)), lambda t=t: _half_cache(ctx, t, plan))
            for t in (plan.cos, plan.sin)
        ]
        attrs = {"rotary_embedding_dim": plan.rotary_dim} if plan.rotary_dim != plan.head_size else {}
        return ctx.fused(
            "RotaryEmbedding",
            [plan.x, *caches],
            ["X", "cos_cache", "sin_cache"],
            attrs,
            lambda body: decompose_rotary(body, plan),
            dtype=out.dtype,
            shape=ctx.shape(out),
        )


class PartialRotaryFusion(_RotaryBase):
    """Concat(rope(x[..., :r]), x[..., r:]) -> RotaryEmbedding(rotary_embedding_dim=r)."""

    name = "rotary-partial"
    _x = var("x")
    pattern = op.Concat(_rope(op.Slice(_x, ..., name="rotated_part")), op.Slice(_x, ..., name="kept_part"), name="partial")

    def check(self, match: Match, ctx: FusionContext) -> RotaryPlan:
        x = match.tensors["x"]
        shape = ctx.shape(x)
        head = ctx.static(shape[3]) if shape is not None and len(shape) == 4 else None
        rotated_part = match.nodes["rotated_part"]
        bounds = _slice_bounds(rotated_part, ctx)
        if head is None or bounds is None or bounds[0] != 0:
            raise NearMiss("slice-bounds", "the rotated part is not x[..., :r] with constant r on a 4-D input of static head size", ctx.shapes_fix(FOLD_FIRST))
        rotary_dim = min(bounds[1], head)
        _check_slice(match.nodes["kept_part"], x, ctx, rotary_dim, head)
        if _last_axis(match.root.attrs.get("axis"), 4) is False:
            raise NearMiss("concat-axis", "the rotated and kept parts are concatenated along another axis", None)
        return self.plan(match, ctx, x, rotated_part.outputs[0], rotary_dim)

    def rewrite(self, match: Match, plan: RotaryPlan, ctx: FusionContext) -> gs.Tensor:
        return self.emit(plan, ctx, match.root.outputs[0])


class RotaryFusion(_RotaryBase):
    """x * cos + rotate_half(x) * sin -> RotaryEmbedding."""

    name = "rotary"
    pattern = _rope(var("x"))

    def check(self, match: Match, ctx: FusionContext) -> RotaryPlan:
        x = match.tensors["x"]
        return self.plan(match, ctx, x, x, None)

    def rewrite(self, match: Match, plan: RotaryPlan, ctx: FusionContext) -> gs.Tensor:
        return self.emit(plan, ctx, match.root.outputs[0])


def _identity(table: gs.Tensor | np.ndarray) -> object:
    """A key under which equal tables share one cache."""
    if isinstance(table, np.ndarray):
        return ("constant", table.dtype.str, table.shape, table.tobytes())
    return id(table)


def _last_axis(axis: int | None, rank: int) -> bool | None:
    if axis is None:
        return None
    return int(axis) in (-1, rank - 1)


def _slice_bounds(node: gs.Node, ctx: FusionContext) -> tuple[int, int] | None:
    """(start, end) of a one-axis, step-1 Slice along the last axis with constant bounds."""
    values = [small_constant(t) if not t.is_empty() else None for t in node.inputs[1:]]
    if len(values) < 2 or values[0] is None or values[1] is None:
        return None
    starts, ends = values[0].reshape(-1), values[1].reshape(-1)
    rank = ctx.rank(node.inputs[0])
    axes = values[2].reshape(-1) if len(values) > 2 and values[2] is not None else np.arange(len(starts))
    steps = values[3].reshape(-1) if len(values) > 3 and values[3] is not None else np.ones(len(starts), dtype=np.int64)
    if len(node.inputs) > 3 and values[2] is None and not node.inputs[3].is_empty():
        return None
    if len(starts) != 1 or steps[0] != 1 or rank is None or int(axes[0]) not in (-1, rank - 1):
        return None
    return int(starts[0]), int(ends[0])


def _check_slice(node: gs.Node, source: gs.Tensor, ctx: FusionContext, start: int, end: int) -> None:
    if node.inputs[0] is not source:
        raise NearMiss("slice-source", f"the Slice {node.name!r} does not read the rotated tensor", None)
    bounds = _slice_bounds(node, ctx)
    if bounds is None:
        raise NearMiss("slice-bounds", f"the bounds of Slice {node.name!r} are computed at run time or not on the last axis", ctx.shapes_fix(FOLD_FIRST))
    width = ctx.static((ctx.shape(source) or [None])[-1])
    low, high = bounds
    reaches_end = width is not None and end == width and high >= width
    if low != start or not (high == end or reaches_end):
        raise NearMiss("slice-bounds", f"Slice {node.name!r} takes [{low}:{high}], expected [{start}:{end}]", None)


def _cache_table(tensor: gs.Tensor, ctx: FusionContext, width: int) -> gs.Tensor | np.ndarray:
    """The [batch, seq, width] table behind a [batch, 1, seq, width] cos/sin (or a [seq, width]
    one): a tensor, or its value when the table is a constant (then checked numerically)."""
    shape = ctx.shape(tensor)
    value = small_constant(tensor, max_bytes=CONSTANT_TABLE_BYTES)
    if value is not None and value.ndim in (2, 4) and value.shape[-1] == width and (value.ndim == 2 or value.shape[1] == 1):
        table = value.reshape((1,) + value.shape) if value.ndim == 2 else value[:, 0]
        if not np.array_equal(table[..., : width // 2], table[..., width // 2 :]):
            raise NearMiss("cache-halves", f"the constant cos/sin table {tensor.name!r} does not repeat its first half", None)
        return table
    node = producer(tensor)
    if node is not None and node.op == "Unsqueeze":
        axes = small_constant(node.inputs[1]) if len(node.inputs) > 1 else np.asarray(node.attrs.get("axes", []))
        if axes is not None and [int(a) for a in np.asarray(axes).reshape(-1)] in ([1], [-3]):
            table = node.inputs[0]
            table_shape = ctx.shape(table)
            if table_shape is not None and len(table_shape) == 3 and ctx.static(table_shape[-1]) == width:
                if not _repeats_halves(table):
                    raise NearMiss("cache-halves", f"the cos/sin table {table.name!r} does not provably repeat its first half (Cos(Concat(f, f)))", None)
                return table
    if shape is not None and len(shape) == 2 and ctx.static(shape[-1]) == width and _repeats_halves(tensor):
        return tensor
    raise NearMiss(
        "cache-layout",
        f"cos/sin {tensor.name!r} {show_dims(shape)} is not an Unsqueeze(axis 1) of a [batch, seq, {width}] table repeating its halves",
        None,
    )


#: Ops that keep "the last axis repeats its first half" true.
_HALF_PRESERVING = frozenset({"Cos", "Sin", "Cast", "Identity", "Neg"})


def _repeats_halves(tensor: gs.Tensor) -> bool:
    """True if ``tensor``'s last axis provably is [f, f] for some f."""

    def through(node: gs.Node) -> gs.Tensor | None:
        if node.op in _HALF_PRESERVING:
            return node.inputs[0]
        if node.op == "Mul" and len(node.inputs) == 2:
            scalars = [t for t in node.inputs if scalar_value(t) is not None and constant_tensor(t) is not None]
            if len(scalars) == 1:
                return node.inputs[1] if node.inputs[0] is scalars[0] else node.inputs[0]
        return None

    node = walk(tensor, through, 16).stop
    if node is None or not (node.op == "Concat" and len(node.inputs) == 2 and node.inputs[0] is node.inputs[1]):
        return False
    rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else None
    return rank is not None and _last_axis(node.attrs.get("axis"), rank) is True


def _half_cache(ctx: FusionContext, table: gs.Tensor | np.ndarray, plan: RotaryPlan) -> gs.Tensor:
    """The [batch, seq, dim/2] cache the op reads: the table's first half, batch-expanded for
    onnxruntime when the table was built for batch 1."""
    expand = plan.expand_batch and ctx.opset >= 23
    if isinstance(table, np.ndarray):
        half_value = table[..., : plan.half]
        if expand and plan.batch is not None:
            half_value = np.broadcast_to(half_value, (plan.batch, *half_value.shape[1:]))
            expand = False
        return ctx.const(np.ascontiguousarray(half_value), "rope_cache")
    dtype = table.dtype
    if plan.cache_rank == 2:
        table = ctx.with_axes("Unsqueeze", table, [0], dtype=dtype, name="rope_cache")
    bounds = [ctx.const(np.asarray([v], np.int64)) for v in (0, plan.half, -1)]
    half = ctx.node("Slice", [table, *bounds], dtype=dtype, name="rope_cache_half")
    if not expand:
        return half
    if plan.batch is not None:
        target: gs.Tensor = ctx.const(np.asarray([plan.batch, 1, 1], np.int64), "rope_cache_shape")
    else:
        batch = ctx.node("Shape", [plan.x], attrs={"start": 0, "end": 1}, name="rope_batch")
        target = ctx.node("Concat", [batch, ctx.const(np.asarray([1, 1], np.int64))], attrs={"axis": 0}, name="rope_cache_shape")
    return ctx.node("Expand", [half, target], dtype=dtype, name="rope_cache_batch")


def decompose_rotary(body: Body, plan: RotaryPlan) -> str:
    """The canonical decomposition: the body of ``mapc.RotaryEmbedding`` (opset < 23)."""
    x, cos_cache, sin_cache = body.inputs
    tables = []
    for cache in (cos_cache, sin_cache):
        per_head = body.unsqueeze(cache, [1])
        tables.append(body.add("Concat", [per_head, per_head], axis=-1))
    rotated = x if plan.rotary_dim == plan.head_size else body.slice_last(x, 0, plan.rotary_dim)
    low = body.slice_last(rotated, 0, plan.half)
    high = body.slice_last(rotated, plan.half, plan.rotary_dim)
    turned = body.add("Concat", [body.add("Neg", [high]), low], axis=-1)
    result = body.add("Add", [body.add("Mul", [rotated, tables[0]]), body.add("Mul", [turned, tables[1]])])
    if plan.rotary_dim == plan.head_size:
        return result
    return body.add("Concat", [result, body.slice_last(x, plan.rotary_dim, plan.head_size)], axis=-1)
