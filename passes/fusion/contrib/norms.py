"""onnxruntime's contrib normalisation and GELU ops -> LayerNormalization, RMSNormalization, Gelu.

* ``SkipLayerNormalization(x, skip, gamma[, beta][, bias])`` -> ``LayerNormalization(x + skip
  [+ bias], gamma[, beta])`` over the last axis; its sum output (``input_skip_bias_sum``) is the
  Add, when read;
* ``SkipSimplifiedLayerNormalization(x, skip, gamma[, bias])`` -> ``RMSNormalization`` of the sum;
* ``SimplifiedLayerNormalization(x, gamma)`` (onnxruntime registers it in the ai.onnx domain too)
  -> ``RMSNormalization`` with its axis;
* ``BiasGelu(a, b)`` -> ``Gelu(a + b)``; ``Gelu(x)`` -> ``Gelu``; ``FastGelu(x[, bias])`` ->
  ``Gelu(x [+ bias], approximate="tanh")``.

A normalisation rule matches only when the mean and inverse-std-dev outputs are not read (no
standard op gives them).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, NoMatch, op, optional_input, var
from mapc.passes.fusion.context import FusionContext, FusionRule
from mapc.passes.fusion.contrib.common import ORT, float_dtype, unread
from mapc.passes.fusion.gelu import decompose_gelu
from mapc.passes.fusion.normalization import LayerNormFusion, NormPlan, RmsNormFusion


class _ContribNorm(FusionRule):
    op_type: str  # the standard op produced
    skip: bool

    def check(self, match: Match, ctx: FusionContext) -> tuple[np.dtype, int]:
        node = match.root
        ctx.require_op(self.op_type)
        if not unread(ctx.graph, node, range(1, 3)):
            raise NearMiss("statistics", f"the {node.op}'s mean or inverse-std-dev output is read", None)
        rank = ctx.rank(node.inputs[0])
        if rank is None:
            raise NearMiss("shape", "the input's rank is unknown", ctx.shapes_fix("run shape inference (fix-shapes)"))
        return float_dtype(ctx, node.inputs[0]), rank

    def rewrite(self, match: Match, found: tuple[np.dtype, int], ctx: FusionContext) -> list[gs.Tensor]:
        node = match.root
        dtype, rank = found
        x = node.inputs[0]
        summed = None
        if self.skip:
            summed = ctx.node("Add", [x, node.inputs[1]], dtype=dtype, shape=ctx.shape(x), name="skip_add")
            bias = optional_input(node, 4 if self.op_type == "LayerNormalization" else 3)
            if bias is not None:
                summed = ctx.node("Add", [summed, bias], dtype=dtype, shape=ctx.shape(x), name="skip_bias_add")
            x = summed
        gamma = node.inputs[2] if self.skip else node.inputs[1]
        beta = optional_input(node, 3) if self.skip and self.op_type == "LayerNormalization" else None
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
        return float_dtype(ctx, match.root.inputs[0])

    def rewrite(self, match: Match, dtype: np.dtype, ctx: FusionContext) -> gs.Tensor:
        node = match.root
        x = node.inputs[0]
        bias = optional_input(node, self.bias_slot) if self.bias_slot is not None else None
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
