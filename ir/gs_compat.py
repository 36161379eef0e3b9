"""Closing onnx-graphsurgeon 0.6's round-trip gaps, so loading and saving loses nothing.

gs drops or cannot export some legal ONNX constructs:

* the full type of non-tensor values (optional, map, opaque, sequence with shapes): gs keeps
  only the kind's name and crashes exporting an optional;
* attributes of type TYPE_PROTO(S) and SPARSE_TENSOR(S) (e.g. ``Optional``'s ``type``):
  gs silently drops them on import;
* the ``overload`` of a node calling a model-local function (IR >= 10): gs has no field for it.
  It is kept in the node's attributes as an :class:`Overload` value, which the exporter turns
  back into ``NodeProto.overload`` (and node copies keep, since they copy attributes);
* constants of packed sub-byte types (int4, uint4, float4e2m1, int2, uint2) held as numpy arrays
  (ml_dtypes): gs writes one byte per element where ONNX packs two (or four), and fails;
* bfloat16 and the float8 types: gs leaves their dtype an ONNX enum (an int) that numpy cannot
  interpret; they get the numpy (ml_dtypes) dtype onnx maps them to, as every other type does;
* back from numpy, gs writes float8_e4m3fnuz as FLOAT8E4M3FN (and knows no float8e8m0, int2,
  uint2 or float4e2m1): ml_dtypes' types are written with onnx's own mapping.

:func:`remember_lost_parts` runs right after ``gs.import_onnx`` and stores what gs would lose
on its objects; the exporter hooks installed here (gs calls its exporter by class name, also for
subgraphs, so the hooks wrap those static methods) write it back.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters import onnx_exporter
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.importers import onnx_importer

#: Attribute holding the full TypeProto of a value whose type gs only names.
TYPE_PROTO_ATTRIBUTE = "_mapc_type_proto"
#: Node attribute holding the overload a function call selects (an :class:`Overload`).
OVERLOAD_ATTRIBUTE = "_mapc_overload"
_KEPT_ATTRIBUTE_TYPES = {
    onnx.AttributeProto.TYPE_PROTO,
    onnx.AttributeProto.TYPE_PROTOS,
    onnx.AttributeProto.SPARSE_TENSOR,
    onnx.AttributeProto.SPARSE_TENSORS,
}


class Overload(str):
    """The overload identifier of a function call; never exported as an attribute."""


def set_overload(node: gs.Node, overload: str | None) -> None:
    """Make ``node`` call the function overload ``overload`` (None or "" for the plain one)."""
    if overload:
        node.attrs[OVERLOAD_ATTRIBUTE] = Overload(overload)
    else:
        node.attrs.pop(OVERLOAD_ATTRIBUTE, None)


def remember_lost_parts(proto_graph: onnx.GraphProto, graph: gs.Graph) -> None:
    """Store on ``graph``'s tensors and nodes what gs dropped when importing ``proto_graph``."""
    _keep_dropped_attributes(proto_graph, graph)
    types: dict[str, onnx.TypeProto] = {}
    for current in _graphs(proto_graph):
        for info in [*current.input, *current.output, *current.value_info]:
            if info.type.WhichOneof("value") not in (None, "tensor_type"):
                types[info.name] = info.type
    if not types:
        return
    for each in (graph, *graph.subgraphs(recursive=True)):
        for tensor in [*each.tensors().values(), *each.inputs, *each.outputs]:
            if tensor.name in types and isinstance(tensor, gs.Variable):
                type_proto = onnx.TypeProto()
                type_proto.CopyFrom(types[tensor.name])
                setattr(tensor, TYPE_PROTO_ATTRIBUTE, type_proto)


