"""What the support rules look at: each node's tensors with dtypes, shapes and constness.

:func:`view_model` runs shape inference once and describes every top-level node as a
:class:`NodeView`. Dtypes are *effective*: in a QDQ model an op between DequantizeLinear and
QuantizeLinear computes on the quantized type, so a float tensor produced by DequantizeLinear
counts as the DQ input's type, and a float tensor a node produces for QuantizeLinear readers only
counts as the Q output's type; graph inputs and outputs keep the float type they really have.
Weights are never read (only small integer parameters such as axes are): constness and sizes
come from the graph alone.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import (
    Model,
    constant_nbytes,
    constant_value,
    infer_shapes,
    is_default_domain,
    is_graph_output,
    is_static,
    is_static_dim,
    producer,
    standard_op,
)
from mapc.passes import dynamic_tensors_in, inputs_static

Dim = int | str | None

#: Integer parameters up to this size are read (axes, pads); larger constants never are.
SMALL_CONSTANT_BYTES = 4096

#: Inputs that are compile-time parameters (shapes, axes, pads, indices, quantization params)
#: rather than data, by op type and input position. They must be constants on an accelerator
#: and are exempt from the data dtype rule.
PARAMETER_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "Slice": (1, 2, 3, 4),
    "Pad": (1, 2, 3),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "Split": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "TopK": (1,),
    "Gather": (1,),
    "GatherElements": (1,),
    "GatherND": (1,),
    "Clip": (1, 2),
    "CumSum": (1,),
    "Trilu": (1,),
    "OneHot": (1, 2),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    **{
        op: (1,)
        for op in (
            "ReduceSum",
            "ReduceMean",
            "ReduceMax",
            "ReduceMin",
            "ReduceProd",
            "ReduceL1",
            "ReduceL2",
            "ReduceLogSum",
            "ReduceLogSumExp",
            "ReduceSumSquare",
        )
    },
}

#: Bias inputs: int32 in quantized models (normalization biases too, as QNN HTP takes them), so
#: they follow the target's bias dtypes.
BIAS_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (2,), "ConvTranspose": (2,), "Gemm": (2,), "LayerNormalization": (2,), "InstanceNormalization": (2,),
}  # fmt: skip

#: Weight inputs that a device compiles into its command stream.
WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2)}


@dataclass
class TensorView:
    """One tensor as a rule sees it.

    ``dtype`` is the effective type (see the module docstring), ``stored_dtype`` the graph's;
    ``weight`` marks constants, also behind a DequantizeLinear.
    """

    name: str
    dtype: str | None
    stored_dtype: str | None
    shape: tuple[Dim, ...] | None
    constant: bool
    weight: bool

    @functools.cached_property
    def static(self) -> bool:
        return is_static(self.shape)

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)



@dataclass
class NodeView:
    """One node with its tensors (None for an omitted optional input) and attributes."""

    node: gs.Node
    index: int
    label: str
    op: str
    inputs: list[TensorView | None]
    outputs: list[TensorView]
    model: ModelView = field(repr=False)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    def input(self, index: int) -> TensorView | None:
        return self.inputs[index] if index < len(self.inputs) else None

    def constant_ints(self, index: int) -> list[int] | None:
        """The values of a small constant integer input (axes, pads), else None."""
        if index >= len(self.node.inputs) or self.input(index) is None:
            return None
        tensor = self.node.inputs[index]
        if isinstance(tensor, gs.Constant) and constant_nbytes(tensor) > SMALL_CONSTANT_BYTES:
            return None
        value = constant_value(tensor)
        if value is None or value.dtype.kind not in "iu" or value.size * value.itemsize > SMALL_CONSTANT_BYTES:
            return None
        return [int(v) for v in np.asarray(value).ravel()]

    def data_tensors(self) -> Iterator[tuple[str, TensorView]]:
        """Tensors the data dtype rule checks: inputs that are not parameters or biases, and outputs."""
        skip = set(PARAMETER_INPUTS.get(self.op, ())) | set(BIAS_INPUTS.get(self.op, ()))
        for position, tensor in enumerate(self.inputs):
            if tensor is not None and position not in skip:
                yield f"input {tensor.name!r}", tensor
        for tensor in self.outputs:
            yield f"output {tensor.name!r}", tensor

    def all_tensors(self) -> Iterator[tuple[str, TensorView]]:
        """Every input (parameters included) and output."""
        for tensor in self.inputs:
            if tensor is not None:
                yield f"input {tensor.name!r}", tensor
        for tensor in self.outputs:
            yield f"output {tensor.name!r}", tensor

    def shaped_tensors(self) -> Iterator[tuple[str, TensorView]]:
        """Tensors whose shape the device must know: data and weights, not tiny parameters."""
        parameters = set(PARAMETER_INPUTS.get(self.op, ()))
        for position, tensor in enumerate(self.inputs):
            if tensor is not None and position not in parameters:
                yield f"input {tensor.name!r}", tensor
        for tensor in self.outputs:
            yield f"output {tensor.name!r}", tensor


@dataclass
class ModelView:
    """The model as the rules see it: which graph input axes carry each symbolic dim, the opset, every node."""

    graph: gs.Graph = field(repr=False)
    opset: int
    dim_sources: dict[str, list[tuple[str, int]]]
    input_shapes: dict[str, tuple[Dim, ...]]
    shapes_inferred: bool
    nodes: list[NodeView] = field(default_factory=list)
    _tensors: dict[int, TensorView] = field(default_factory=dict, repr=False)

    @property
    def inputs_static(self) -> bool:
        """Every graph input has a static shape (given by the user, or by the model itself)."""
        return inputs_static(self.graph)

    @functools.cached_property
    def inference_stops(self) -> dict[str, list[dict[str, str]]]:
        """For each dynamic tensor, the nodes where shape inference stopped on the way to it
        (op, node name and reason, as ``check-static`` reports them)."""
        return {entry["tensor"]: entry["stopped_at"] for entry in dynamic_tensors_in(self.graph)}

    def describe(self, tensor: gs.Tensor) -> TensorView:
        """The view of any tensor of the graph (computed once per tensor)."""
        known = self._tensors.get(id(tensor))
        if known is None:
            known = _describe_tensor(self.graph, tensor)
            self._tensors[id(tensor)] = known
        return known


def view_model(model: Model) -> ModelView:
    """Run shape inference and describe every top-level node of ``model`` (in graph order)."""
    inferred = infer_shapes(model)
    graph = model.graph
    inputs = [t for t in graph.inputs if not isinstance(t, gs.Constant)]
    dim_sources: dict[str, list[tuple[str, int]]] = {}
    for tensor in inputs:
        for axis, dim in enumerate(tensor.shape or []):
            if isinstance(dim, str):
                dim_sources.setdefault(dim, []).append((tensor.name, axis))
    view = ModelView(
        graph=graph,
        opset=model.opset,
        dim_sources=dim_sources,
        input_shapes={t.name: tuple(_dim(d) for d in t.shape) for t in inputs if t.shape is not None},
        shapes_inferred=inferred,
    )
    for index, node in enumerate(graph.nodes):
        view.nodes.append(
            NodeView(
                node=node,
                index=index,
                label=node_label(node, index),
                op=op_name(node),
                inputs=[None if _omitted(t) else view.describe(t) for t in node.inputs],
                outputs=[view.describe(t) for t in node.outputs if not _omitted(t)],
                model=view,
            )
        )
    return view


def node_label(node: gs.Node, index: int) -> str:
    """A node's name, or ``Op#index`` for an unnamed node (never changes the model)."""
    return node.name or f"{node.op}#{index}"


