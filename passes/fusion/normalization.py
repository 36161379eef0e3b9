"""Layer and RMS normalisation -> ``LayerNormalization`` (opset 17) / ``RMSNormalization`` (23).

Matches, after canonicalisation (Pow(x, 2) is Mul(x, x), x * Reciprocal(Sqrt(v)) is
Div(x, Sqrt(v)), 1/s is a Mul)::

    LayerNorm: d = x - ReduceMean(x); d / Sqrt(ReduceMean(d * d) + eps) [Cast] [* scale] [+ bias]
               (d may be Cast to a wider type first: fp16 norms computed in fp32)
    TF LayerNorm (tf2onnx/keras2onnx, the batch-norm formulation):
               f = scale / Sqrt(ReduceMean(d * d) + eps); x * f + (bias - ReduceMean(x) * f)
    RMSNorm:   x / Sqrt(ReduceMean(x * x) + eps) [Cast] [* scale]

over the trailing axes (both ReduceMeans alike, keepdims). A Cast sandwich (``x = Cast(h)`` to
compute in a wider type, the normalised value cast back to ``h``'s type before the scale, as
HuggingFace writes fp16 norms) becomes ``stash_type``; otherwise stash_type is the type the
decomposition computes in. ``scale`` and ``bias`` must have the normalised shape (leading 1s are
dropped from constants); a missing scale becomes ones. A Mul or Add with something else (a
gate, a residual) is left outside. Below their opsets the nodes are ``mapc`` functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, NoMatch, const, op, producer, scalar_value, small_constant, var
from mapc.passes.fusion.context import Dim, FusionContext, FusionRule, same_dims, show_dims
from mapc.passes.fusion.functions import Body


def _reduce_mean(tensor, name):
    return op.ReduceMean(tensor, ..., name=name)


def _affine(normalized, with_bias: bool):
    cast = op.Cast(normalized, name="cast_out") | normalized
    scaled = op.Mul(cast, var("scale"), name="scale_mul") | cast
    return (op.Add(scaled, var("bias"), name="bias_add") | scaled) if with_bias else scaled


def _layer_norm_pattern():
    x = var("x")
    centered = op.Sub(x, _reduce_mean(x, "mean"), name="centered")
    centered = op.Cast(centered, name="cast_centered") | centered
    variance = _reduce_mean(op.Mul(centered, centered, name="square"), "variance")
    std = op.Sqrt(op.Add(variance, const("eps"), name="add_eps"), name="std")
    return _affine(op.Div(centered, std, name="normalized"), with_bias=True)


def _tf_layer_norm_pattern():
    x = var("x")
    mean = _reduce_mean(x, "mean")
    centered = op.Sub(x, mean, name="centered")
    variance = _reduce_mean(op.Mul(centered, centered, name="square"), "variance")
    std = op.Sqrt(op.Add(variance, const("eps"), name="add_eps"), name="std")
    factor = op.Div(var("scale"), std, name="factor")
    shift = op.Sub(var("bias"), op.Mul(mean, factor, name="scaled_mean"), name="shift")
    return op.Add(op.Mul(x, factor, name="scale_mul"), shift, name="bias_add")


def _rms_norm_pattern():
    x = var("x")
    mean_square = _reduce_mean(op.Mul(x, x, name="square"), "mean_square")
    rms = op.Sqrt(op.Add(mean_square, const("eps"), name="add_eps"), name="std")
    return _affine(op.Div(x, rms, name="normalized"), with_bias=False)


@dataclass
class NormPlan:
    x: gs.Tensor
    scale: gs.Tensor | np.ndarray
    bias: gs.Tensor | np.ndarray | None
    axis: int
    epsilon: float
    stash_type: int
    compute_dtype: np.dtype
    output_dtype: np.dtype
    cast_back: bool


class _NormRule(FusionRule):
    op_type: str
    reductions: tuple[str, ...]
    near_miss_after = "std"

    def check(self, match: Match, ctx: FusionContext) -> NormPlan:
        ctx.require_op(self.op_type)
        x = match.tensors["x"]
        rank = ctx.rank(x)
        dtype = ctx.dtype(x)
        if rank is None or dtype is None or dtype.kind != "f":
            raise NearMiss("shape", f"the input's rank or float type is unknown ({show_dims(ctx.shape(x))}, {dtype})", ctx.shapes_fix("run shape inference (fix-shapes)"))
        axes = {_axes(match.nodes[name], rank, ctx) for name in self.reductions}
        if len(axes) != 1 or None in axes:
            raise NearMiss("axes", "the reductions do not share constant trailing axes with keepdims", None)
        (count,) = axes
        out_shape = ctx.shape(match.root.outputs[0])
        if out_shape is not None and len(out_shape) != rank:
            raise NoMatch  # a scale or bias of higher rank broadcasts the result up
        epsilon = scalar_value(match.tensors["eps"])
        if epsilon is None or epsilon < 0:
            raise NearMiss("epsilon", "epsilon is not a non-negative scalar constant", None)
        normalized_dims = (ctx.shape(x) or [])[rank - count :]
        source, compute_dtype, output_dtype, cast_back = _cast_sandwich(match, x, dtype, ctx)
        scale = _parameter(match, "scale", normalized_dims, ctx, output_dtype)
        bias = _parameter(match, "bias", normalized_dims, ctx, output_dtype) if "bias_add" in match.nodes else None
        if scale is None:
            static = [ctx.static(d) for d in normalized_dims]
            if None in static:
                raise NearMiss("dims", f"the normalised dims {show_dims(normalized_dims)} must be static to make a unit scale", ctx.shapes_fix("fix the input shapes first (fix-shapes)"))
            scale = np.ones(static, dtype=output_dtype)
        return NormPlan(
            x=source,
            scale=scale,
            bias=bias,
            axis=-count,
            epsilon=epsilon,
            stash_type=onnx.helper.np_dtype_to_tensor_dtype(compute_dtype),
            compute_dtype=compute_dtype,
            output_dtype=output_dtype,
            cast_back=cast_back,
        )

    def rewrite(self, match: Match, plan: NormPlan, ctx: FusionContext) -> gs.Tensor:
        scale = plan.scale if isinstance(plan.scale, gs.Tensor) else ctx.const(plan.scale, "norm_scale")
        inputs = [plan.x, scale]
        formal = ["X", "Scale"]
        if plan.bias is not None:
            inputs.append(plan.bias if isinstance(plan.bias, gs.Tensor) else ctx.const(plan.bias, "norm_bias"))
            formal.append("B")
        attrs = {"axis": plan.axis, "epsilon": float(plan.epsilon)}
        if plan.stash_type != onnx.TensorProto.FLOAT:
            attrs["stash_type"] = plan.stash_type
        out = match.root.outputs[0]
        return ctx.fused(
            self.op_type, inputs, formal, attrs, lambda body: self.decompose(body, plan), dtype=out.dtype, shape=ctx.shape(out)
        )

    def decompose(self, body: Body, plan: NormPlan) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


def _axes(node: gs.Node, rank: int, ctx: FusionContext) -> int | None:
    """How many trailing axes a keepdims ReduceMean reduces, or None if not exactly trailing ones."""
    if int(node.attrs.get("keepdims", 1)) != 1:
        return None
    if len(node.inputs) > 1 and not node.inputs[1].is_empty():
        value = small_constant(node.inputs[1])
        if value is None:
            return None
        axes = value.reshape(-1).tolist()
    else:
        axes = list(node.attrs.get("axes", []))
    if not axes:
        return None if int(node.attrs.get("noop_with_empty_axes", 0)) else rank
    normalized = sorted({int(a) % rank for a in axes})
    if normalized != list(range(rank - len(normalized), rank)):
        return None
    return len(normalized)


def _cast_sandwich(match: Match, x: gs.Tensor, dtype: np.dtype, ctx: FusionContext) -> tuple[gs.Tensor, np.dtype, np.dtype, bool]:
    """(op input, type computed in, output type, whether the result is cast back) for optional
    Casts around the normalisation: ``x = Cast(h)`` and a Cast of the result back to h's type."""
    cast_out = match.nodes.get("cast_out")
    cast_centered = match.nodes.get("cast_centered")
    if cast_centered is not None:  # centred in x's type, normalised in a wider one, cast back
        compute = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(cast_centered.attrs["to"])))
        back = None if cast_out is None else np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(cast_out.attrs["to"])))
        if compute.kind != "f" or back != dtype:
            raise NearMiss("cast", f"the centred input is cast to {compute} but the result is not cast back to {dtype}", None)
        return x, compute, dtype, compute != dtype
    if cast_out is None:
        return x, dtype, dtype, False
    target = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(cast_out.attrs["to"])))
    source_cast = producer(x)
    if source_cast is not None and source_cast.op == "Cast" and ctx.dtype(source_cast.inputs[0]) == target:
        return source_cast.inputs[0], dtype, target, True
    if target == dtype:  # a Cast to the type it already has
        return x, dtype, dtype, False
    raise NearMiss(
        "cast",
        f"the result is cast to {target}, but the input is not a Cast from {target} (no Cast sandwich)",
        None,
    )


