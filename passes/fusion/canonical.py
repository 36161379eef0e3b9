"""Canonical arithmetic: one spelling for operations exporters write in several ways.

* ``Cast(x, to=type of x)`` -> ``x`` (the shared :func:`~mapc.passes.peephole.identities.identity_cast`);
* ``Add(c, x)`` -> ``Add(x, c)``: a constant is the second operand of a commutative op;
* ``Div(x, c)`` -> ``Mul(x, 1/c)`` for a float constant ``c`` (exact when ``c`` is a power of 2,
  otherwise within one rounding); ``fuse`` restores the ``Div`` where no fusion used the ``Mul``;
* ``Sub(0, x)``, ``Mul(x, -1)`` -> ``Neg(x)``; ``Add(x, Neg(y))`` -> ``Sub(x, y)``;
  ``Sub(x, Neg(y))`` -> ``Add(x, y)``; ``Neg(Neg(x))`` -> ``x``;
* ``Pow(x, 2)`` -> ``Mul(x, x)``; ``Pow(x, 0.5)`` -> ``Sqrt(x)``; ``Pow(x, -1)`` -> ``Reciprocal(x)``;
  ``Pow(x, -0.5)`` -> ``Reciprocal(Sqrt(x))``; ``Pow(x, 1)`` -> ``x``;
* ``Div(1, y)`` -> ``Reciprocal(y)``; ``Mul(x, Reciprocal(y))`` -> ``Div(x, y)``;
* ``Reshape(Softmax(Flatten(x, axis=r-1)), shape of x)`` -> ``Softmax(x, axis=-1)`` (and
  LogSoftmax, Hardmax): the old-opset spelling of a last-axis Softmax.

A constant operand is only dropped when it cannot change the result's shape or type (one
element, rank no larger than the other operand's, same element type).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import COMMUTATIVE_OPS, Match, NoMatch, const, constant_tensor, op, producer, small_constant, var
from mapc.passes.fusion.context import FusionContext, FusionRule


def is_float(tensor: gs.Tensor) -> bool:
    return tensor.dtype is not None and np.issubdtype(np.dtype(tensor.dtype), np.floating)


def neutral_operand(constant: gs.Tensor, other: gs.Tensor, ctx: FusionContext) -> bool:
    """True if dropping scalar ``constant`` from an elementwise op with ``other`` keeps the result's
    shape and type."""
    value = small_constant(constant)
    if value is None or value.size != 1:
        return False
    if other.dtype is None or np.dtype(other.dtype) != value.dtype:
        return False
    rank = ctx.rank(other)
    return value.ndim == 0 or (rank is not None and rank >= value.ndim)


def _like(ctx: FusionContext, op_type: str, inputs: list[gs.Tensor], template: gs.Tensor) -> gs.Tensor:
    """A new ``op_type`` node whose output has ``template``'s type and shape."""
    return ctx.node(op_type, inputs, dtype=template.dtype, shape=ctx.shape(template))


class CanonicalRule(FusionRule):
    quiet = True


class ConstantSecond(CanonicalRule):
    """Add(c, x) -> Add(x, c): the constant operand of a commutative op comes second."""

    name = "constant-second"
    pattern = op[tuple(sorted(COMMUTATIVE_OPS))](var("a"), var("b"))

    def check(self, match: Match, ctx: FusionContext) -> None:
        first, second = match.root.inputs
        if constant_tensor(first) is None or constant_tensor(second) is not None:
            raise NoMatch

    def rewrite(self, match: Match, params: None, ctx: FusionContext) -> None:
        match.root.inputs.reverse()


class DivByConstant(CanonicalRule):
    """Div(x, c) -> Mul(x, 1/c) for a small float constant c without zeros."""

    name = "div-by-constant"
    pattern = op.Div(var("x"), const("c"))

    def check(self, match: Match, ctx: FusionContext) -> np.ndarray:
        divisor = small_constant(match.tensors["c"])
        x = match.tensors["x"]
        if divisor is None or divisor.dtype.kind != "f" or constant_tensor(x) is not None:
            raise NoMatch
        if not np.all(np.isfinite(divisor)) or np.any(divisor == 0):
            raise NoMatch
        return (1.0 / divisor.astype(np.float64)).astype(divisor.dtype)

    def rewrite(self, match: Match, reciprocal: np.ndarray, ctx: FusionContext) -> gs.Tensor:
        product = _like(ctx, "Mul", [match.tensors["x"], ctx.const(reciprocal, "reciprocal")], match.root.outputs[0])
        ctx.divisions.append((product.inputs[0], match.tensors["x"], match.tensors["c"], small_constant(match.tensors["c"])))
        return product


