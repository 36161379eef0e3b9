"""Integer types of QDQ models and the arithmetic of scales and zero points.

A :class:`QuantType` is one ONNX integer element type with its value range. The functions here
turn a real range into ``(scale, zero_point)`` the way onnxruntime's ``QuantizeLinear`` will use
them (``q = saturate(round_half_even(x / scale) + zero_point)``), and fake-quantize arrays with
exactly that arithmetic so numpy-side searches agree with the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

#: Smallest real range an activation quantizer may span (QNN's ``MinimumRealRange``): a
#: constant or all-zero tensor still gets a positive scale.
MIN_REAL_RANGE = 1e-4


@dataclass(frozen=True)
class QuantType:
    """An integer element type usable by QuantizeLinear/DequantizeLinear."""

    name: str
    bits: int
    signed: bool

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def levels(self) -> int:
        """Number of steps between qmin and qmax."""
        return self.qmax - self.qmin

    @property
    def numpy_dtype(self) -> np.dtype:
        special = {"int4": ml_dtypes.int4, "uint4": ml_dtypes.uint4}
        return np.dtype(special.get(self.name, self.name))

    @property
    def min_opset(self) -> int:
        """First ai.onnx opset whose QuantizeLinear/DequantizeLinear accept this type."""
        return 10 if self.bits == 8 else 21

    def wider(self) -> QuantType:
        """The 16-bit type of the same signedness (what the accuracy target promotes to)."""
        return QUANT_TYPES["int16" if self.signed else "uint16"]

    @property
    def widening_factor(self) -> int:
        """``f`` such that code ``q`` of this 8-bit type is code ``f * q`` of :meth:`wider` at scale
        ``s / f`` and zero point ``z * f``: the same value, exactly (257 unsigned, 256 signed)."""
        return 256 if self.signed else 257

    def __str__(self) -> str:
        return self.name


QUANT_TYPES: dict[str, QuantType] = {
    name: QuantType(name, bits, signed)
    for name, bits, signed in (
        ("uint8", 8, False),
        ("int8", 8, True),
        ("uint16", 16, False),
        ("int16", 16, True),
        ("uint4", 4, False),
        ("int4", 4, True),
        ("int32", 32, True),
    )
}
ACTIVATION_TYPES = ("uint8", "int8", "uint16", "int16")
INT32 = QUANT_TYPES["int32"]


def activation_params(
    low: float,
    high: float,
    qtype: QuantType,
    *,
    symmetric: bool = False,
    min_range: float = MIN_REAL_RANGE,
) -> tuple[float, int]:
    """Scale and zero point that cover ``[low, high]`` (widened to contain 0 and to at least
    ``min_range``). Asymmetric: the range maps onto [qmin, qmax]. Symmetric: the zero point is
    the middle of the type (0 for signed) and the scale covers ``max(|low|, |high|)``."""
    low, high = _with_zero(float(low), float(high), min_range)
    if symmetric:
        zero_point = 0 if qtype.signed else (qtype.qmin + qtype.qmax + 1) // 2
        bound = max(-low, high)
        scale = bound / (qtype.qmax - zero_point)
        return _scale32(scale), zero_point
    scale = _scale32((high - low) / qtype.levels)
    zero_point = int(np.clip(np.round(qtype.qmin - low / scale), qtype.qmin, qtype.qmax))
    return scale, zero_point


def _with_zero(low: float, high: float, min_range: float) -> tuple[float, float]:
    low, high = min(low, 0.0), max(high, 0.0)
    span = high - low
    if span >= min_range:
        return low, high
    if low == 0.0:
        return 0.0, min_range
    if high == 0.0:
        return -min_range, 0.0
    factor = min_range / span
    return low * factor, high * factor


def _scale32(scale: float) -> float:
    """``scale`` as the float32 that will be stored, never zero or subnormal."""
    return float(max(np.float32(scale), np.finfo(np.float32).tiny))


def quantize(x: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | int, qtype: QuantType) -> np.ndarray:
    """Integer codes of ``x`` (float32 division, round half to even, saturation), as int64."""
    ratio = np.asarray(x, dtype=np.float32) / np.asarray(scale, dtype=np.float32)
    return np.clip(np.rint(ratio).astype(np.int64) + np.asarray(zero_point, dtype=np.int64), qtype.qmin, qtype.qmax)


def dequantize(codes: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | int) -> np.ndarray:
    return ((np.asarray(codes, dtype=np.int64) - np.asarray(zero_point, dtype=np.int64)).astype(np.float32)
            * np.asarray(scale, dtype=np.float32))


def fake_quantize(x: np.ndarray, scale: np.ndarray | float, zero_point: np.ndarray | int, qtype: QuantType) -> np.ndarray:
    """``DequantizeLinear(QuantizeLinear(x))`` computed in numpy."""
    return dequantize(quantize(x, scale, zero_point, qtype), scale, zero_point)
