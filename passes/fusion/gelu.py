"""GELU, exact and tanh-approximate -> ``Gelu`` (opset 20).

Matches, after canonicalisation (x / √2 is x * (1/√2)), every product in any association and
operand order::

    exact: x * 0.5 * (1 + Erf(x * 1/√2))
    tanh:  x * 0.5 * (1 + Tanh(√(2/π) * (x + 0.044715 * x³)))    x³ as Pow(x, 3) or x * x * x
    tanh, factored (Megatron, bloom): x * 0.5 * (1 + Tanh(√(2/π) * x * (1 + 0.044715 * x²)))

"Any association" includes the constant inside the power: 0.044715·x³ as ((x·x)·x)·c or
x·(x·(x·c)), and 0.044715·x² as x·(x·c), which is how onnxruntime's FastGelu fusion and its
test models write the factored form (``(0.7978·x)·(1 + x·(x·0.0447))``).

Produces ``Gelu(x)`` with ``approximate`` "none" or "tanh". Constants must equal the textbook
values to within 1e-5 relative (float32 rounding of √(2/π) and 0.044715 included). Below opset
20 the node is ``mapc.Gelu``.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Alt, Match, NearMiss, NoMatch, const, op, product, var
from mapc.passes.fusion.context import FusionContext, FusionRule
from mapc.passes.fusion.functions import Body

#: Relative tolerance for GELU's constants.
CONSTANT_RTOL = 1e-5
SQRT_HALF = math.sqrt(0.5)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715


def _exact_pattern():
    x = var("x")
    erf = op.Erf(op.Mul(x, const("inv_sqrt2", SQRT_HALF, CONSTANT_RTOL), name="scaled"), name="erf")
    return product(x, const("half", 0.5), op.Add(erf, const("one", 1.0), name="one_plus"), name="gelu")


def _tanh_pattern():
    x = var("x")
    cubic = const("cubic", CUBIC, CONSTANT_RTOL)
    term = Alt((product(op.Pow(x, const("three", 3.0), name="cube"), cubic), product(x, x, x, cubic, name="cube_product")))
    inner = op.Add(x, term, name="polynomial")
    tanh = op.Tanh(product(inner, const("sqrt_2_over_pi", SQRT_2_OVER_PI, CONSTANT_RTOL)), name="tanh")
    return product(x, const("half", 0.5), op.Add(tanh, const("one", 1.0), name="one_plus"), name="gelu")


def _tanh_factored_pattern():
    x = var("x")
    cubic = const("cubic", CUBIC, CONSTANT_RTOL)
    term = Alt((product(op.Pow(x, const("two", 2.0), name="square"), cubic), product(x, x, cubic, name="square_product")))
    factor = op.Add(term, const("inner_one", 1.0), name="polynomial")
    tanh = op.Tanh(product(x, factor, const("sqrt_2_over_pi", SQRT_2_OVER_PI, CONSTANT_RTOL)), name="tanh")
    return product(x, const("half", 0.5), op.Add(tanh, const("one", 1.0), name="one_plus"), name="gelu")


class _GeluRule(FusionRule):
    approximate: str

    def check(self, match: Match, ctx: FusionContext) -> None:
        ctx.require_op("Gelu")
        x = match.tensors["x"]
        dtype = ctx.dtype(x)
        if dtype is None or dtype.kind != "f":
            raise NearMiss("dtype", f"GELU's input type is unknown or not float ({dtype})", "run shape inference")
        if ctx.rank(match.root.outputs[0]) != ctx.rank(x):
            raise NoMatch  # a constant of higher rank broadcasts the result up

    def rewrite(self, match: Match, params: None, ctx: FusionContext) -> gs.Tensor:
        x = match.tensors["x"]
        out = match.root.outputs[0]
        dtype = ctx.dtype(x)
        return ctx.fused(
            "Gelu",
            [x],
            ["X"],
            {"approximate": self.approximate},
            lambda body: decompose_gelu(body, self.approximate, dtype),
            dtype=out.dtype,
            shape=ctx.shape(out),
        )


class GeluExactFusion(_GeluRule):
    """x * 0.5 * (1 + erf(x / √2)) -> Gelu."""

    name = "gelu"
    approximate = "none"
    pattern = _exact_pattern()
    near_miss_after = "erf"


class GeluTanhFusion(_GeluRule):
    """x * 0.5 * (1 + tanh(√(2/π)(x + 0.044715 x³))) -> Gelu(approximate="tanh")."""

    name = "gelu-tanh"
    approximate = "tanh"
    pattern = _tanh_pattern()
    near_miss_after = "polynomial"


class GeluTanhFactoredFusion(_GeluRule):
    """x * 0.5 * (1 + tanh(√(2/π) x (1 + 0.044715 x²))) -> Gelu(approximate="tanh") (Megatron's spelling)."""

    name = "gelu-tanh-factored"
    approximate = "tanh"
    pattern = _tanh_factored_pattern()
    near_miss_after = "polynomial"


def decompose_gelu(body: Body, approximate: str, dtype: np.dtype) -> str:
    """The canonical decomposition: the body of ``mapc.Gelu`` (opset < 20)."""
    x = body.inputs[0]

    def constant(value: float) -> str:
        return body.const(np.asarray(value, dtype=dtype))

    if approximate == "tanh":
        cube = body.add("Mul", [body.add("Mul", [x, x]), x])
        inner = body.add("Add", [x, body.add("Mul", [cube, constant(CUBIC)])])
        core = body.add("Tanh", [body.add("Mul", [inner, constant(SQRT_2_OVER_PI)])])
    else:
        core = body.add("Erf", [body.add("Mul", [x, constant(SQRT_HALF)])])
    return body.add("Mul", [body.add("Mul", [x, constant(0.5)]), body.add("Add", [core, constant(1.0)])])
