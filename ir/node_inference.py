"""onnx shape inference for one node at a time, with the values of its constant inputs.

:func:`infer_shapes` re-infers the whole graph; :func:`infer_node` asks onnx about a single node,
given the dtypes and shapes annotated on its inputs and the values known for some of them. A
pass that learns values one node after another (``fold-constants`` settling shape arithmetic)
uses it to see at once what a ``Reshape`` to a just-computed shape produces, without another
round of whole-graph inference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx.defs
import onnx.shape_inference
import onnx_graphsurgeon as gs
from onnx import numpy_helper
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from mapc.ir.shapes import Dim, known_shape, type_dims

#: What onnx infers for one output: its element type (None if unknown) and shape (None if unknown).
Inferred = tuple[np.dtype | None, list[Dim] | None]


def infer_node(
    node: gs.Node, opset_imports: Mapping[str, int], ir_version: int, values: Mapping[str, np.ndarray]
) -> list[Inferred] | None:
    """The dtype and shape onnx infers for each output of ``node`` (in order; an unused optional
    output gets ``(None, None)``).

    Inputs are described by their annotated dtype and shape, or, for those named in ``values``,
    by the value itself (which onnx also reads: a ``Reshape`` target, ``Slice`` bounds, axes).
    None when onnx has no schema for the op at the model's opset (custom domains, model-local
    functions), an input's dtype is unknown, or onnx's inference rejects the node.
    """
    domain = "" if node.domain in (None, "", "ai.onnx") else node.domain
    version = opset_imports.get(domain)
    if version is None or any(True for _ in node.subgraphs()):
        return None
    try:
        schema = onnx.defs.get_schema(node.op, version, domain)
    except onnx.defs.SchemaError:
        return None
    types: dict[str, onnx.TypeProto] = {}
    data: dict[str, onnx.TensorProto] = {}
    for tensor in node.inputs:
        if tensor.is_empty() or tensor.name in types:
            continue
        value = values.get(tensor.name)
        if value is not None:
            typed = _type(value.dtype, list(value.shape))
            if typed is None:
                return None
            types[tensor.name] = typed
            data[tensor.name] = numpy_helper.from_array(np.asarray(value), tensor.name)
            continue
        known = _type(tensor.dtype, known_shape(tensor)) if tensor.dtype is not None else None
        if known is None:
            return None
        types[tensor.name] = known
    proto = OnnxExporter.export_node(node)
    opsets = [onnx.helper.make_opsetid(d, v) for d, v in opset_imports.items()]
    try:
        outputs = onnx.shape_inference.infer_node_outputs(schema, proto, types, data, opset_imports=opsets, ir_version=ir_version)
    except Exception:  # onnx raises InferenceError, ValidationError, RuntimeError... on inconsistent nodes
        return None
    result: list[Inferred] = []
    for tensor in node.outputs:
        found = outputs.get(tensor.name) if not tensor.is_empty() else None
        result.append(type_dims(found.tensor_type) if found is not None and found.HasField("tensor_type") else (None, None))
    return result


def _type(dtype: np.dtype | int, shape: Sequence[Dim] | None) -> onnx.TypeProto | None:
    """The onnx tensor type of ``dtype`` and ``shape``; None for a dtype onnx does not map."""
    try:
        elem = dtype if isinstance(dtype, int) else onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except (KeyError, TypeError, ValueError):
        return None
    dims = None if shape is None else [d if isinstance(d, (int, np.integer, str)) else None for d in shape]
    return onnx.helper.make_tensor_type_proto(elem, dims)

