"""A small model builder that tracks every tensor's dtype, concrete shape and dynamic axes.

The random-model strategies drive it; it is also handy for hand-written tests. Shapes are
concrete (the values the test inputs will have); axes derived from a symbolic graph-input dim
are *dynamic*, and the builder's users never bake a dynamic axis into a constant (Reshape keeps
it with ``0``, broadcast constants have size 1 there, Slice/Split/Concat avoid it), so a
generated model is valid for every value of its symbolic dims.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: IR version written into generated models (old enough for every onnxruntime mapc supports).
IR_VERSION = 10


Dynamic = Mapping[int, str]


@dataclass
class TensorInfo:
    """A tensor of the model being built: its concrete shape, and for each dynamic axis the
    symbolic expression it holds (``N``, ``2*N``...), so that only equal expressions meet."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    dynamic: Dynamic = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return np.issubdtype(self.dtype, np.floating)

    def static_axes(self) -> list[int]:
        return [axis for axis in range(self.rank) if axis not in self.dynamic]


@dataclass
class ModelBuilder:
    """Accumulates nodes, initializers, inputs and outputs into an ONNX model."""

    opset: int = 18
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    tensors: list[TensorInfo] = field(default_factory=list)
    _counter: int = 0

    def fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def add_input(self, shape: tuple[int, ...], dtype: type = np.float32, symbolic: dict[int, str] | None = None) -> TensorInfo:
        """A graph input; ``symbolic`` maps axes to dim names (their concrete value is ``shape``'s)."""
        symbolic = symbolic or {}
        name = self.fresh("input")
        dims: list[int | str] = [symbolic.get(axis, size) for axis, size in enumerate(shape)]
        self.inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), dims))
        info = TensorInfo(name, np.dtype(dtype), tuple(shape), dict(symbolic))
        self.tensors.append(info)
        return info

    def constant(self, value: np.ndarray, prefix: str = "const", track: bool = False) -> TensorInfo:
        """An initializer; ``track`` makes it available as an operand for later random ops."""
        name = self.fresh(prefix)
        array = np.asarray(value)
        self.initializers.append(numpy_helper.from_array(array, name))
        info = TensorInfo(name, array.dtype, tuple(array.shape))
        if track:
            self.tensors.append(info)
        return info

    def node(
        self,
        op: str,
        inputs: list[str],
        outputs: list[tuple[np.dtype, tuple[int, ...], Dynamic]],
        **attributes: object,
    ) -> list[TensorInfo]:
        """Add ``op`` reading ``inputs``; ``outputs`` gives each result's dtype, shape, dynamic axes."""
        infos = [TensorInfo(self.fresh("t"), np.dtype(dtype), tuple(shape), dict(dynamic)) for dtype, shape, dynamic in outputs]
        self.nodes.append(helper.make_node(op, inputs, [i.name for i in infos], name=self.fresh(op.lower() + "_"), **attributes))
        self.tensors.extend(infos)
        return infos

    def mark_output(self, info: TensorInfo) -> None:
        if any(o.name == info.name for o in self.outputs):
            return
        dims = [info.dynamic.get(axis, size) for axis, size in enumerate(info.shape)]
        self.outputs.append(helper.make_tensor_value_info(info.name, helper.np_dtype_to_tensor_dtype(info.dtype), dims))

    def build(self, name: str = "generated") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=IR_VERSION)