def restore_divisions(ctx: FusionContext) -> int:
    """Turn the ``Mul(x, 1/c)`` that :class:`DivByConstant` wrote and no fusion used back into
    ``Div(x, c)``: the reciprocal rounds once more, which an ill-conditioned reader (``Sin`` of
    large values) turns into a visible error. Returns how many were restored."""
    alive = {id(node) for node in ctx.model.graph.nodes}
    restored = 0
    for node, x, divisor, value in ctx.divisions:
        if id(node) in alive and node.op == "Mul" and len(node.inputs) == 2 and node.inputs[0] is x:
            if not isinstance(divisor, gs.Constant) and not divisor.inputs:  # its Constant node was removed as dead
                divisor = ctx.const(value, "divisor")
            ctx.become(node, "Div", [x, divisor])
            restored += 1
    ctx.divisions.clear()
    return restored


class NegFromSub(CanonicalRule):
    """Sub(0, x) -> Neg(x)."""

    name = "neg-from-sub"
    pattern = op.Sub(const("zero", 0.0), var("x"))

    def check(self, match: Match, ctx: FusionContext) -> None:
        if not neutral_operand(match.tensors["zero"], match.tensors["x"], ctx):
            raise NoMatch

    def rewrite(self, match: Match, params: None, ctx: FusionContext) -> gs.Tensor:
        return _like(ctx, "Neg", [match.tensors["x"]], match.root.outputs[0])


class NegFromMul(CanonicalRule):
    """Mul(x, -1) -> Neg(x)."""

    name = "neg-from-mul"
    pattern = op.Mul(var("x"), const("minus_one", -1.0))

    def check(self, match: Match, ctx: FusionContext) -> None:
        if not neutral_operand(match.tensors["minus_one"], match.tensors["x"], ctx):
            raise NoMatch

    def rewrite(self, match: Match, params: None, ctx: FusionContext) -> gs.Tensor:
        return _like(ctx, "Neg", [match.tensors["x"]], match.root.outputs[0])


class SubFromAddNeg(CanonicalRule):
    """Add(x, Neg(y)) -> Sub(x, y)."""

    name = "sub-from-add-neg"
    allow_shared = True
    pattern = op.Add(var("x"), op.Neg(var("y"), name="neg"))

    def rewrite(self, match: Match, params: None, ctx: FusionContext) -> gs.Tensor:
        return _like(ctx, "Sub", [match.tensors["x"], match.tensors["y"]], match.root.outputs[0])


class AddFromSubNeg(CanonicalRule):
    """Sub(x, Neg(y)) -> Add(x, y)."""

    name = "add-from-sub-neg"
    allow_shared = True
    pattern = op.Sub(var("x"), op.Neg(var("y"), name="neg"))

    def rewrite(self, match: Match, params: None, ctx: FusionContext) -> gs.Tensor:
        return _like(ctx, "Add", [match.tensors["x"], match.tensors["y"]], match.root.outputs[0])


class DoubleNeg(CanonicalRule):
    """Neg(Neg(x)) -> x."""

    name = "double-neg"
    allow_shared = True
    pattern = op.Neg(op.Neg(var("x"), name="inner"))

    def rewrite(self, match: Match, params: None, ctx: FusionContext) -> gs.Tensor:
        return match.tensors["x"]


class PowToMul(CanonicalRule):
    """Pow(x, 2) -> Mul(x, x); Pow(x, 0.5) -> Sqrt(x); Pow(x, -1) -> Reciprocal(x); Pow(x, -0.5) ->
    Reciprocal(Sqrt(x)); Pow(x, 1) -> x."""

    name = "pow-canonical"
    pattern = op.Pow(var("x"), const("exponent"))

    def check(self, match: Match, ctx: FusionContext) -> float:
        x, exponent = match.tensors["x"], match.tensors["exponent"]
        value = small_constant(exponent)
        if value is None or value.size != 1 or not is_float(x):
            raise NoMatch
        power = float(value.reshape(-1)[0])
        rank = ctx.rank(x)
        if power not in (2.0, 0.5, -1.0, -0.5, 1.0) or not (value.ndim == 0 or (rank is not None and rank >= value.ndim)):
            raise NoMatch
        return power

    def rewrite(self, match: Match, power: float, ctx: FusionContext) -> gs.Tensor:
        x, out = match.tensors["x"], match.root.outputs[0]
        if power == 2.0:
            return _like(ctx, "Mul", [x, x], out)
        if power == 0.5:
            return _like(ctx, "Sqrt", [x], out)
        if power == -1.0:
            return _like(ctx, "Reciprocal", [x], out)
        if power == -0.5:
            return _like(ctx, "Reciprocal", [_like(ctx, "Sqrt", [x], out)], out)
        return x


