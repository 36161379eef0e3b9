"""BatchNormalization (inference) folded into the preceding convolution, or turned into Mul+Add.

* ``BatchNormalization(Conv(x, W, b))`` -> ``Conv(x, W * s, (b - mean) * s + B)`` with
  ``s = scale / sqrt(var + eps)`` per output channel; the same for ConvTranspose (whose weight
  holds output channels on axis 1, per group). The convolution's weight must be a constant no
  other node reads (folding a shared weight would copy it).
* A BatchNormalization left alone -> ``Mul(x, s) -> Add(·, B - mean * s)`` with ``[C, 1, ...]``
  constants: the form every backend runs (and folds into neighbours).

Parameters are computed in float64 and stored in the weight's type. BatchNormalization in
training mode (``training_mode=1`` or with running-statistics outputs) is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, constant_tensor, op, var
from mapc.passes.fusion.context import FusionContext, FusionRule


def _batch_norm(x):
    return op.BatchNormalization(x, var("scale"), var("bias"), var("mean"), var("var"), name="batch_norm")


@dataclass
class Affine:
    """y = x * multiplier + offset, per channel (float64)."""

    multiplier: np.ndarray
    offset: np.ndarray


def batch_norm_affine(match: Match, ctx: FusionContext) -> Affine:
    """The per-channel affine map of an inference BatchNormalization, or NearMiss."""
    node = match.nodes["batch_norm"]
    if int(node.attrs.get("training_mode", 0)) or len([t for t in node.outputs if not t.is_empty()]) > 1:
        raise NearMiss("training", f"BatchNormalization {node.name!r} is in training mode", "export the model in eval mode")
    if "spatial" in node.attrs and int(node.attrs["spatial"]) == 0:
        raise NearMiss("spatial", "BatchNormalization with spatial=0 (opset < 9) is not folded", None)
    values = {}
    for name in ("scale", "bias", "mean", "var"):
        constant = constant_tensor(match.tensors[name])
        if constant is None:
            raise NearMiss("parameters", f"the BatchNormalization {name} is not a constant", "fold constants first (fold-constants)")
        values[name] = np.asarray(constant.values, dtype=np.float64).reshape(-1)
    if len({v.size for v in values.values()}) != 1:
        raise NearMiss("parameters", "the BatchNormalization parameters differ in length", None)
    epsilon = float(node.attrs.get("epsilon", 1e-5))
    spread = values["var"] + epsilon
    if not np.all(np.isfinite(spread) & (spread > 0)):
        raise NearMiss("variance", f"BatchNormalization {node.name!r} has a variance + epsilon that is not positive and finite", None)
    multiplier = values["scale"] / np.sqrt(spread)
    return Affine(multiplier, values["bias"] - values["mean"] * multiplier)


@dataclass
class ConvFold:
    conv: gs.Node
    weight: np.ndarray
    bias: np.ndarray


class ConvBatchNormFold(FusionRule):
    """Conv/ConvTranspose + BatchNormalization -> Conv/ConvTranspose with folded weights."""

    name = "conv-batch-norm"
    pattern = _batch_norm(op["Conv", "ConvTranspose"](var("x"), var("weight"), ..., name="conv"))

    def check(self, match: Match, ctx: FusionContext) -> ConvFold:
        conv = match.nodes["conv"]
        weight = constant_tensor(match.tensors["weight"])
        if weight is None:
            raise NearMiss("weight", f"the weight of {conv.op} {conv.name!r} is not a constant", "fold constants first (fold-constants)")
        if len(match.tensors["weight"].outputs) > 1:
            raise NearMiss("shared-weight", f"the weight of {conv.op} {conv.name!r} is read by other nodes too", None)
        bias_input = conv.inputs[2] if len(conv.inputs) > 2 and not conv.inputs[2].is_empty() else None
        bias_constant = constant_tensor(bias_input) if bias_input is not None else None
        if bias_input is not None and bias_constant is None:
            raise NearMiss("bias", f"the bias of {conv.op} {conv.name!r} is not a constant", "fold constants first (fold-constants)")
        affine = batch_norm_affine(match, ctx)
        values = np.asarray(weight.values)
        group = int(conv.attrs.get("group", 1))
        channels = values.shape[0] if conv.op == "Conv" else values.shape[1] * group
        if affine.multiplier.size != channels:
            raise NearMiss("channels", f"BatchNormalization has {affine.multiplier.size} channels, the convolution {channels}", None)
        folded = values.astype(np.float64)
        if conv.op == "Conv":
            folded = folded * affine.multiplier.reshape([-1] + [1] * (values.ndim - 1))
        else:
            per_group = folded.reshape(group, values.shape[0] // group, values.shape[1], *values.shape[2:])
            factors = affine.multiplier.reshape(group, 1, values.shape[1], *([1] * (values.ndim - 2)))
            folded = (per_group * factors).reshape(values.shape)
        bias = np.asarray(bias_constant.values, dtype=np.float64).reshape(-1) if bias_constant is not None else np.zeros(channels)
        return ConvFold(conv, folded.astype(values.dtype), (bias * affine.multiplier + affine.offset).astype(values.dtype))

    def rewrite(self, match: Match, fold: ConvFold, ctx: FusionContext) -> gs.Tensor:
        inputs = [match.tensors["x"], ctx.const(fold.weight, "folded_weight"), ctx.const(fold.bias, "folded_bias")]
        out = match.root.outputs[0]
        return ctx.node(fold.conv.op, inputs, attrs=dict(fold.conv.attrs), dtype=out.dtype, shape=ctx.shape(out), name=fold.conv.name or "conv")


class BatchNormToMulAdd(FusionRule):
    """A BatchNormalization with nothing to fold into -> Mul + Add."""

    name = "batch-norm"
    pattern = _batch_norm(var("x"))

    def check(self, match: Match, ctx: FusionContext) -> tuple[np.ndarray, np.ndarray]:
        rank = ctx.rank(match.tensors["x"])
        dtype = ctx.dtype(match.tensors["x"])
        if rank is None or rank < 2 or dtype is None:
            raise NearMiss("rank", "the BatchNormalization input's rank or type is unknown", ctx.shapes_fix("run shape inference (fix-shapes)"))
        affine = batch_norm_affine(match, ctx)
        shape = [-1] + [1] * (rank - 2)
        return affine.multiplier.reshape(shape).astype(dtype), affine.offset.reshape(shape).astype(dtype)

    def rewrite(self, match: Match, params: tuple[np.ndarray, np.ndarray], ctx: FusionContext) -> gs.Tensor:
        multiplier, offset = params
        out = match.root.outputs[0]
        scaled = ctx.node("Mul", [match.tensors["x"], ctx.const(multiplier, "bn_multiplier")], dtype=out.dtype, shape=ctx.shape(out), name="batch_norm_scale")
        return ctx.node("Add", [scaled, ctx.const(offset, "bn_offset")], dtype=out.dtype, shape=ctx.shape(out), name="batch_norm_shift")
