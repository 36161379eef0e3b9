"""Canonical attention: one form for the scaled-dot-product spellings exporters write.

The form the attention rule expects is ``MatMul(Q, Kᵀ) -> Mul(scale) -> Add(mask)... -> Softmax``.

* **Scale on the scores.** Scalar factors on the way from Q or K to the score MatMul (through
  Reshape/Transpose: ``q_proj(x) * scaling``, SDPA's ``√s`` on both Q and Kᵀ) and on the scores
  before the first mask Add move into one Mul right after the MatMul (dropped when it is 1).
  Scalar factors commute with Reshape, Transpose and MatMul, so only rounding changes.
* **K transposed in one step.** ``Reshape(Transpose(Reshape(K, [B*H, L, D]), [0,2,1]), [B, H, D, L])``
  (dynamo's SDPA) becomes ``Transpose(K, [0,1,3,2])`` when shapes prove the two reshapes only
  merge and split the leading axes.
* **Additive masks.** ``Where(cond, scores, fill)`` (or ``Where(cond, fill, scores)``) on the way
  to a Softmax, with ``fill`` -inf or below -1e30, becomes ``Add(scores, Where(cond, 0, fill))``.
  Exact: adding such a fill gives the fill itself for any finite score below 1e30 in magnitude.
* **Multiplicative masks.** Megatron's ``scores * m - c * (1 - m)`` (or ``+ c' * (1 - m)``) on the
  way to a Softmax, with ``m`` a 0/1 mask, becomes ``Where(m, scores, -c)``: exact for every score
  when ``m`` holds only 0 and 1, which the rule proves (a constant of 0s and 1s, or a Cast from
  bool) or refuses with a ``mask-not-binary`` near-miss. The attention-mask pass then treats it as
  the Where mask it is.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, NoMatch, constant_tensor, constant_value, is_graph_output, op, producer, replace_all_uses, scalar_value, sole_reader, var, walk
from mapc.passes.fusion.canonical import CanonicalRule, neutral_operand
from mapc.passes.fusion.context import FusionContext, same_dim, same_dims

#: A mask fill at or below this acts as minus infinity.
MASK_FILL_LIMIT = -1e30
#: Ops a scalar factor moves through unchanged on its way to the score MatMul.
_SCALE_TRANSPARENT = frozenset({"Reshape", "Transpose"})


def _scalar_factor(node: gs.Node, ctx: FusionContext) -> tuple[gs.Tensor, float] | None:
    """(the other operand, factor) for Mul/Div of a tensor by a scalar constant, else None."""
    if node.op not in ("Mul", "Div") or len(node.inputs) != 2:
        return None
    first, second = node.inputs
    candidates = [(first, second)] + ([(second, first)] if node.op == "Mul" else [])
    for tensor, constant in candidates:
        value = scalar_value(constant)
        if value is None or constant_tensor(tensor) is not None or not neutral_operand(constant, tensor, ctx):
            continue
        if node.op == "Div":
            if value == 0:
                return None
            value = 1.0 / value
        return tensor, value
    return None


def score_matmul(tensor: gs.Tensor, ctx: FusionContext) -> tuple[gs.Node, list[gs.Node], list[gs.Node]] | None:
    """Walk from a Softmax input to the score MatMul.

    Returns (MatMul, scalar nodes between it and the first mask Add, the Add/Cast nodes above).
    Mask Adds are followed along their non-constant operand that leads to a MatMul.
    """

    def through(node: gs.Node) -> gs.Tensor | None:
        if node.op == "Cast":
            return node.inputs[0]
        if node.op == "Add" and len(node.inputs) == 2:
            branches = [t for t in node.inputs if constant_tensor(t) is None and _reaches_matmul(t, ctx)]
            return branches[0] if len(branches) == 1 else None
        return None

    walked = walk(tensor, through, 16)
    node = walked.stop
    if node is None:
        return None
    if node.op == "MatMul":
        return node, [], walked.passed
    if _scalar_factor(node, ctx) is None:
        return None
    scalars = []
    while node is not None and _scalar_factor(node, ctx) is not None:
        scalars.append(node)
        node = producer(_scalar_factor(node, ctx)[0])
    if node is not None and node.op == "MatMul":
        return node, scalars, walked.passed
    return None


def _reaches_matmul(tensor: gs.Tensor, ctx: FusionContext, depth: int = 8) -> bool:
    def through(node: gs.Node) -> gs.Tensor | None:
        scalar = _scalar_factor(node, ctx)
        if scalar is not None:
            return scalar[0]
        return node.inputs[0] if node.op in ("Add", "Cast") else None

    return walk(tensor, through, depth).stopped_at("MatMul")


def _operand_scalars(tensor: gs.Tensor, ctx: FusionContext) -> list[gs.Node]:
    """Scalar Mul/Div nodes on the Reshape/Transpose path producing a score MatMul operand."""
    found = []
    current = tensor
    while len(current.outputs) == 1 and not is_graph_output(ctx.model.graph, current):
        node = producer(current)
        if node is None:
            break
        scalar = _scalar_factor(node, ctx)
        if scalar is not None:
            found.append(node)
            current = scalar[0]
        elif node.op in _SCALE_TRANSPARENT:
            current = node.inputs[0]
        else:
            break
    return found


def _bypass(ctx: FusionContext, node: gs.Node) -> float:
    """Make the readers of scalar Mul/Div ``node`` read its other operand, detach the node (the
    pass drops detached nodes); return the factor."""
    tensor, factor = _scalar_factor(node, ctx)
    replace_all_uses(ctx.model, node.outputs[0], tensor)
    node.inputs.clear()
    node.outputs.clear()
    return factor


class AttentionScaleToScores(CanonicalRule):
    """Scalar factors on Q, Kᵀ or the scores become one Mul on the scores, next to the MatMul."""

    name = "attention-scale"
    pattern = op.Softmax(var("scores"), name="softmax")

    def check(self, match: Match, ctx: FusionContext) -> tuple[gs.Node, list[gs.Node]]:
        found = score_matmul(match.tensors["scores"], ctx)
        if found is None:
            raise NoMatch
        matmul, chain, _ = found
        if any(constant_tensor(t) is not None for t in matmul.inputs) or len(matmul.outputs[0].outputs) != 1:
            raise NoMatch
        scalars = chain + _operand_scalars(matmul.inputs[0], ctx) + _operand_scalars(matmul.inputs[1], ctx)
        # Moving a factor changes every tensor between it and the scores; none may be observable.
        changed = [matmul.outputs[0], *(node.outputs[0] for node in scalars)]
        if any(is_graph_output(ctx.model.graph, tensor) for tensor in changed):
            raise NoMatch
        canonical = len(scalars) == 1 and bool(chain) and scalars[0] is chain[-1] and scalars[0].op == "Mul" and scalar_value(scalars[0].inputs[1]) != 1.0
        if not scalars or canonical:
            raise NoMatch
        return matmul, scalars

    def rewrite(self, match: Match, found: tuple[gs.Node, list[gs.Node]], ctx: FusionContext) -> None:
        matmul, scalars = found
        dtype = np.dtype(matmul.outputs[0].dtype or np.float32)
        total = 1.0
        for node in scalars:
            total *= _bypass(ctx, node)
        if total == 1.0:
            return
        scores = matmul.outputs[0]
        readers = list(scores.outputs)
        scaled = ctx.node("Mul", [scores, ctx.const(np.asarray(total, dtype=dtype), "scale")], dtype=scores.dtype, shape=ctx.shape(scores), name="attention_scale")
        for reader in readers:
            for index, tensor in enumerate(reader.inputs):
                if tensor is scores:
                    reader.inputs[index] = scaled


class KTransposeInOneStep(CanonicalRule):
    """Reshape(Transpose(Reshape(K, [B*H,L,D]), [0,2,1]), [B,H,D,L]) -> Transpose(K, [0,1,3,2]).

    K may have more leading axes than [B, H] when they multiply to B*H (GQA's repeat_kv
    ``[B, Hkv, rep, L, D]``, which the dynamo exporter flattens in the same Reshape): it is
    then reshaped to [B, H, L, D] first, so the repeat stays visible to the attention fusion.
    """

    name = "k-transpose"
    pattern = op.Reshape(
        op.Transpose(op.Reshape(var("k"), var("merged_shape"), name="merge"), name="transpose", perm=[0, 2, 1]),
        var("split_shape"),
        name="split",
    )

    def check(self, match: Match, ctx: FusionContext) -> bool:
        k = ctx.shape(match.tensors["k"])
        merged = ctx.shape(match.nodes["merge"].outputs[0])
        split = ctx.shape(match.root.outputs[0])
        if k is None or merged is None or split is None or len(k) < 4 or len(merged) != 3 or len(split) != 4:
            raise NoMatch
        if not (same_dims(merged[1:], k[-2:]) and same_dim(split[2], k[-1]) and same_dim(split[3], k[-2])):
            raise NoMatch
        if len(k) == 4:
            if not same_dims(split[:2], k[:2]):
                raise NoMatch
            return False
        leading = [ctx.static(d) for d in [*k[:-2], *split[:2]]]
        if None in leading or int(np.prod(leading[:-2])) != leading[-2] * leading[-1]:
            raise NoMatch
        return True

    def rewrite(self, match: Match, regroup: bool, ctx: FusionContext) -> gs.Tensor:
        out = match.root.outputs[0]
        k = match.tensors["k"]
        if regroup:
            split = ctx.shape(out)
            shape = [ctx.static(split[0]), ctx.static(split[1]), ctx.static(split[3]), ctx.static(split[2])]
            k = ctx.node("Reshape", [k, ctx.const(np.array(shape, dtype=np.int64), "k_heads_shape")], name="k_heads",
                         dtype=k.dtype, shape=shape)
        return ctx.node("Transpose", [k], attrs={"perm": [0, 1, 3, 2]}, dtype=out.dtype, shape=ctx.shape(out))


class WhereMaskToAdd(CanonicalRule):
    """Where(cond, scores, fill) before a Softmax -> Add(scores, Where(cond, 0, fill))."""

    name = "where-mask"
    pattern = op.Where(var("cond"), var("a"), var("b"))

    def check(self, match: Match, ctx: FusionContext) -> tuple[gs.Tensor, gs.Tensor, bool]:
        a, b = match.tensors["a"], match.tensors["b"]
        fill_second = _is_fill(b) and constant_tensor(a) is None
        fill_first = _is_fill(a) and constant_tensor(b) is None
        if fill_first == fill_second or not _feeds_softmax(match.root.outputs[0]):
            raise NoMatch
        return (a, b, True) if fill_second else (b, a, False)

    def rewrite(self, match: Match, found: tuple[gs.Tensor, gs.Tensor, bool], ctx: FusionContext) -> gs.Tensor:
        scores, fill, fill_second = found
        zero = ctx.const(np.zeros((), dtype=np.dtype(constant_tensor(fill).dtype)), "mask_zero")
        branches = [zero, fill] if fill_second else [fill, zero]
        mask = ctx.node("Where", [match.tensors["cond"], *branches], name="additive_mask", dtype=scores.dtype)
        out = match.root.outputs[0]
        return ctx.node("Add", [scores, mask], dtype=out.dtype, shape=ctx.shape(out), name="masked_scores")


class MultiplicativeMaskToWhere(CanonicalRule):
    """scores * m - c * (1 - m) before a Softmax (Megatron) -> Where(m, scores, -c), m a 0/1 mask."""

    name = "multiplicative-mask"
    quiet = False  # a mask it cannot prove binary is an attention left unfused: say so
    pattern = op.Sub(var("kept"), var("penalty")) | op.Add(var("kept"), var("penalty"))

    def check(self, match: Match, ctx: FusionContext) -> tuple[gs.Tensor, gs.Tensor, float]:
        root = match.root
        if not _feeds_softmax(root.outputs[0]):
            raise NoMatch
        penalty = _penalty(match.tensors["penalty"]) or _folded_penalty(match.tensors["kept"], match.tensors["penalty"])
        if penalty is None:
            raise NoMatch
        mask, factor = penalty
        scores = _masked_by(match.tensors["kept"], mask)
        if scores is None:
            raise NoMatch
        if not _binary(mask):
            raise NearMiss("mask-not-binary", f"the mask {mask.name!r} is not provably 0 or 1 (a constant of 0s and 1s, or a Cast "
                           "from bool): scores * m - c * (1 - m) equals Where(m, scores, -c) only then", None)
        fill = -factor if root.op == "Sub" else factor
        return scores, mask, fill

    def rewrite(self, match: Match, found: tuple[gs.Tensor, gs.Tensor, float], ctx: FusionContext) -> gs.Tensor:
        scores, mask, fill = found
        out = match.root.outputs[0]
        keep = ctx.node("Cast", [mask], attrs={"to": 9}, dtype=np.dtype(bool), name="mask_keep")  # 9: BOOL
        value = ctx.const(np.asarray(fill, dtype=np.dtype(out.dtype)), "mask_fill")
        return ctx.node("Where", [keep, scores, value], dtype=out.dtype, shape=ctx.shape(out), name="masked_scores")


def _penalty(tensor: gs.Tensor) -> tuple[gs.Tensor, float] | None:
    """(m, c) when ``tensor`` is ``Mul(Sub(1, m), c)`` with a scalar constant ``c``."""
    node = producer(tensor)
    if node is None or node.op != "Mul" or len(node.inputs) != 2:
        return None
    for inverted, factor in (node.inputs, node.inputs[::-1]):
        c = scalar_value(factor)
        source = producer(inverted)
        if c is None or source is None or source.op != "Sub" or scalar_value(source.inputs[0]) != 1.0:
            continue
        return source.inputs[1], c
    return None


def _folded_penalty(kept: gs.Tensor, penalty: gs.Tensor) -> tuple[gs.Tensor, float] | None:
    """(M, c) when a constant 0/1 mask ``M`` multiplies the scores in ``kept`` and ``penalty`` is
    the constant ``c * (1 - M)`` folding left (c where M is 0, 0 where it is 1)."""
    node = producer(kept)
    folded = constant_value(penalty)
    if node is None or node.op != "Mul" or folded is None:
        return None
    for mask in node.inputs:
        values = constant_value(mask)
        if values is None or not _binary(mask) or np.shape(values) != np.shape(folded) or not np.any(values == 0):
            continue
        outside = np.asarray(folded)[np.asarray(values) == 0]
        if np.all(np.asarray(folded)[np.asarray(values) == 1] == 0) and np.all(outside == outside.flat[0]) and outside.flat[0] != 0:
            return mask, float(outside.flat[0])
    return None


def _masked_by(tensor: gs.Tensor, mask: gs.Tensor) -> gs.Tensor | None:
    """``scores`` when ``tensor`` is ``Mul(scores, mask)`` (either order)."""
    node = producer(tensor)
    if node is None or node.op != "Mul" or len(node.inputs) != 2 or not any(t is mask for t in node.inputs):
        return None
    scores = node.inputs[1] if node.inputs[0] is mask else node.inputs[0]
    return scores if scores is not mask else None


def _binary(mask: gs.Tensor) -> bool:
    """``mask`` holds only 0 and 1: a constant of 0s and 1s, or a Cast from bool."""
    value = constant_value(mask)
    if value is not None:
        return bool(np.all((np.asarray(value) == 0) | (np.asarray(value) == 1)))
    source = producer(mask)
    return source is not None and source.op == "Cast" and source.inputs[0].dtype is not None and np.dtype(source.inputs[0].dtype) == np.bool_


def _is_fill(tensor: gs.Tensor) -> bool:
    value = scalar_value(tensor)
    return value is not None and value <= MASK_FILL_LIMIT


def _feeds_softmax(tensor: gs.Tensor) -> bool:
    """True if ``tensor`` reaches a Softmax through a chain of single-reader Adds."""
    return walk(tensor, {"Add"}, 8, step=sole_reader).stopped_at("Softmax")
