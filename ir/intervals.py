"""Interval analysis: a bound every element of a tensor provably stays within, for every input.

:func:`value_bound` walks back from a tensor through the ops whose output range follows from
their inputs' ranges and the graph's constants (weights included), and returns a
:class:`Bound` (``lo <= x <= hi`` elementwise, and where known a bound on the L2 norm of every
vector along the last axis), or None when some path reaches a float graph input or an op it
does not know. Ranges that need no input bound start it: constants and weights (their min and
max), embedding tables read by ``Gather``, ``LayerNormalization``/``RMSNormalization`` (a
normalised vector of length D has norm at most sqrt(D), so every element at most sqrt(D - 1)),
``Softmax``, ``Sigmoid``, ``Tanh``, ``Erf``; the same normalisations written out
(``a / sqrt(mean(a^2) + eps)``); ``RotaryEmbedding`` grows a bound by at most ``|cos| + |sin|``.
Float graph inputs are unbounded. ``MatMul`` with a weight uses Cauchy-Schwarz on a
norm-bounded input (``|x W[:, j]| <= |x| |W[:, j]|``), which is what keeps the attention scores
after a LayerNorm small; ``MatMul`` of a softmax with values is a convex combination. In a QDQ
model every ``QuantizeLinear`` saturates to its integer type, so each ``DequantizeLinear`` after
it is bounded by ``(int range - zero point) * scale`` whatever its input.

The bounds are sound for finite inputs and finite weights; they are not tight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir.graph import constant_nbytes, constant_tensor, producer, standard_op

#: Largest weight read to bound it (a 50k x 768 float32 embedding table fits; an LLM's lm_head does not).
MAX_WEIGHT_BYTES = 256 << 20
#: Nodes one query visits before giving up (a bound needs few: a LayerNorm or a weight ends it).
VISIT_LIMIT = 400

#: Ops whose output holds values of their first input only (data movement).
_MOVES = frozenset({"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Expand", "Slice", "Flatten", "Tile",
                    "Gather", "GatherElements", "GatherND", "Split", "Dropout", "ReduceMax", "ReduceMin", "ReduceMean",
                    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "SpaceToDepth", "DepthToSpace"})
#: Of those, the ones that keep every vector along the last axis whole (so its norm bound holds).
_KEEPS_ROWS = frozenset({"Identity", "Dropout"})
_SQUASHED = {"Softmax": (0.0, 1.0), "Sigmoid": (0.0, 1.0), "HardSigmoid": (0.0, 1.0), "Tanh": (-1.0, 1.0), "Erf": (-1.0, 1.0),
             "Sin": (-1.0, 1.0), "Cos": (-1.0, 1.0)}


@dataclass(frozen=True)
class Bound:
    """Every element lies in ``[lo, hi]``; every vector along the last axis has L2 norm <= ``norm``."""

    lo: float
    hi: float
    norm: float | None = None

    @property
    def magnitude(self) -> float:
        return max(abs(self.lo), abs(self.hi))

    def union(self, other: Bound) -> Bound:
        return Bound(min(self.lo, other.lo), max(self.hi, other.hi))


def value_bound(tensor: gs.Tensor, memo: dict[int, Bound | None] | None = None) -> Bound | None:
    """A :class:`Bound` on ``tensor`` for every input of the graph, or None if none is proven.

    ``memo`` (by tensor id) may be shared by queries on one unchanged graph."""
    return _Analysis(memo if memo is not None else {}).bound(tensor)


class _Analysis:
    def __init__(self, memo: dict[int, Bound | None]) -> None:
        self.memo = memo
        self.visits = 0

    def bound(self, tensor: gs.Tensor) -> Bound | None:
        key = id(tensor)
        if key in self.memo:
            return self.memo[key]
        self.visits += 1
        if self.visits > VISIT_LIMIT:
            return None  # not memoised: a later query with its own budget may prove it
        self.memo[key] = None  # cycles cannot happen in a valid graph; be safe anyway
        result = self._bound(tensor)
        if result is not None and not (math.isfinite(result.lo) and math.isfinite(result.hi)):
            result = None
        self.memo[key] = result
        return result

    def _bound(self, tensor: gs.Tensor) -> Bound | None:
        values = _weight(tensor)
        if values is not None:
            return _of_values(values)
        node = producer(tensor)
        op = standard_op(node) if node is not None else None
        if node is None or op is None:
            return None
        if op in _SQUASHED:
            lo, hi = _SQUASHED[op]
            return Bound(lo, hi, 1.0 if op == "Softmax" and _last_axis(node) else None)
        if op in ("LayerNormalization", "RMSNormalization"):
            return _normalization(node)
        if op in _MOVES:
            inner = self.bound(node.inputs[0])
            if inner is None:
                return None
            keeps = op in _KEEPS_ROWS or (op == "Gather" and _gather_keeps_rows(node))
            return inner if keeps else Bound(inner.lo, inner.hi)
        if op == "Cast":
            inner = self.bound(node.inputs[0])
            return inner if inner is not None and _float_output(node) else None
        if op in ("Concat", "Where", "Max", "Min", "Sum", "Mean"):
            parts = [self.bound(t) for t in (node.inputs[1:] if op == "Where" else node.inputs)]
            return _combine(op, parts)
        if op in ("Relu", "Neg", "Abs", "LeakyRelu", "Gelu", "Clip", "Sqrt", "Exp"):
            return self._monotone(node, op)
        if op in ("Add", "Sub", "Mul", "Div"):
            return self._arithmetic(node, op)
        if op in ("MatMul", "Gemm"):
            return self._matmul(node, op)
        if op == "RotaryEmbedding":
            return self._rotary(node)
        if op == "QuantizeLinear":
            return _integer_range(node.outputs[0].dtype)
        if op == "DequantizeLinear":
            return self._dequantize(node)
        return None

    def _rotary(self, node: gs.Node) -> Bound | None:
        """``x·cos ± x'·sin`` on rotated pairs, ``x`` elsewhere: at most ``|x|·max(1, |cos| + |sin|)``."""
        parts = [self.bound(t) for t in node.inputs[:3]]
        if any(p is None for p in parts):
            return None
        values, cos, sin = parts
        reach = values.magnitude * max(1.0, cos.magnitude + sin.magnitude)  # type: ignore[union-attr]
        return Bound(-reach, reach)

    def _dequantize(self, node: gs.Node) -> Bound | None:
        """``(x - zero_point) * scale`` with constant scales (per tensor or per channel)."""
        quantized = self.bound(node.inputs[0])
        scale = _weight(node.inputs[1]) if len(node.inputs) > 1 else None
        zero = _weight(node.inputs[2]) if len(node.inputs) > 2 and not node.inputs[2].is_empty() else np.zeros(1)
        if quantized is None or scale is None or zero is None:
            return None
        corners = np.concatenate([((end - zero) * scale).reshape(-1) for end in (quantized.lo, quantized.hi)])
        return Bound(float(corners.min()), float(corners.max()))

    def _monotone(self, node: gs.Node, op: str) -> Bound | None:
        inner = self.bound(node.inputs[0])
        if inner is None:
            return None
        lo, hi = inner.lo, inner.hi
        if op == "Relu":
            return Bound(max(lo, 0.0), max(hi, 0.0), inner.norm)
        if op == "Neg":
            return Bound(-hi, -lo, inner.norm)
        if op == "Abs":
            return Bound(0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), inner.magnitude, inner.norm)
        if op == "LeakyRelu":
            alpha = float(node.attrs.get("alpha", 0.01))
            ends = [x * (alpha if x < 0 else 1.0) for x in (lo, hi, 0.0) if lo <= x <= hi]
            return Bound(min(ends), max(ends), inner.norm if 0 <= alpha <= 1 else None)
        if op == "Gelu":  # x * Phi(x) >= -0.17 everywhere and <= max(x, 0)
            return Bound(max(-0.17, min(lo, 0.0)), max(hi, 0.0))
        if op == "Sqrt":
            return Bound(math.sqrt(max(lo, 0.0)), math.sqrt(max(hi, 0.0)))
        if op == "Exp":
            return Bound(math.exp(min(lo, 700.0)), math.exp(hi)) if hi < 88 else None
        floor, ceiling = (self._scalar(node, 1), self._scalar(node, 2))  # Clip
        return Bound(max(lo, floor) if floor is not None else lo, min(hi, ceiling) if ceiling is not None else hi)

    def _scalar(self, node: gs.Node, slot: int) -> float | None:
        if len(node.inputs) <= slot or node.inputs[slot].is_empty():
            return None
        values = _weight(node.inputs[slot])
        return float(values.reshape(-1)[0]) if values is not None and values.size == 1 else None

    def _arithmetic(self, node: gs.Node, op: str) -> Bound | None:
        size = _root_mean_square_divided(node) if op in ("Mul", "Div") else None
        if size is not None:  # a / sqrt(mean(a^2) + eps): a LayerNorm or RMSNorm written out
            return Bound(-math.sqrt(size), math.sqrt(size), math.sqrt(size))
        left, right = (self.bound(t) for t in node.inputs[:2])
        if left is None or right is None:
            return None
        if op in ("Add", "Sub"):
            rows = left.norm is not None and right.norm is not None and _same_rows(*node.inputs[:2])
            norm = left.norm + right.norm if rows else None  # type: ignore[operator]
            if op == "Add":
                return Bound(left.lo + right.lo, left.hi + right.hi, norm)
            return Bound(left.lo - right.hi, left.hi - right.lo, norm)
        if op == "Div":
            if right.lo <= 0 <= right.hi:
                return None
            right = Bound(1.0 / right.hi, 1.0 / right.lo)
        corners = [a * b for a in (left.lo, left.hi) for b in (right.lo, right.hi)]
        norm = None
        if left.norm is not None and _scalar_like(node.inputs[1]):
            norm = left.norm * right.magnitude
        elif right.norm is not None and op == "Mul" and _scalar_like(node.inputs[0]):
            norm = right.norm * left.magnitude
        return Bound(min(corners), max(corners), norm)

    def _matmul(self, node: gs.Node, op: str) -> Bound | None:
        a, b = node.inputs[0], node.inputs[1]
        trans_a, trans_b = (int(node.attrs.get(k, 0)) for k in ("transA", "transB")) if op == "Gemm" else (0, 0)
        left = self.bound(a)
        if left is None:
            return None
        weight = _weight(b)
        if op == "MatMul" and (weights := _probabilities(a)) is not None:
            right = self.bound(b)  # each output row is a combination of rows of b, weights >= 0 summing to <= 1
            result = None if right is None else (Bound(right.lo, right.hi) if weights == "softmax" else right.union(Bound(0.0, 0.0)))
        elif weight is not None and weight.ndim == 2 and not trans_a:
            result = _times_weight(left, weight.T if trans_b else weight)
        else:
            right = self.bound(b)
            depth = _contracted(a, b, trans_a)
            if right is None or depth is None:
                return None
            product = left.magnitude * right.magnitude * depth
            result = Bound(-product, product)
        if result is None or op == "MatMul":
            return result
        alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
        result = Bound(min(alpha * result.lo, alpha * result.hi), max(alpha * result.lo, alpha * result.hi))
        if len(node.inputs) > 2 and not node.inputs[2].is_empty():
            bias = self.bound(node.inputs[2])
            if bias is None:
                return None
            result = Bound(result.lo + min(beta * bias.lo, beta * bias.hi), result.hi + max(beta * bias.lo, beta * bias.hi))
        return result


