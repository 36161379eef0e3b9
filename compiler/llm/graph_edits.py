"""Small graph edits the static-LLM rewrites share."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs


def rewire(node: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    """``node`` reads ``new`` wherever it read ``old``."""
    for slot, tensor in enumerate(node.inputs):
        if tensor is old:
            node.inputs[slot] = new


def onnx_type(dtype: np.dtype) -> int:
    """The ONNX element type of a numpy dtype (for Cast's ``to``)."""
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