class ReciprocalFromDiv(CanonicalRule):
    """Div(1, y) -> Reciprocal(y)."""

    name = "reciprocal-from-div"
    pattern = op.Div(const("one", 1.0), var("y"))

    def check(self, match: Match, ctx: FusionContext) -> None:
        y = match.tensors["y"]
        if not is_float(y) or not neutral_operand(match.tensors["one"], y, ctx):
            raise NoMatch

    def rewrite(self, match: Match, params: None, ctx: FusionContext) -> gs.Tensor:
        return _like(ctx, "Reciprocal", [match.tensors["y"]], match.root.outputs[0])


class DivFromReciprocal(CanonicalRule):
    """Mul(x, Reciprocal(y)) -> Div(x, y) for a y that is not a constant."""

    name = "div-from-reciprocal"
    allow_shared = True
    pattern = op.Mul(var("x"), op.Reciprocal(var("y"), name="reciprocal"))

    def check(self, match: Match, ctx: FusionContext) -> None:
        if constant_tensor(match.tensors["y"]) is not None:
            raise NoMatch

    def rewrite(self, match: Match, params: None, ctx: FusionContext) -> gs.Tensor:
        return _like(ctx, "Div", [match.tensors["x"], match.tensors["y"]], match.root.outputs[0])


#: Ops that normalise the rows of a 2-D input.
ROW_OPS = ("Hardmax", "LogSoftmax", "Softmax")


class SoftmaxOverLastAxis(CanonicalRule):
    """Reshape(Softmax(Flatten(x, axis=r-1)), shape of x) -> Softmax(x, axis=-1).

    The same for LogSoftmax and Hardmax. onnx's version converter writes a Softmax over the
    last axis this way when it moves a model from below opset 13 and cannot see the rank (the
    old definition flattened to 2-D at ``axis``), and so do exporters at old opsets. Normalising
    the rows of the ``[N, d]`` flattening and reshaping back is normalising the last axis,
    element for element. Needs the rank of ``x``, and a Reshape target that is ``Shape(x)`` or
    a constant equal to the static shape of ``x``.
    """

    name = "softmax-last-axis"
    pattern = op.Reshape(op[ROW_OPS](op.Flatten(var("x"), name="flatten"), name="rows"), var("shape"))

    def check(self, match: Match, ctx: FusionContext) -> None:
        x = match.tensors["x"]
        rank = ctx.rank(x)
        if rank is None or rank < 2:
            raise NoMatch
        if int(match.nodes["flatten"].attrs.get("axis", 1)) % rank != rank - 1:
            raise NoMatch
        rows = match.nodes["rows"]
        if int(rows.attrs.get("axis", -1 if ctx.opset >= 13 else 1)) % 2 != 1:
            raise NoMatch
        if not _is_shape_of(match.tensors["shape"], x, ctx):
            raise NoMatch

    def rewrite(self, match: Match, params: None, ctx: FusionContext) -> gs.Tensor:
        out = match.root.outputs[0]
        return ctx.node(match.nodes["rows"].op, [match.tensors["x"]], attrs={"axis": -1}, dtype=out.dtype, shape=ctx.shape(match.tensors["x"]))


def _is_shape_of(target: gs.Tensor, x: gs.Tensor, ctx: FusionContext) -> bool:
    """True if ``target`` is ``Shape(x)`` or a constant equal to the static shape of ``x``."""
    source = producer(target)
    if source is not None and source.op == "Shape" and source.inputs[0] is x and not source.attrs.get("start") and source.attrs.get("end") is None:
        return True
    value = small_constant(target)
    dims = ctx.shape(x)
    return value is not None and dims is not None and all(ctx.static(d) is not None for d in dims) and value.tolist() == [int(d) for d in dims]
