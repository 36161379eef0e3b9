"""Where the windows of a sliding op (Conv, pooling) fall along one spatial axis.

Shared by the passes that need to know which window positions read the input rather than its
zero padding: ``average-pool-as-conv`` (how many positions each output averages over) and the
quantizer's Conv bias correction (how often each kernel tap reads the input).
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