def _parameter(match: Match, name: str, normalized: list[Dim], ctx: FusionContext, dtype: np.dtype) -> gs.Tensor | np.ndarray | None:
    """The scale or bias in the normalised shape; NoMatch when the Mul/Add is something else
    (a gate or a residual of the input's full shape)."""
    if name not in match.tensors:
        return None
    tensor = match.tensors[name]
    shape = ctx.shape(tensor)
    if shape is None or ctx.dtype(tensor) != dtype:
        raise NoMatch
    if same_dims(shape, normalized):
        return tensor
    value = small_constant(tensor)
    static = [ctx.static(d) for d in normalized]
    if value is None or None in static:
        raise NoMatch
    if value.ndim > len(static):
        if any(d != 1 for d in value.shape[: value.ndim - len(static)]):
            raise NoMatch
        value = value.reshape(value.shape[value.ndim - len(static) :])
    try:
        return np.ascontiguousarray(np.broadcast_to(value, static))
    except ValueError:
        raise NoMatch from None


class LayerNormFusion(_NormRule):
    """(x - mean) / sqrt(var + eps) * scale + bias -> LayerNormalization."""

    name = "layer-norm"
    op_type = "LayerNormalization"
    reductions = ("mean", "variance")
    pattern = _layer_norm_pattern()

    def decompose(self, body: Body, plan: NormPlan) -> str:
        axes = list(range(plan.axis, 0))
        x = _stash(body, body.inputs[0], plan)
        centered = body.add("Sub", [x, body.reduce_mean(x, axes)])
        variance = body.reduce_mean(body.add("Mul", [centered, centered]), axes)
        std = body.add("Sqrt", [body.add("Add", [variance, body.const(np.asarray(plan.epsilon, dtype=plan.compute_dtype))])])
        result = _unstash(body, body.add("Div", [centered, std]), plan)
        result = body.add("Mul", [result, body.inputs[1]])
        return body.add("Add", [result, body.inputs[2]]) if plan.bias is not None else result


