"""onnxruntime's contrib normalisation and GELU ops -> the standard ops mapc's fusions produce.

onnxruntime's transformers optimizer and its exporters write ops of the ``com.microsoft`` domain
that only onnxruntime's CPU/GPU kernels run; an NPU compiler refuses them. Each is rewritten into
exactly what it computes, in standard ops (or ``mapc`` functions below their opsets):

* ``SkipLayerNormalization(x, skip, gamma[, beta][, bias])`` -> ``LayerNormalization(x + skip
  [+ bias], gamma[, beta])`` over the last axis; its sum output (``input_skip_bias_sum``) is the
  Add, when read;
* ``SkipSimplifiedLayerNormalization(x, skip, gamma[, bias])`` -> ``RMSNormalization`` of the sum;
* ``SimplifiedLayerNormalization(x, gamma)`` (onnxruntime registers it in the ai.onnx domain too)
  -> ``RMSNormalization`` with its axis;
* ``BiasGelu(a, b)`` -> ``Gelu(a + b)``; ``Gelu(x)`` -> ``Gelu``; ``FastGelu(x[, bias])`` ->
  ``Gelu(x [+ bias], approximate="tanh")``.

* ``EmbedLayerNormalization`` -> the embedding Gathers, their sum and ``LayerNormalization``
  (its ``mask_index`` output as the kernel computes it);
* ``Attention`` (packed QKV weights, no past) -> the decomposed attention the ``attention`` rule
  fuses into a standard ``Attention``.

A normalisation rule matches only when the mean and inverse-std-dev outputs are not read (no
standard op gives them). ``MultiHeadAttention``, ``GroupQueryAttention`` and ``RotaryEmbedding``
(contrib) are not rewritten yet.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, NoMatch, is_graph_output, op, var
from mapc.passes.fusion.context import FusionContext, FusionRule
from mapc.passes.fusion.gelu import decompose_gelu
from mapc.passes.fusion.normalization import LayerNormFusion, NormPlan, RmsNormFusion

ORT = "com.microsoft"


def _unread(graph: gs.Graph, node: gs.Node, slots: range) -> bool:
    return all(slot >= len(node.outputs) or node.outputs[slot].is_empty()
               or (not node.outputs[slot].outputs and not is_graph_output(graph, node.outputs[slot])) for slot in slots)


def _present(node: gs.Node, slot: int) -> gs.Tensor | None:
    return node.inputs[slot] if len(node.inputs) > slot and not node.inputs[slot].is_empty() else None


def _float_dtype(ctx: FusionContext, tensor: gs.Tensor) -> np.dtype:
    dtype = ctx.dtype(tensor)
    if dtype is None or dtype.kind != "f":
        raise NearMiss("dtype", f"the input's type is unknown or not float ({dtype})", ctx.shapes_fix("run shape inference (fix-shapes)"))
    return dtype


class _ContribNorm(FusionRule):
    op_type: str  # the standard op produced
    skip: bool

    def check(self, match: Match, ctx: FusionContext) -> tuple[np.dtype, int]:
        node = match.root
        ctx.require_op(self.op_type)
        if not _unread(ctx.graph, node, range(1, 3)):
            raise NearMiss("statistics", f"the {node.op}'s mean or inverse-std-dev output is read", None)
        rank = ctx.rank(node.inputs[0])
        if rank is None:
            raise NearMiss("shape", "the input's rank is unknown", ctx.shapes_fix("run shape inference (fix-shapes)"))
        return _float_dtype(ctx, node.inputs[0]), rank

    def rewrite(self, match: Match, found: tuple[np.dtype, int], ctx: FusionContext) -> list[gs.Tensor]:
        node = match.root
        dtype, rank = found
        x = node.inputs[0]
        summed = None
        if self.skip:
            summed = ctx.node("Add", [x, node.inputs[1]], dtype=dtype, shape=ctx.shape(x), name="skip_add")
            bias = _present(node, 4 if self.op_type == "LayerNormalization" else 3)
            if bias is not None:
                summed = ctx.node("Add", [summed, bias], dtype=dtype, shape=ctx.shape(x), name="skip_bias_add")
            x = summed
        gamma = node.inputs[2] if self.skip else node.inputs[1]
        beta = _present(node, 3) if self.skip and self.op_type == "LayerNormalization" else None
        axis = int(node.attrs.get("axis", -1)) if not self.skip else -1
        axis = axis - rank if axis >= 0 else axis
        epsilon = float(node.attrs.get("epsilon", 1e-5))
        plan = NormPlan(x=x, scale=gamma, bias=beta, axis=axis, epsilon=epsilon, stash_type=onnx.TensorProto.FLOAT,
                        compute_dtype=dtype, output_dtype=dtype, cast_back=False)
        inputs, formal = [x, gamma], ["X", "Scale"]
        if beta is not None:
            inputs.append(beta)
            formal.append("B")
        rule = LayerNormFusion() if self.op_type == "LayerNormalization" else RmsNormFusion()
        out = node.outputs[0]
        normalized = ctx.fused(self.op_type, inputs, formal, {"axis": axis, "epsilon": epsilon},
                               lambda body: rule.decompose(body, plan), dtype=out.dtype, shape=ctx.shape(out))
        outputs = [normalized, *node.outputs[1:3]]
        if len(node.outputs) > 3:
            outputs.append(summed if summed is not None else node.outputs[3])
        return outputs


class SkipLayerNormToStandard(_ContribNorm):
    """com.microsoft SkipLayerNormalization -> Add [+ bias] -> LayerNormalization."""

    name = "contrib-skip-layer-norm"
    op_type = "LayerNormalization"
    skip = True
    pattern = op.SkipLayerNormalization(var("x"), ..., name="norm", domain=ORT)


class SkipSimplifiedLayerNormToStandard(_ContribNorm):
    """com.microsoft SkipSimplifiedLayerNormalization -> Add [+ bias] -> RMSNormalization."""

    name = "contrib-skip-rms-norm"
    op_type = "RMSNormalization"
    skip = True
    pattern = op.SkipSimplifiedLayerNormalization(var("x"), ..., name="norm", domain=ORT)


class SimplifiedLayerNormToStandard(_ContribNorm):
    """SimplifiedLayerNormalization (onnxruntime's, either domain) -> RMSNormalization."""

    name = "contrib-rms-norm"
    op_type = "RMSNormalization"
    skip = False
    pattern = op.SimplifiedLayerNormalization(var("x"), ..., name="norm") | \
        op.SimplifiedLayerNormalization(var("x"), ..., name="norm", domain=ORT)


class _ContribGelu(FusionRule):
    approximate: str
    #: input slot of the bias added first (None: no bias)
    bias_slot: int | None

    def check(self, match: Match, ctx: FusionContext) -> np.dtype:
        ctx.require_op("Gelu")
        if len(match.root.outputs) != 1:
            raise NoMatch
        return _float_dtype(ctx, match.root.inputs[0])

    def rewrite(self, match: Match, dtype: np.dtype, ctx: FusionContext) -> gs.Tensor:
        node = match.root
        x = node.inputs[0]
        bias = _present(node, self.bias_slot) if self.bias_slot is not None else None
        out = node.outputs[0]
        if bias is not None:
            x = ctx.node("Add", [x, bias], dtype=dtype, shape=ctx.shape(out), name="gelu_bias")
        return ctx.fused("Gelu", [x], ["X"], {"approximate": self.approximate},
                         lambda body: decompose_gelu(body, self.approximate, dtype), dtype=out.dtype, shape=ctx.shape(out))


class BiasGeluToStandard(_ContribGelu):
    """com.microsoft BiasGelu(a, b) -> Gelu(a + b)."""

    name = "contrib-bias-gelu"
    approximate, bias_slot = "none", 1
    pattern = op.BiasGelu(var("x"), ..., name="gelu", domain=ORT)


class ContribGeluToStandard(_ContribGelu):
    """com.microsoft Gelu(x) -> Gelu."""

    name = "contrib-gelu"
    approximate, bias_slot = "none", None
    pattern = op.Gelu(var("x"), name="gelu", domain=ORT)


class FastGeluToStandard(_ContribGelu):
    """com.microsoft FastGelu(x[, bias]) -> Gelu(x [+ bias], approximate="tanh")."""

    name = "contrib-fast-gelu"
    approximate, bias_slot = "tanh", 1
    pattern = op.FastGelu(var("x"), ..., name="gelu", domain=ORT)


RULES = [SkipLayerNormToStandard(), SkipSimplifiedLayerNormToStandard(), SimplifiedLayerNormToStandard(),
         BiasGeluToStandard(), ContribGeluToStandard(), FastGeluToStandard()]


class ContribAttentionToStandard(FusionRule):
    """com.microsoft Attention (packed QKV weights, no past) -> MatMul, Softmax attention that the
    ``attention`` rule then fuses into a standard Attention.

    Matches ``Attention(input, weights[, bias][, mask_index])`` with ``num_heads``, no past, no
    attention bias, no ``qkv_hidden_sizes``, ``unidirectional`` 0 and a ``mask_index`` that is
    absent, the 2-D raw mask ``[B, S]`` (0 masks a key) or the 1-D end positions ``[B]`` (keys at
    and after the end are masked: what ``EmbedLayerNormalization`` computes). Produces what the
    kernel computes: ``q, k, v`` from ``input @ weights + bias``, ``softmax(q kᵀ · scale + m) v``
    with ``m`` = ``mask_filter_value`` at masked keys, heads merged back to ``[B, S, H]``.
    """

    name = "contrib-attention"
    pattern = op.Attention(var("x"), ..., name="attention", domain=ORT)

    def check(self, match: Match, ctx: FusionContext) -> tuple[np.dtype, int, int, int]:
        node = match.root
        attrs = node.attrs
        if int(attrs.get("unidirectional", 0)) or "qkv_hidden_sizes" in attrs or int(attrs.get("do_rotary", 0)):
            raise NearMiss("variant", "a unidirectional, rotary or unequal-QKV Attention is not rewritten", None)
        if any(_present(node, slot) is not None for slot in range(4, len(node.inputs))) or \
                (len(node.outputs) > 1 and not _unread(ctx.graph, node, range(1, len(node.outputs)))):
            raise NearMiss("past", "an Attention with a past, present or attention bias is not rewritten", None)
        dtype = _float_dtype(ctx, node.inputs[0])
        weights = ctx.shape(node.inputs[1])
        shape = ctx.shape(node.inputs[0])
        heads = int(attrs["num_heads"])
        if weights is None or shape is None or len(shape) != 3 or ctx.static(weights[1]) is None or ctx.static(weights[1]) % (3 * heads):
            raise NearMiss("shape", "the input or packed weights' shape is unknown or not [*, 3*hidden]", ctx.shapes_fix("run shape inference (fix-shapes)"))
        hidden = ctx.static(weights[1]) // 3
        mask = _present(node, 3)
        mask_rank = None if mask is None else ctx.rank(mask)
        sequence = ctx.static(shape[1])
        if mask is not None and (mask_rank not in (1, 2) or (mask_rank == 1 and sequence is None)):
            raise NearMiss("mask", "only a 2-D raw mask or 1-D end positions (with a static sequence) are rewritten", None)
        return dtype, hidden, heads, sequence or 0

    def rewrite(self, match: Match, found: tuple[np.dtype, int, int, int], ctx: FusionContext) -> list[gs.Tensor]:
        node = match.root
        dtype, hidden, heads, sequence = found
        head_size = hidden // heads
        x, out = node.inputs[0], node.outputs[0]
        qkv = ctx.node("MatMul", [x, node.inputs[1]], dtype=dtype, name="qkv")
        bias = _present(node, 2)
        if bias is not None:
            qkv = ctx.node("Add", [qkv, bias], dtype=dtype, name="qkv_bias")

        def part(index: int, perm: list[int]) -> gs.Tensor:
            sliced = ctx.node("Slice", [qkv, _ints(ctx, [index * hidden]), _ints(ctx, [(index + 1) * hidden]), _ints(ctx, [-1])],
                              dtype=dtype, name="qkv_part")
            heads_split = ctx.node("Reshape", [sliced, _ints(ctx, [0, 0, heads, head_size])], dtype=dtype, name="heads")
            return ctx.node("Transpose", [heads_split], attrs={"perm": perm}, dtype=dtype, name="heads_first")

        q, k_t, v = part(0, [0, 2, 1, 3]), part(1, [0, 2, 3, 1]), part(2, [0, 2, 1, 3])
        scale = float(node.attrs.get("scale", 0.0)) or head_size ** -0.5
        scores = ctx.node("Mul", [ctx.node("MatMul", [q, k_t], dtype=dtype, name="scores"), ctx.const(np.asarray(scale, dtype), "scale")],
                          dtype=dtype, name="scaled_scores")
        mask = _present(node, 3)
        if mask is not None:
            scores = ctx.node("Add", [scores, self._additive(ctx, mask, dtype, sequence, float(node.attrs.get("mask_filter_value", -10000.0)))],
                              dtype=dtype, name="masked_scores")
        probs = ctx.node("Softmax", [scores], attrs={"axis": -1}, dtype=dtype, name="probs")
        context = ctx.node("Transpose", [ctx.node("MatMul", [probs, v], dtype=dtype, name="context")], attrs={"perm": [0, 2, 1, 3]},
                           dtype=dtype, name="heads_last")
        merged = ctx.node("Reshape", [context, _ints(ctx, [0, 0, hidden])], dtype=out.dtype, shape=ctx.shape(out), name="heads_merged")
        return [merged, *node.outputs[1:]]

    @staticmethod
    def _additive(ctx: FusionContext, mask: gs.Tensor, dtype: np.dtype, sequence: int, fill: float) -> gs.Tensor:
        """``[B, 1, 1, S]``: 0 where a key is attended, ``fill`` where it is masked."""
        zero, filled = ctx.const(np.asarray(0.0, dtype), "unmasked"), ctx.const(np.asarray(fill, dtype), "mask_filter")
        if ctx.rank(mask) == 2:
            keep = ctx.node("Cast", [mask], attrs={"to": onnx.TensorProto.BOOL}, dtype=np.dtype(bool), name="keep")
        else:  # 1-D end positions: key j is kept while j < end[b]
            ends = ctx.with_axes("Unsqueeze", mask, [1], name="ends")
            positions = ctx.const(np.arange(sequence, dtype=np.dtype(ctx.dtype(mask) or np.int32))[None, :], "key_positions")
            keep = ctx.node("Less", [positions, ends], dtype=np.dtype(bool), name="keep")
        additive = ctx.node("Where", [keep, zero, filled], dtype=dtype, name="additive_mask")
        return ctx.with_axes("Unsqueeze", additive, [1, 2], dtype=dtype, name="mask_heads")


class EmbedLayerNormToStandard(FusionRule):
    """com.microsoft EmbedLayerNormalization -> Gathers, Adds and LayerNormalization.

    Matches ``EmbedLayerNormalization(ids, segments, word, position, segment, gamma, beta[, mask]
    [, position_ids])`` whose embedding-sum output is unread. Produces the word, position
    (``position_ids`` or 0..S-1, S static) and segment lookups summed and normalised over the last
    axis, and, when read, its 1-D ``mask_index`` output as the kernel computes it: the sum of the
    mask per batch (int32).
    """

    name = "contrib-embed-layer-norm"
    pattern = op.EmbedLayerNormalization(var("ids"), ..., name="embed", domain=ORT)

    def check(self, match: Match, ctx: FusionContext) -> int:
        node = match.root
        ctx.require_op("LayerNormalization")
        if len(node.outputs) > 2 and not _unread(ctx.graph, node, range(2, 3)):
            raise NearMiss("embedding-sum", "the embedding sum output is read", None)
        shape = ctx.shape(node.inputs[0])
        sequence = ctx.static(shape[1]) if shape is not None and len(shape) == 2 else None
        if sequence is None and _present(node, 8) is None:
            raise NearMiss("shape", "the sequence length must be static to enumerate positions", ctx.shapes_fix("fix the input shapes (fix-shapes)"))
        mask_read = len(node.outputs) > 1 and not _unread(ctx.graph, node, range(1, 2))
        if mask_read and _present(node, 7) is None:
            raise NearMiss("mask", "the mask index is read but no mask is given", None)
        return sequence or 0

    def rewrite(self, match: Match, sequence: int, ctx: FusionContext) -> list[gs.Tensor]:
        node = match.root
        ids, out = node.inputs[0], node.outputs[0]
        dtype = np.dtype(node.inputs[2].dtype)
        total = ctx.node("Gather", [node.inputs[2], ids], dtype=dtype, name="word_embedding")
        position_ids = _present(node, 8)
        if position_ids is None:
            positions = ctx.node("Gather", [node.inputs[3], ctx.const(np.arange(sequence, dtype=np.int64), "positions")], dtype=dtype,
                                 name="position_embedding")
        else:
            positions = ctx.node("Gather", [node.inputs[3], position_ids], dtype=dtype, name="position_embedding")
        total = ctx.node("Add", [total, positions], dtype=dtype, name="embedding_sum")
        segments, segment_table = _present(node, 1), _present(node, 4)
        if segments is not None and segment_table is not None:
            total = ctx.node("Add", [total, ctx.node("Gather", [segment_table, segments], dtype=dtype, name="segment_embedding")],
                             dtype=dtype, name="embedding_sum")
        epsilon = float(node.attrs.get("epsilon", 1e-12))
        plan = NormPlan(x=total, scale=node.inputs[5], bias=node.inputs[6], axis=-1, epsilon=epsilon, stash_type=onnx.TensorProto.FLOAT,
                        compute_dtype=dtype, output_dtype=dtype, cast_back=False)
        normalized = ctx.fused("LayerNormalization", [total, node.inputs[5], node.inputs[6]], ["X", "Scale", "B"],
                               {"axis": -1, "epsilon": epsilon}, lambda body: LayerNormFusion().decompose(body, plan),
                               dtype=out.dtype, shape=ctx.shape(out))
        outputs = [normalized]
        if len(node.outputs) > 1:
            mask = _present(node, 7)
            if mask is not None and not _unread(ctx.graph, node, range(1, 2)):
                summed = ctx.with_axes("ReduceSum", mask, [1], attrs={"keepdims": 0}, name="mask_index")
                outputs.append(ctx.node("Cast", [summed], attrs={"to": onnx.TensorProto.INT32}, dtype=np.dtype(np.int32), name="mask_index_int32"))
            else:
                outputs.append(node.outputs[1])
        return outputs + list(node.outputs[2:])


def _ints(ctx: FusionContext, values: list[int]) -> gs.Constant:
    return ctx.const(np.asarray(values, dtype=np.int64), "ints")


RULES += [EmbedLayerNormToStandard(), ContribAttentionToStandard()]
