"""Load-time validation of a ModelProto, with one precise sentence per problem.

mapc refuses a model before any pass touches it when it is not a usable ONNX model: no graph,
an IR version or opset onnxruntime cannot run, an unknown operator or one onnxruntime does not
implement in that opset, a tensor used but never defined, a tensor defined twice, a cycle, an
initializer whose bytes do not match its shape, external data that is missing or escapes the
model's folder, or an absurd shape. Each failure is a :class:`~mapc.ir.errors.ModelError`
whose message names the tensor, node or opset at fault. The onnx checker runs last
(:mod:`mapc.ir.onnx_check`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
import onnx.defs

from mapc.ir.errors import ModelError
from mapc.ir.external import external_ref, tensor_nbytes, uses_external_data
from mapc.ir.legacy_ops import standardize_legacy_ops
from mapc.ir.notes import Note
from mapc.ir.onnx_check import check_onnx
from mapc.ir.runtime_limits import MIN_OPSET, runs_in_onnxruntime, runtime_limits, runtime_only_op, runtime_schemas

#: A dimension above this is not a real tensor (2**40 elements of one byte is a terabyte).
MAX_DIM = 1 << 40
MAX_ELEMENTS = 1 << 40


def validate_model(proto: onnx.ModelProto, base_dir: Path | None) -> list[Note]:
    """Raise :class:`ModelError` unless ``proto`` is an ONNX model mapc can compile; return
    warnings about what was repaired.

    Nodes listed out of topological order (but acyclic) are put in order, ``-1`` dims become
    unknown dims, an onnxruntime domain (``com.microsoft``) that nodes use but the model does
    not import is imported, and LayerNormalization below opset 17 becomes the ``mapc`` function
    fusion would write (:mod:`mapc.ir.legacy_ops`), in place.
    """
    if not proto.HasField("graph") or proto.ir_version <= 0:
        raise ModelError("not an ONNX model: no graph or no IR version")
    limits = runtime_limits()
    if proto.ir_version > limits.max_ir_version:
        raise ModelError(
            f"IR version {proto.ir_version} is newer than the installed {limits.describe()} run "
            f"(at most {limits.max_ir_version})"
        )
    opsets = _check_opsets(proto)
    notes = _import_runtime_domains(proto, opsets) + standardize_legacy_ops(proto, opsets)
    local_functions = {(f.domain, f.name) for f in proto.functions}
    _check_graph(proto.graph, opsets, local_functions, base_dir, outer_scope=frozenset())
    check_onnx(proto)
    return notes


def _import_runtime_domains(proto: onnx.ModelProto, opsets: dict[str, int]) -> list[Note]:
    """Import (version 1, in ``proto`` and ``opsets``) each domain of onnxruntime's own operators
    that nodes use without the model importing it, as onnxruntime-optimized graphs often do."""
    runtime_domains = {domain for domain, _ in runtime_schemas()} - {"", "ai.onnx.ml"}
    used = sorted({node.domain for node in _all_nodes(proto.graph)} & runtime_domains - set(opsets))
    notes = []
    for domain in used:
        proto.opset_import.add(domain=domain, version=1)
        opsets[domain] = 1
        notes.append(Note(
            "load.domain-imported",
            f"nodes use domain {domain!r}, which the model does not import; imported it at version 1",
            fix="fix the exporter, or import the domain in the model's opset_import",
            severity="warning",
        ))
    return notes


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in _subgraphs(attribute):
                yield from _all_nodes(subgraph)


def _check_opsets(proto: onnx.ModelProto) -> dict[str, int]:
    opsets: dict[str, int] = {}
    for entry in proto.opset_import:
        domain = "" if entry.domain == "ai.onnx" else entry.domain
        if domain in opsets:
            raise ModelError(f"opset for domain {domain or 'ai.onnx'!r} is declared twice")
        opsets[domain] = entry.version
    if "" not in opsets:
        return opsets  # e.g. a model of ai.onnx.ml operators only; nodes are checked against it
    version = opsets[""]
    limits = runtime_limits()
    if not MIN_OPSET <= version <= limits.max_opset:
        raise ModelError(
            f"unsupported opset: ai.onnx {version} (mapc supports {MIN_OPSET} to {limits.max_opset}, "
            f"what the installed {limits.describe()} run)"
        )
    if "ai.onnx.ml" in opsets and not 1 <= opsets["ai.onnx.ml"] <= limits.max_ml_opset:
        raise ModelError(f"unsupported opset: ai.onnx.ml {opsets['ai.onnx.ml']}")
    for domain, domain_version in opsets.items():
        if domain_version < 1:
            raise ModelError(f"opset version {domain_version} for domain {domain!r} is not valid")
    return opsets


def _check_graph(
    graph: onnx.GraphProto,
    opsets: dict[str, int],
    local_functions: set[tuple[str, str]],
    base_dir: Path | None,
    outer_scope: frozenset[str],
) -> None:
    _check_text_fields(graph)
    defined: dict[str, str] = {name: "outer scope" for name in outer_scope}
    for value in graph.input:
        _check_value_info_dims(value, "input")
        defined[value.name] = "graph input"
    for tensor in graph.initializer:
        _check_initializer(tensor, base_dir)
        defined[tensor.name] = "initializer"
    for sparse in graph.sparse_initializer:
        defined[sparse.values.name] = "initializer"
    for value in graph.output:
        _check_value_info_dims(value, "output")
    for value in graph.value_info:
        _check_value_info_dims(value, "value_info")

    producer: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for output in node.output:
            if not output:
                continue
            if output in producer:
                raise ModelError(f"tensor {output!r} is produced by two nodes ({_describe(graph.node[producer[output]])} and {_describe(node)})")
            producer[output] = index
        _check_operator(node, opsets, local_functions)

    every_name = set(defined) | set(producer)
    for node in graph.node:
        for name in _used_names(node):
            if name and name not in every_name:
                raise ModelError(
                    f"tensor {name!r} used by node {_describe(node)} is not produced by any node, initializer or graph input"
                )
    for value in graph.output:
        if value.name not in every_name:
            raise ModelError(f"graph output {value.name!r} is not produced by any node, initializer or graph input")

    order = _topological_order(graph, producer)
    if order != list(range(len(graph.node))):
        nodes = [onnx.NodeProto() for _ in order]
        for target, index in zip(nodes, order):
            target.CopyFrom(graph.node[index])
        del graph.node[:]
        graph.node.extend(nodes)
    for node in graph.node:
        for attribute in node.attribute:
            for subgraph in _subgraphs(attribute):
                _check_graph(subgraph, opsets, local_functions, base_dir, frozenset(every_name))


def _check_text_fields(graph: onnx.GraphProto) -> None:
    """Names and op types must be text; protobuf hands back bytes for invalid UTF-8."""
    named = [*graph.input, *graph.output, *graph.value_info, *graph.initializer]
    for item in named:
        if not isinstance(item.name, str):
            raise ModelError(f"graph has a tensor name that is not valid UTF-8: {item.name!r}")
    for node in graph.node:
        fields = [node.op_type, node.domain, node.name, *node.input, *node.output]
        if not all(isinstance(field, str) for field in fields):
            raise ModelError(f"node {node.name!r} has an operator, domain or tensor name that is not valid UTF-8")
        if not node.op_type:
            raise ModelError(f"node {node.name!r} has no operator type")


def _used_names(node: onnx.NodeProto) -> Iterator[str]:
    """Names ``node`` reads: its inputs and the outer-scope names its subgraphs read."""
    yield from node.input
    for attribute in node.attribute:
        for subgraph in _subgraphs(attribute):
            yield from _outer_names(subgraph)


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    local = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    local |= {out for node in graph.node for out in node.output}
    used = {name for node in graph.node for name in _used_names(node)}
    return {name for name in used if name and name not in local}


def _subgraphs(attribute: onnx.AttributeProto) -> Iterable[onnx.GraphProto]:
    if attribute.type == onnx.AttributeProto.GRAPH:
        return [attribute.g]
    if attribute.type == onnx.AttributeProto.GRAPHS:
        return list(attribute.graphs)
    return []


def _check_operator(node: onnx.NodeProto, opsets: dict[str, int], local_functions: set[tuple[str, str]]) -> None:
    domain = "" if node.domain == "ai.onnx" else node.domain
    if (node.domain, node.op_type) in local_functions:
        return
    if domain not in opsets:
        raise ModelError(f"node {_describe(node)} uses domain {domain!r}, which the model does not import")
    label = "ai.onnx" if domain == "" else domain
    if domain in ("", "ai.onnx.ml"):
        if not onnx.defs.has(node.op_type, opsets[domain], domain):
            if runtime_only_op(domain, node.op_type, opsets[domain]):
                return  # onnxruntime runs it where onnx has no schema: ImageScaler (peephole rewrites it)
            raise ModelError(f"unknown operator {node.op_type!r} in {label} opset {opsets[domain]} (node {_describe(node)})")
        _check_implemented(node, domain, opsets[domain])
        _check_cast_target(node)
    elif not onnx.defs.has(node.op_type, opsets[domain], domain) and (domain, node.op_type) not in runtime_schemas():
        raise ModelError(
            f"unknown operator {node.op_type!r} in domain {label!r}: neither onnx nor onnxruntime defines it, "
            f"and the model has no function for it (node {_describe(node)})"
        )


def _check_cast_target(node: onnx.NodeProto) -> None:
    """A Cast's ``to`` must name an element type (onnxruntime loads ``to=0`` and fails at run)."""
    if node.op_type != "Cast":
        return
    for attribute in node.attribute:
        if attribute.name == "to" and (attribute.i == onnx.TensorProto.UNDEFINED or attribute.i not in onnx.TensorProto.DataType.values()):
            raise ModelError(f"node {_describe(node)} casts to {attribute.i}, which is not an element type")


