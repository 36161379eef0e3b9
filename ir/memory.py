"""How large a tensor mapc lets fixed shapes create: half of this machine's physical memory.

A shape a user fixes (``--input-shape input_ids:1,2000000000``) can imply tensors no machine
holds; mapc would otherwise run into the kernel's OOM killer while verifying or folding, or
"compile" a model nothing can run. :func:`check_tensor_sizes` refuses such shapes with a
:class:`~mapc.ir.errors.UsageError` naming the largest tensor, computed from shapes alone
(exact integers, never an allocation). Half the memory, because onnxruntime needs at least a
tensor's input next to it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from functools import cache

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir.errors import UsageError


@cache
def tensor_budget() -> int:
    """The largest tensor in bytes mapc lets fixed shapes create: half the physical memory."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no limit known
        return 1 << 62
    return physical // 2


def tensor_bytes(shape: Sequence[object] | None, dtype: object) -> int | None:
    """Bytes of a tensor with this static ``shape`` (None when a dim is unknown); element types
    without a numpy size count as one byte."""
    if shape is None or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
        return None
    try:
        itemsize = max(np.dtype(dtype).itemsize, 1) if dtype is not None else 1
    except TypeError:
        itemsize = 1
    count = 1
    for dim in shape:
        count *= int(dim)
    return count * itemsize


def check_tensor_sizes(tensors: Iterable[gs.Tensor], what: str) -> None:
    """:class:`UsageError` if one of ``tensors`` (activations; weights exist already) would be
    larger than :func:`tensor_budget`; ``what`` says which shapes were fixed."""
    budget = tensor_budget()
    largest: tuple[int, str, list[int]] | None = None
    for tensor in tensors:
        if isinstance(tensor, gs.Constant):
            continue
        size = tensor_bytes(tensor.shape, tensor.dtype)
        if size is not None and size > budget and (largest is None or size > largest[0]):
            largest = (size, tensor.name, [int(d) for d in tensor.shape])
    if largest is not None:
        size, name, shape = largest
        raise UsageError(
            f"{what} make tensor {name!r} {shape} hold {_show_bytes(size)}, more than half this machine's memory "
            f"({_show_bytes(2 * budget)}); give smaller shapes"
        )


def _show_bytes(size: int) -> str:
    if size >= 10**15:
        return f"{size:.2e} bytes"
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
