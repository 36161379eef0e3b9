"""Small graphs with onnxruntime's contrib attention ops, and realistic samples to run them on."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from .common import fuse

F = TensorProto.FLOAT
I32, I64 = TensorProto.INT32, TensorProto.INT64
#: The float scales every differential check runs at.
SCALES = (1.0, 1e-3, 10.0)


def model(nodes, inputs, initializers, outputs, opset=23):
    """A model of ``nodes``; ``inputs`` are (name, elem type, shape); ``outputs`` names (float)."""
    graph = helper.make_graph(list(nodes), "contrib", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, F, None) for n in outputs],
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=10)


def padding_masks(batch: int, total: int) -> list[np.ndarray]:
    """0/1 ``[batch, total]`` masks: none, right padding, left padding, random holes (row 0 keeps key 0)."""
    rng = np.random.default_rng(total)
    right = np.ones((batch, total), np.int32)
    right[0, total // 2:] = 0
    left = np.ones((batch, total), np.int32)
    left[-1, : total - 1] = 0
    holes = (rng.random((batch, total)) > 0.4).astype(np.int32)
    holes[:, 0] = 1
    return [np.ones((batch, total), np.int32), right, left, holes]


def floats(rng: np.random.Generator, shape, scale: float) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def fuse_on_samples(proto, samples, **kwargs):
    """``fuse`` with the differential check against onnxruntime's kernels on every sample."""
    result = None
    for feeds in samples:
        result = fuse(proto, feeds=feeds, **kwargs)
    return result


def contrib_left(model) -> list[str]:
    return [n.op for n in model.graph.nodes if n.domain == "com.microsoft"]


def to_float16(proto, samples):
    """``proto`` with its float32 inputs, outputs and weights in float16, and ``samples`` to match."""
    for info in [*proto.graph.input, *proto.graph.output]:
        if info.type.tensor_type.elem_type == F:
            info.type.tensor_type.elem_type = TensorProto.FLOAT16
    for tensor in proto.graph.initializer:
        if tensor.data_type == F:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name))
    return proto, [{k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in feeds.items()} for feeds in samples]