def _check_implemented(node: onnx.NodeProto, domain: str, opset: int) -> None:
    """An onnx operator version that onnxruntime neither implements nor can expand (``Relu`` in
    opset 1, whose kernel onnxruntime dropped) is refused: the compiled model would not load."""
    schema = onnx.defs.get_schema(node.op_type, opset, domain)
    if node.op_type == "Constant" or schema.has_function or schema.has_context_dependent_function:
        return  # onnxruntime turns Constant into an initializer and expands function ops
    if not runs_in_onnxruntime(domain, node.op_type, schema.since_version):
        label = "ai.onnx" if domain == "" else domain
        raise ModelError(
            f"onnxruntime has no implementation of {node.op_type}-{schema.since_version} ({label} opset {opset}, "
            f"node {_describe(node)}); convert the model to a newer opset (onnx.version_converter)"
        )


def _topological_order(graph: onnx.GraphProto, producer: dict[str, int]) -> list[int]:
    """Node indices in a topological order (the file order where valid); a cycle is an error."""
    dependencies = nx.DiGraph()
    dependencies.add_nodes_from(range(len(graph.node)))
    for index, node in enumerate(graph.node):
        for name in _used_names(node):
            if name in producer:
                dependencies.add_edge(producer[name], index)
    if all(source < target for source, target in dependencies.edges):  # already in order: linear
        return list(range(len(graph.node)))
    try:
        return list(nx.lexicographical_topological_sort(dependencies))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(dependencies)
    members = " -> ".join(_describe(graph.node[src]) for src, _ in cycle)
    raise ModelError(f"graph has a cycle: {members} -> {_describe(graph.node[cycle[0][0]])}")