class TfLayerNormFusion(LayerNormFusion):
    """x * f + (bias - mean * f), f = scale / sqrt(var + eps) -> LayerNormalization (tf2onnx, keras2onnx)."""

    name = "layer-norm-tf"
    pattern = _tf_layer_norm_pattern()


class RmsNormFusion(_NormRule):
    """x / sqrt(mean(x^2) + eps) * scale -> RMSNormalization."""

    name = "rms-norm"
    op_type = "RMSNormalization"
    reductions = ("mean_square",)
    pattern = _rms_norm_pattern()

    def decompose(self, body: Body, plan: NormPlan) -> str:
        axes = list(range(plan.axis, 0))
        x = _stash(body, body.inputs[0], plan)
        mean_square = body.reduce_mean(body.add("Mul", [x, x]), axes)
        rms = body.add("Sqrt", [body.add("Add", [mean_square, body.const(np.asarray(plan.epsilon, dtype=plan.compute_dtype))])])
        result = _unstash(body, body.add("Div", [x, rms]), plan)
        return body.add("Mul", [result, body.inputs[1]])


def _stash(body: Body, x: str, plan: NormPlan) -> str:
    return body.add("Cast", [x], to=plan.stash_type) if plan.cast_back else x


def _unstash(body: Body, value: str, plan: NormPlan) -> str:
    if plan.cast_back:
        return body.add("Cast", [value], to=onnx.helper.np_dtype_to_tensor_dtype(plan.output_dtype))
    return value