def _root_mean_square_divided(node: gs.Node) -> int | None:
    """D if ``node`` is ``a / sqrt(mean(a^2 over the last axis, length D) + eps)`` written out
    (``Div(a, Sqrt(.))``, ``Mul(a, Reciprocal(Sqrt(.)))``, ``Mul(a, Div(1, Sqrt(.)))``, Cast
    allowed around ``a``): each element is then at most sqrt(D) in magnitude."""
    if node.op == "Div":
        value, root = node.inputs[0], _sqrt_of(node.inputs[1])
    else:
        value, root = next(((a, r) for a, b in (node.inputs[:2], node.inputs[1::-1]) if (r := _reciprocal_sqrt_of(b)) is not None),
                           (None, None))
    if value is None or root is None:
        return None
    mean = producer(root)
    if mean is not None and mean.op == "Add":  # mean + eps
        mean = next((producer(t) for t in mean.inputs if producer(t) is not None and producer(t).op == "ReduceMean"), None)
    if mean is None or mean.op != "ReduceMean" or not _reduces_last_axis(mean):
        return None
    square = producer(mean.inputs[0])
    if square is None or not _squares(square, value):
        return None
    shape = _uncast(value).shape
    return int(shape[-1]) if shape and isinstance(shape[-1], (int, np.integer)) and shape[-1] > 0 else None