def op_name(node: gs.Node) -> str:
    """``Conv`` for ai.onnx ops, ``domain::Op`` for the others.

    A fused op that ``fuse`` wrote as a ``mapc`` function because the model's opset predates the
    standard op (``mapc::Attention`` at opset 20) has the standard op's inputs and attributes, so
    a target judges it, and costs it, as that standard op.
    """
    return standard_op(node) or f"{node.domain}::{node.op}"


def is_constant(tensor: gs.Tensor) -> bool:
    """An initializer or the output of a ``Constant`` node."""
    if isinstance(tensor, gs.Constant):
        return True
    source = producer(tensor)
    return source is not None and source.op == "Constant" and is_default_domain(source)


def dtype_name(dtype: Any) -> str | None:
    """``float32`` for any spelling of a dtype onnx-graphsurgeon holds; the kind (``optional``,
    ``sequence``, ``map``) of a non-tensor value, whose type gs holds as a TypeProto."""
    if isinstance(dtype, onnx.TypeProto):
        kind = dtype.WhichOneof("value")
        return kind.removesuffix("_type") if kind else None
    return _tensor_dtype_name(dtype)


@functools.lru_cache(maxsize=None)
def _tensor_dtype_name(dtype: Any) -> str | None:
    if dtype is None:
        return None
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


def _omitted(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Variable) and not tensor.name


def _dim(dim: Any) -> Dim:
    if is_static_dim(dim):
        return int(dim)
    return dim if isinstance(dim, str) else None


def _describe_tensor(graph: gs.Graph, tensor: gs.Tensor) -> TensorView:
    constant = is_constant(tensor)
    stored = dtype_name(tensor.dtype)
    shape = None if tensor.shape is None else tuple(_dim(d) for d in tensor.shape)
    source = producer(tensor)
    weight = constant
    effective = stored
    leaves_graph = is_graph_output(graph, tensor)
    if source is not None and source.op == "DequantizeLinear" and source.inputs:
        quantized = source.inputs[0]
        weight = is_constant(quantized)
        if not leaves_graph:  # a dequantized graph output really is float
            effective = dtype_name(quantized.dtype) or stored
    elif source is not None and stored is not None and stored.startswith(("float", "bfloat")):
        readers = list(tensor.outputs)
        if readers and all(r.op == "QuantizeLinear" for r in readers) and not leaves_graph:
            quantized_types = {dtype_name(r.outputs[0].dtype) for r in readers if r.outputs}
            if len(quantized_types) == 1 and None not in quantized_types:
                effective = quantized_types.pop()
    return TensorView(tensor.name, effective, stored, shape, constant, weight)


def dims_text(shape: Sequence[Dim] | None) -> str:
    """``[N, 3, ?, 224]``: named dims by name, dims inference could not name as ``?``."""
    if shape is None:
        return "unknown"
    return "[" + ", ".join("?" if d is None or (isinstance(d, str) and d.startswith("unk__")) else str(d) for d in shape) + "]"
