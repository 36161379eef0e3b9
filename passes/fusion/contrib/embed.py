"""onnxruntime's contrib ``EmbedLayerNormalization`` -> Gathers, Adds and LayerNormalization."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, op, optional_input, var
from mapc.passes.fusion.context import FusionContext, FusionRule
from mapc.passes.fusion.contrib.common import ORT, unread
from mapc.passes.fusion.normalization import LayerNormFusion, NormPlan


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
        if len(node.outputs) > 2 and not unread(ctx.graph, node, range(2, 3)):
            raise NearMiss("embedding-sum", "the embedding sum output is read", None)
        shape = ctx.shape(node.inputs[0])
        sequence = ctx.static(shape[1]) if shape is not None and len(shape) == 2 else None
        if sequence is None and optional_input(node, 8) is None:
            raise NearMiss("shape", "the sequence length must be static to enumerate positions", ctx.shapes_fix("fix the input shapes (fix-shapes)"))
        mask_read = len(node.outputs) > 1 and not unread(ctx.graph, node, range(1, 2))
        if mask_read and optional_input(node, 7) is None:
            raise NearMiss("mask", "the mask index is read but no mask is given", None)
        return sequence or 0

    def rewrite(self, match: Match, sequence: int, ctx: FusionContext) -> list[gs.Tensor]:
        node = match.root
        ids, out = node.inputs[0], node.outputs[0]
        dtype = np.dtype(node.inputs[2].dtype)
        total = ctx.node("Gather", [node.inputs[2], ids], dtype=dtype, name="word_embedding")
        position_ids = optional_input(node, 8)
        if position_ids is None:
            positions = ctx.node("Gather", [node.inputs[3], ctx.const(np.arange(sequence, dtype=np.int64), "positions")], dtype=dtype,
                                 name="position_embedding")
        else:
            positions = ctx.node("Gather", [node.inputs[3], position_ids], dtype=dtype, name="position_embedding")
        total = ctx.node("Add", [total, positions], dtype=dtype, name="embedding_sum")
        segments, segment_table = optional_input(node, 1), optional_input(node, 4)
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
            mask = optional_input(node, 7)
            if mask is not None and not unread(ctx.graph, node, range(1, 2)):
                summed = ctx.with_axes("ReduceSum", mask, [1], attrs={"keepdims": 0}, name="mask_index")
                outputs.append(ctx.node("Cast", [summed], attrs={"to": onnx.TensorProto.INT32}, dtype=np.dtype(np.int32), name="mask_index_int32"))
            else:
                outputs.append(node.outputs[1])
        return outputs + list(node.outputs[2:])