def _sqrt_of(tensor: gs.Tensor) -> gs.Tensor | None:
    node = producer(tensor)
    return node.inputs[0] if node is not None and node.op == "Sqrt" else None


def _reciprocal_sqrt_of(tensor: gs.Tensor) -> gs.Tensor | None:
    node = producer(tensor)
    if node is None:
        return None
    if node.op == "Reciprocal":
        return _sqrt_of(node.inputs[0])
    if node.op == "Div":
        one = _weight(node.inputs[0])
        return _sqrt_of(node.inputs[1]) if one is not None and one.size == 1 and float(one.reshape(-1)[0]) == 1.0 else None
    return None


def _reduces_last_axis(node: gs.Node) -> bool:
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        values = _weight(node.inputs[1])
        axes = None if values is None else [int(a) for a in values.reshape(-1)]
    shape = node.inputs[0].shape
    rank = len(shape) if shape is not None else None
    return axes is not None and len(axes) == 1 and (axes[0] == -1 or (rank is not None and axes[0] == rank - 1))


def _squares(node: gs.Node, value: gs.Tensor) -> bool:
    """``node`` is ``Pow(a, 2)`` or ``Mul(a, a)`` of the same tensor as ``value`` (up to Casts)."""
    base = _uncast(value)
    if node.op == "Pow":
        exponent = _weight(node.inputs[1])
        return exponent is not None and exponent.size == 1 and float(exponent.reshape(-1)[0]) == 2.0 and _uncast(node.inputs[0]) is base
    return node.op == "Mul" and _uncast(node.inputs[0]) is base and _uncast(node.inputs[1]) is base


