"""Mask fill values: per-precision defaults, and reading constant (or uniform) mask values.

The fill ``NEG`` is the value an additive mask holds at a masked position. Exporters write
``finfo(float32).min`` or ``-inf``; both break on NPUs (fp16 turns finfo.min into -inf and
``0 * -inf`` into NaN; per-tensor quantization of the mask ``Add`` gets a scale near 1e36).
The defaults below are the values practitioners ship, chosen from the measurements in
``docs/passes/attention-mask.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import UsageError, is_default_domain, producer, small_constant
from mapc.passes.flags import flag

Precision = Literal["fp32", "fp16", "int16", "int8"]


@dataclass
class FillOptions:
    """The options every mask pass has (attention-mask, decompose-attention): declared once,
    with their flags, and inherited by each pass's Options."""

    #: Activation precision of the target: picks the default fill.
    precision: Precision = field(default="fp16", metadata=flag(
        "--mask-precision", "target activation precision that picks the default mask fill (default fp16)"))
    #: The finite fill written at masked positions (default: by precision).
    mask_value: float | None = field(default=None, metadata=flag(
        "--mask-value", "finite fill for masked attention positions (attention-mask, decompose-attention; default by "
        "--mask-precision: fp16 -1e4, int16 -50, int8 -20)", metavar="NEG"))

#: Default ``NEG`` per target activation precision.
#:
#: * fp16/fp32: -1e4 (Olive's default, Apple ml-ane-transformers): far inside fp16's ±65504, so
#:   NEG + NEG and scores + NEG stay finite, and exp(-1e4) is exactly 0 in fp16 and fp32.
#: * int16: -50 (QAI Hub LLMs clip the mask to [-50, 0]); -1e4 costs 16-bit resolution.
#: * int8: -20: a per-tensor 8-bit scale over [NEG + min score, max score] stays near 0.1-0.15
#:   while a masked key still gets e^-20 ~ 2e-9 of the weight of an unmasked one.
DEFAULT_MASK_VALUES: dict[str, float] = {"fp32": -1e4, "fp16": -1e4, "int16": -50.0, "int8": -20.0}

#: Most negative value an fp16 mask may hold so that two masks summed stay finite.
FP16_SAFE_LIMIT = -32000.0

#: Constants larger than this are never read to look for fills (masks are small; weights are not).
MAX_INSPECT_BYTES = 64 << 20

FLOAT_KINDS = (np.float16, np.float32, np.float64)


def resolve_mask_value(precision: str, mask_value: float | None, who: str) -> float:
    """The fill to write: ``mask_value`` if given (checked), else the precision's default."""
    if precision not in DEFAULT_MASK_VALUES:
        raise UsageError(f"pass {who!r}: precision must be one of {', '.join(DEFAULT_MASK_VALUES)}, got {precision!r}")
    if mask_value is None:
        return DEFAULT_MASK_VALUES[precision]
    value = float(mask_value)
    if not np.isfinite(value) or value > -1.0:
        raise UsageError(f"pass {who!r}: mask_value must be a finite number <= -1, got {mask_value!r}")
    if precision != "fp32" and value < FP16_SAFE_LIMIT:
        raise UsageError(
            f"pass {who!r}: mask_value {value:g} is below {FP16_SAFE_LIMIT:g}: two masked scores summed overflow fp16 "
            "(use precision=fp32 if the target really computes the mask in float32)"
        )
    return value


def is_float_dtype(dtype: object) -> bool:
    return dtype is not None and np.dtype(dtype).type in FLOAT_KINDS


def single_fill(values: np.ndarray) -> float | None:
    """The one negative value of a fill-like float array (entries in ``{0, v}`` with ``v < 0``).

    Arrays with several distinct non-zero values (an ALiBi slope table, a learned bias) are not
    fills and give None, as do arrays without a negative entry.
    """
    if values.size == 0 or np.dtype(values.dtype).type not in FLOAT_KINDS:
        return None
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return None
    first = nonzero.flat[0]
    if first >= 0 or np.isnan(first) or not np.all(nonzero == first):
        return None
    return float(first)


# -- uniform values --------------------------------------------------------------------------------

#: Ops whose output holds only values taken from their first input (data movement).
_MOVES_DATA = frozenset(
    {"Expand", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose", "Slice", "Gather", "GatherND",
     "GatherElements", "Tile", "Identity", "Split"}
)
_ELEMENTWISE: dict[str, Callable[..., np.ndarray]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum, "Min": np.minimum,
    "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor, "Not": np.logical_not, "Neg": np.negative,
    "Equal": np.equal, "Less": np.less, "LessOrEqual": np.less_equal, "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal,
}


def uniform_value(tensor: gs.Tensor, _memo: dict[int, object] | None = None) -> np.ndarray | None:
    """A 0-d array if every element of ``tensor`` is known to hold that one value, else None.

    Follows constants, ``ConstantOfShape``, data movement (Expand, Reshape, Slice, Gather...),
    Cast, elementwise arithmetic and logic on uniform operands, and ``Where`` on a uniform
    condition. This is how a mask built from an all-True constant (constant-mask) is found to be trivial
    without static shapes. An empty tensor is not uniform.
    """
    memo = {} if _memo is None else _memo
    key = id(tensor)
    if key in memo:
        return memo[key]  # type: ignore[return-value]
    memo[key] = None
    result = _uniform(tensor, memo)
    memo[key] = result
    return result


def _uniform(tensor: gs.Tensor, memo: dict[int, object]) -> np.ndarray | None:
    value = small_constant(tensor, MAX_INSPECT_BYTES)
    if value is not None:
        if value.size == 0 or not np.all(value == value.flat[0]):
            return None
        return np.asarray(value.flat[0])
    node = producer(tensor)
    if node is None or not is_default_domain(node):
        return None
    if node.op == "ConstantOfShape":
        fill = node.attrs.get("value")
        return np.asarray(fill.values).reshape(-1)[0] if isinstance(fill, gs.Constant) else np.asarray(np.float32(0))
    if node.op in _MOVES_DATA:
        return uniform_value(node.inputs[0], memo)
    if node.op == "Cast":
        inner = uniform_value(node.inputs[0], memo)
        target = node.attrs.get("to")
        if inner is None or target is None:
            return None
        return np.asarray(inner).astype(onnx.helper.tensor_dtype_to_np_dtype(target))
    if node.op == "Where":
        condition = uniform_value(node.inputs[0], memo)
        if condition is not None:
            return uniform_value(node.inputs[1 if bool(condition) else 2], memo)
        left, right = uniform_value(node.inputs[1], memo), uniform_value(node.inputs[2], memo)
        if left is not None and right is not None and left == right:
            return left
        return None
    if node.op in _ELEMENTWISE:
        operands = [uniform_value(t, memo) for t in node.inputs]
        if any(o is None for o in operands):
            return _absorbing(node, operands)
        with np.errstate(all="ignore"):
            return np.asarray(_ELEMENTWISE[node.op](*operands))
    return None


def _absorbing(node: gs.Node, operands: list[np.ndarray | None]) -> np.ndarray | None:
    """``And`` with a uniform False, or ``Or`` with a uniform True, is uniform whatever the other side."""
    known = [o for o in operands if o is not None]
    if node.op == "And" and any(not bool(o) for o in known):
        return np.asarray(False)
    if node.op == "Or" and any(bool(o) for o in known):
        return np.asarray(True)
    return None
