"""Where the windows of a sliding op (Conv, pooling) fall along one spatial axis.

Shared by the passes that need to know which window positions read the input rather than its
zero padding: ``average-pool-as-conv`` (how many positions each output averages over),
``pool-as-global`` (whether one window reads all of it) and the quantizer's Conv bias
correction (how often each kernel tap reads the input).
"""

from __future__ import annotations

import numpy as np


def same_pads(length: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    """The (begin, end) pads ONNX's ``SAME_UPPER``/``SAME_LOWER`` give one axis: output ``ceil(L / s)``.
    Negative (a crop) when the stride exceeds the kernel's extent, as ONNX defines and onnxruntime computes."""
    total = (-(-length // stride) - 1) * stride + (kernel - 1) * dilation + 1 - length
    small, large = total // 2, total - total // 2
    return (small, large) if upper else (large, small)


def window_reads(length: int, kernel: int, stride: int, dilation: int, begin: int, end: int) -> np.ndarray:
    """``[output position, kernel tap]``: whether that tap of that output's window reads the
    input (True) or the padding (False), for an axis of ``length`` padded by ``begin``/``end``."""
    outputs = (length + begin + end - (kernel - 1) * dilation - 1) // stride + 1
    positions = np.arange(max(outputs, 0))[:, None] * stride - begin + np.arange(kernel)[None, :] * dilation
    return (positions >= 0) & (positions < length)


def window_counts(length: int, kernel: int, stride: int, dilation: int, begin: int, end: int) -> np.ndarray:
    """For each output position of one axis, how many of its window's positions lie inside the input."""
    return window_reads(length, kernel, stride, dilation, begin, end).sum(axis=1)


def explicit_pads(attrs: dict, spatial: list[int], kernel: list[int], strides: list[int], dilations: list[int]) -> tuple[list[int], list[int]] | None:
    """A window op's (begin, end) pads per spatial axis, from ``pads`` or its ``auto_pad``
    (``VALID``: none; ``SAME_*``: :func:`same_pads`, negative for a crop); None for an unknown
    ``auto_pad`` or pads that do not fit the rank."""
    auto_pad = str(attrs.get("auto_pad", "NOTSET"))
    rank = len(spatial)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pairs = [same_pads(*axis, auto_pad == "SAME_UPPER") for axis in zip(spatial, kernel, strides, dilations)]
        return [b for b, _ in pairs], [e for _, e in pairs]
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    if auto_pad != "NOTSET":
        return None
    pads = [int(p) for p in attrs.get("pads") or [0] * 2 * rank]
    return (pads[:rank], pads[rank:]) if len(pads) == 2 * rank else None