def _uncast(tensor: gs.Tensor) -> gs.Tensor:
    node = producer(tensor)
    while node is not None and node.op == "Cast":
        tensor = node.inputs[0]
        node = producer(tensor)
    return tensor


def _integer_range(dtype: object) -> Bound | None:
    """Every value of an integer type (a QuantizeLinear output saturates to it)."""
    if dtype is None or np.dtype(dtype).kind not in "iu":
        return None
    info = np.iinfo(np.dtype(dtype))
    return Bound(float(info.min), float(info.max))


def _weight(tensor: gs.Tensor) -> np.ndarray | None:
    constant = constant_tensor(tensor)
    if constant is None or constant_nbytes(constant) > MAX_WEIGHT_BYTES:
        return None
    values = np.asarray(constant.values)
    if values.size == 0 or values.dtype.kind not in "fiub":
        return None
    return values if values.dtype.kind == "f" and values.dtype.itemsize >= 4 else values.astype(np.float32)


def _of_values(values: np.ndarray) -> Bound | None:
    if not np.all(np.isfinite(values)):
        return None
    norm = float(np.sqrt(np.max(np.sum(np.square(values, dtype=np.float64), axis=-1)))) if values.ndim >= 1 else abs(float(values))
    return Bound(float(values.min()), float(values.max()), norm)


def _combine(op: str, parts: list[Bound | None]) -> Bound | None:
    if not parts or any(p is None for p in parts):
        return None
    known = [p for p in parts if p is not None]
    if op == "Max":
        return Bound(max(p.lo for p in known), max(p.hi for p in known))
    if op == "Min":
        return Bound(min(p.lo for p in known), min(p.hi for p in known))
    if op == "Sum":
        return Bound(sum(p.lo for p in known), sum(p.hi for p in known))
    result = known[0]
    for part in known[1:]:
        result = result.union(part)
    return Bound(result.lo, result.hi)