def copy_lost_parts(source: gs.Graph, target: gs.Graph) -> None:
    """Carry remembered types over to ``target``, a gs copy of ``source`` (copies drop them)."""
    remembered = {
        tensor.name: getattr(tensor, TYPE_PROTO_ATTRIBUTE)
        for each in (source, *source.subgraphs(recursive=True))
        for tensor in each.tensors().values()
        if hasattr(tensor, TYPE_PROTO_ATTRIBUTE)
    }
    if remembered:
        for each in (target, *target.subgraphs(recursive=True)):
            for tensor in each.tensors().values():
                if tensor.name in remembered:
                    setattr(tensor, TYPE_PROTO_ATTRIBUTE, remembered[tensor.name])


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    found, pending = [], [graph]
    while pending:
        current = pending.pop()
        found.append(current)
        for node in current.node:
            for attribute in node.attribute:
                pending.extend([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs)
    return found


def _keep_dropped_attributes(proto_graph: onnx.GraphProto, graph: gs.Graph) -> None:
    # gs imports nodes in file order, so proto and gs nodes pair up one to one.
    for proto_node, node in zip(proto_graph.node, graph.nodes):
        if proto_node.overload:
            set_overload(node, proto_node.overload)
        for attribute in proto_node.attribute:
            if attribute.type in _KEPT_ATTRIBUTE_TYPES and attribute.name not in node.attrs:
                kept = onnx.AttributeProto()
                kept.CopyFrom(attribute)
                node.attrs[attribute.name] = kept
            elif attribute.type == onnx.AttributeProto.GRAPH and isinstance(node.attrs.get(attribute.name), gs.Graph):
                _keep_dropped_attributes(attribute.g, node.attrs[attribute.name])


_export_value_info_with_gs = OnnxExporter.export_value_info_proto
_export_attributes_with_gs = OnnxExporter.export_attributes
_export_node_with_gs = OnnxExporter.export_node
_export_tensor_with_gs = OnnxExporter.export_tensor_proto
#: numpy (ml_dtypes) element types ONNX stores packed, several per byte.
_PACKED_DTYPES = {
    np.dtype(getattr(ml_dtypes, name))
    for name in ("int4", "uint4", "float4_e2m1fn", "int2", "uint2")
    if hasattr(ml_dtypes, name)
}


def _export_value_info(tensor: gs.Tensor, do_type_check: bool) -> onnx.ValueInfoProto:
    type_proto = getattr(tensor, TYPE_PROTO_ATTRIBUTE, None)
    if type_proto is not None and getattr(tensor, "type", "tensor_type") != "tensor_type":
        info = onnx.ValueInfoProto(name=tensor.name)
        info.type.CopyFrom(type_proto)
        return info
    return _export_value_info_with_gs(tensor, do_type_check)


def _export_attributes(attrs: dict[str, Any]) -> list[onnx.AttributeProto]:
    kept = [value for value in attrs.values() if isinstance(value, onnx.AttributeProto)]
    rest = {key: value for key, value in attrs.items() if not isinstance(value, (onnx.AttributeProto, Overload))}
    exported = _export_attributes_with_gs(rest)
    for value in kept:
        duplicate = onnx.AttributeProto()
        duplicate.CopyFrom(value)
        exported.append(duplicate)
    return exported


def _export_node(node: gs.Node) -> onnx.NodeProto:
    exported = _export_node_with_gs(node)
    overload = node.attrs.get(OVERLOAD_ATTRIBUTE)
    if overload:
        exported.overload = str(overload)
    return exported


def _export_tensor(tensor: gs.Constant) -> onnx.TensorProto:
    values = tensor._values
    if isinstance(values, np.ndarray) and values.dtype in _PACKED_DTYPES:
        return onnx.numpy_helper.from_array(values, tensor.name)
    return _export_tensor_with_gs(tensor)


OnnxExporter.export_value_info_proto = staticmethod(_export_value_info)
OnnxExporter.export_node = staticmethod(_export_node)
OnnxExporter.export_tensor_proto = staticmethod(_export_tensor)
OnnxExporter.export_attributes = staticmethod(_export_attributes)


#: ml_dtypes' element types, which gs maps to ONNX wrongly or not at all.
_ML_DTYPES = {
    np.dtype(getattr(ml_dtypes, name))
    for name in ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
                 "int4", "uint4", "int2", "uint2", "float4_e2m1fn")
    if hasattr(ml_dtypes, name)
}
_dtype_to_onnx_with_gs = onnx_exporter.dtype_to_onnx


def _dtype_to_onnx(dtype: Any) -> int:
    """The ONNX element type gs writes for ``dtype``; onnx's mapping for ml_dtypes' types."""
    if isinstance(dtype, np.dtype) and dtype in _ML_DTYPES:
        return onnx.helper.np_dtype_to_tensor_dtype(dtype)
    return _dtype_to_onnx_with_gs(dtype)


onnx_exporter.dtype_to_onnx = _dtype_to_onnx


_numpy_type_with_gs = onnx_importer.get_numpy_type


def _numpy_type(onnx_type: Any) -> Any:
    """gs's numpy type for an ONNX element type, with onnx's ml_dtypes mapping where gs has none."""
    found = _numpy_type_with_gs(onnx_type)
    if found is None and isinstance(onnx_type, int) and onnx_type in onnx.helper.get_all_tensor_dtypes():
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))
    return found


onnx_importer.get_numpy_type = _numpy_type