def _check_initializer(tensor: onnx.TensorProto, base_dir: Path | None) -> None:
    for dim in tensor.dims:
        if dim < 0 or dim > MAX_DIM:
            raise ModelError(f"initializer {tensor.name!r} has an absurd dimension {dim}")
    if len(tensor.dims) and int(np.prod([int(d) for d in tensor.dims], dtype=object)) > MAX_ELEMENTS:
        raise ModelError(f"initializer {tensor.name!r} has an absurd shape {list(tensor.dims)}")
    if tensor.data_type not in onnx.TensorProto.DataType.values() or tensor.data_type == onnx.TensorProto.UNDEFINED:
        raise ModelError(f"initializer {tensor.name!r} has no valid element type ({tensor.data_type})")
    if uses_external_data(tensor):
        if base_dir is None:
            raise ModelError(
                f"initializer {tensor.name!r} keeps its data in an external file, "
                "but the model was not loaded from a path; load it from its file"
            )
        external_ref(tensor, base_dir)
        return
    if tensor.HasField("raw_data"):
        expected = tensor_nbytes(tensor)
        if len(tensor.raw_data) != expected:
            raise ModelError(
                f"initializer {tensor.name!r} holds {len(tensor.raw_data)} bytes but its shape and type need {expected}"
            )


def _check_value_info_dims(value: onnx.ValueInfoProto, role: str) -> None:
    """Dims must be plausible sizes; ``-1``, which some exporters write for "any size" (and
    onnxruntime reads so), becomes an unknown dim, in place."""
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return
    for dim in value.type.tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value == -1:
            dim.ClearField("dim_value")
        elif dim.HasField("dim_value") and not 0 <= dim.dim_value <= MAX_DIM:
            raise ModelError(f"graph {role} {value.name!r} has an absurd dimension {dim.dim_value}")


def _describe(node: onnx.NodeProto) -> str:
    return f"{node.name!r} ({node.op_type})" if node.name else f"<unnamed {node.op_type} -> {list(node.output)}>"