def _normalization(node: gs.Node) -> Bound | None:
    """LayerNormalization / RMSNormalization over the last axes: the normalised vector n has
    ``|n| <= sqrt(D)`` and ``|n_i| <= sqrt(D - 1)`` (LayerNorm: zero mean) or ``sqrt(D)`` (RMS);
    the output is ``n * scale + bias``."""
    scale = _weight(node.inputs[1]) if len(node.inputs) > 1 else None
    bias = _weight(node.inputs[2]) if len(node.inputs) > 2 and not node.inputs[2].is_empty() else np.zeros(1)
    size = _normalized_size(node)
    if scale is None or bias is None or size is None:
        return None
    element = math.sqrt(max(size - 1, 1)) if standard_op(node) == "LayerNormalization" else math.sqrt(size)
    reach = element * np.abs(scale)
    try:
        lo, hi = float(np.min(bias - reach)), float(np.max(bias + reach))
    except ValueError:  # shapes that do not broadcast against each other: the loose bound
        lo, hi = float(bias.min() - reach.max()), float(bias.max() + reach.max())
    norm = None
    if _last_axis(node):
        norm = math.sqrt(size) * float(np.abs(scale).max()) + float(np.sqrt(np.sum(np.square(bias)) * (size if bias.size == 1 else 1)))
    return Bound(lo, hi, norm)


def _normalized_size(node: gs.Node) -> int | None:
    shape = node.inputs[0].shape
    axis = int(node.attrs.get("axis", -1))
    if shape is None:
        return None
    axis = axis + len(shape) if axis < 0 else axis
    dims = list(shape[axis:])
    if not dims or not all(isinstance(d, (int, np.integer)) and d > 0 for d in dims):
        return None
    return int(np.prod(dims))


def _last_axis(node: gs.Node) -> bool:
    axis = int(node.attrs.get("axis", -1))
    shape = node.inputs[0].shape
    return axis == -1 or (shape is not None and axis == len(shape) - 1)


def _times_weight(left: Bound, weight: np.ndarray) -> Bound:
    """``x @ W`` for x in ``left``: per output column, the interval sum, tightened by
    Cauchy-Schwarz when the rows of x have a norm bound."""
    positive = np.clip(weight, 0, None).sum(axis=0, dtype=np.float64)
    negative = np.clip(weight, None, 0).sum(axis=0, dtype=np.float64)
    lows = left.lo * positive + left.hi * negative
    highs = left.hi * positive + left.lo * negative
    if left.norm is not None:
        reach = left.norm * np.sqrt(np.sum(np.square(weight, dtype=np.float64), axis=0))
        lows, highs = np.maximum(lows, -reach), np.minimum(highs, reach)
    return Bound(float(lows.min()), float(highs.max()))


def _contracted(a: gs.Tensor, b: gs.Tensor, trans_a: int) -> int | None:
    """Length of the contracted axis of ``a @ b`` when a static shape says it."""
    for tensor, axis in ((a, -2 if trans_a else -1), (b, -2)):
        shape = tensor.shape
        if shape is not None and len(shape) >= (1 if axis == -1 else 2):
            dim = shape[axis]
            if isinstance(dim, (int, np.integer)) and dim > 0:
                return int(dim)
    return None


def _probabilities(tensor: gs.Tensor) -> str | None:
    """``"softmax"`` for a last-axis Softmax (rows of weights >= 0 summing to 1), ``"guarded"``
    for one with some weights replaced by 0 (the NaN guard ``Where(IsNaN(p), 0, p)``: rows sum to
    at most 1), else None."""
    node = producer(tensor)
    if node is None:
        return None
    if standard_op(node) == "Softmax":
        return "softmax" if _last_axis(node) else None
    if node.op != "Where":
        return None
    parts = [t for t in node.inputs[1:] if not _is_zero(t)]
    return "guarded" if len(parts) == 1 and _probabilities(parts[0]) is not None else None


def _is_zero(tensor: gs.Tensor) -> bool:
    values = _weight(tensor)
    return values is not None and values.size == 1 and float(values.reshape(-1)[0]) == 0.0


def _gather_keeps_rows(node: gs.Node) -> bool:
    shape = node.inputs[0].shape
    axis = int(node.attrs.get("axis", 0))
    return shape is not None and axis != -1 and axis != len(shape) - 1


def _float_output(node: gs.Node) -> bool:
    dtype = node.outputs[0].dtype
    return dtype is not None and np.dtype(dtype).kind == "f"


def _scalar_like(tensor: gs.Tensor) -> bool:
    values = _weight(tensor)
    return values is not None and values.size == 1


def _same_rows(a: gs.Tensor, b: gs.Tensor) -> bool:
    """Both operands have the same static last axis (so no row is a broadcast of a shorter one)."""
    ends = [t.shape[-1] if t.shape else None for t in (a, b)]
    return all(isinstance(d, (int, np.integer)) for d in ends) and ends[0] == ends[1]
