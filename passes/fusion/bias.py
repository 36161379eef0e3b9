"""A constant Add after Conv, ConvTranspose, Gemm or MatMul folded into a bias input.

* ``Add(Conv(x, W[, b]), c)`` -> ``Conv(x, W, b + c)`` when ``c`` is per output channel
  (``[C, 1, ...]``, ``[1, C, 1, ...]`` or a scalar); the same for ConvTranspose.
* ``Add(Gemm(A, B[, C]), c)`` -> ``Gemm(A, B, beta * C + c)`` (``beta`` becomes 1) when ``c``
  broadcasts within Gemm's 2-D output.
* option ``matmul-to-gemm`` (off by default): ``Add(MatMul(A, W), c)`` with a 2-D ``A``, a 2-D
  constant ``W`` and ``c`` broadcasting within ``[M, N]`` -> ``Gemm(A, W, c)``. MatMul on 3-D
  activations (transformers) is not Gemm and stays.

Sums are computed in float64 and stored in the bias's type.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, NoMatch, constant_tensor, op, small_constant, var
from mapc.passes.fusion.context import FusionContext, FusionRule


def _constant(match: Match, name: str) -> np.ndarray:
    value = small_constant(match.tensors[name], max_bytes=1 << 26)
    if value is None:
        raise NoMatch
    return value


def _fits_2d(value: np.ndarray, rows: object, columns: object) -> bool:
    """True if ``value`` broadcasts into a [rows, columns] output without growing it."""
    if value.ndim > 2:
        return False
    padded = (1,) * (2 - value.ndim) + value.shape
    return all(d == 1 or d == full for d, full in zip(padded, (rows, columns)))


class ConvBiasFold(FusionRule):
    """Conv/ConvTranspose + per-channel constant Add -> bias."""

    name = "conv-bias"
    pattern = op.Add(op["Conv", "ConvTranspose"](var("x"), var("weight"), ..., name="conv"), var("c"), name="add")

    def check(self, match: Match, ctx: FusionContext) -> np.ndarray:
        conv = match.nodes["conv"]
        if constant_tensor(match.tensors["c"]) is None:
            raise NoMatch  # a residual or another activation, not a bias
        addend = _constant(match, "c")
        out_rank = ctx.rank(conv.outputs[0])
        weight = match.tensors["weight"]
        if out_rank is None or weight.shape is None:
            raise NearMiss("shape", f"the output rank of {conv.op} {conv.name!r} is unknown", ctx.shapes_fix("run shape inference (fix-shapes)"))
        channels = weight.shape[0] if conv.op == "Conv" else weight.shape[1] * int(conv.attrs.get("group", 1))
        if addend.ndim > out_rank:
            raise NoMatch
        padded = (1,) * (out_rank - addend.ndim) + addend.shape
        if padded[0] != 1 or padded[1] not in (1, channels) or any(d != 1 for d in padded[2:]):
            raise NearMiss("not-per-channel", f"the added constant {list(addend.shape)} is not per output channel", None)
        bias = conv.inputs[2] if len(conv.inputs) > 2 and not conv.inputs[2].is_empty() else None
        current = np.zeros(channels, dtype=np.float64)
        if bias is not None:
            if constant_tensor(bias) is None:
                raise NearMiss("bias", f"the bias of {conv.op} {conv.name!r} is not a constant", "fold constants first (fold-constants)")
            current = np.asarray(constant_tensor(bias).values, dtype=np.float64).reshape(-1)
        dtype = np.dtype(constant_tensor(weight).dtype if constant_tensor(weight) is not None else addend.dtype)
        return (current + np.broadcast_to(addend.reshape(-1).astype(np.float64), (channels,))).astype(dtype)

    def rewrite(self, match: Match, bias: np.ndarray, ctx: FusionContext) -> gs.Tensor:
        conv = match.nodes["conv"]
        out = match.root.outputs[0]
        inputs = [match.tensors["x"], match.tensors["weight"], ctx.const(bias, "folded_bias")]
        return ctx.node(conv.op, inputs, attrs=dict(conv.attrs), dtype=out.dtype, shape=ctx.shape(out), name=conv.name or "conv")


class GemmBiasFold(FusionRule):
    """Gemm + constant Add -> Gemm's C input."""

    name = "gemm-bias"
    pattern = op.Add(op.Gemm(var("a"), var("b"), ..., name="gemm"), var("c"), name="add")

    def check(self, match: Match, ctx: FusionContext) -> np.ndarray:
        gemm = match.nodes["gemm"]
        if constant_tensor(match.tensors["c"]) is None:
            raise NoMatch
        addend = _constant(match, "c")
        shape = ctx.shape(gemm.outputs[0])
        if shape is None or len(shape) != 2:
            raise NearMiss("shape", f"the output shape of Gemm {gemm.name!r} is unknown", ctx.shapes_fix("run shape inference (fix-shapes)"))
        if not _fits_2d(addend, *shape):
            raise NearMiss("not-bias", f"the added constant {list(addend.shape)} does not broadcast within Gemm's output {shape}", None)
        beta = float(gemm.attrs.get("beta", 1.0))
        existing = gemm.inputs[2] if len(gemm.inputs) > 2 and not gemm.inputs[2].is_empty() else None
        if existing is None:
            return addend
        value = small_constant(existing, max_bytes=1 << 26)
        if value is None:
            raise NearMiss("bias", f"the C input of Gemm {gemm.name!r} is not a constant", "fold constants first (fold-constants)")
        total = beta * value.astype(np.float64) + addend.astype(np.float64)
        if not _fits_2d(total, *shape):
            raise NoMatch
        return total.astype(value.dtype)

    def rewrite(self, match: Match, bias: np.ndarray, ctx: FusionContext) -> gs.Tensor:
        gemm = match.nodes["gemm"]
        attrs = dict(gemm.attrs)
        attrs["beta"] = 1.0
        out = match.root.outputs[0]
        inputs = [match.tensors["a"], match.tensors["b"], ctx.const(bias, "gemm_bias")]
        return ctx.node("Gemm", inputs, attrs=attrs, dtype=out.dtype, shape=ctx.shape(out), name=gemm.name or "gemm")


class MatMulAddToGemm(FusionRule):
    """MatMul(2-D, constant 2-D) + constant bias -> Gemm (opt in with enable=[matmul-to-gemm])."""

    name = "matmul-to-gemm"
    default_enabled = False
    pattern = op.Add(op.MatMul(var("a"), var("w"), name="matmul"), var("c"), name="add")

    def check(self, match: Match, ctx: FusionContext) -> None:
        a, w, c = match.tensors["a"], match.tensors["w"], match.tensors["c"]
        if constant_tensor(c) is None or constant_tensor(w) is None or w.shape is None or len(w.shape) != 2:
            raise NoMatch
        shape = ctx.shape(a)
        if shape is None or len(shape) != 2:
            raise NoMatch  # Gemm is 2-D only
        addend = _constant(match, "c")
        if not _fits_2d(addend, shape[0], w.shape[1]):
            raise NoMatch

    def rewrite(self, match: Match, params: None, ctx: FusionContext) -> gs.Tensor:
        out = match.root.outputs[0]
        inputs = [match.tensors["a"], match.tensors["w"], match.tensors["c"]]
        return ctx.node("Gemm", inputs, dtype=out.dtype, shape=ctx.shape(out), name="gemm")
