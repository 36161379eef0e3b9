"""Graph editing helpers every pass uses.

onnx-graphsurgeon keeps producer/consumer links in sync (``tensor.inputs`` are its producers,
``tensor.outputs`` its consumers, including nodes of subgraphs that read it from the outer
scope). These helpers add what passes need on top: rewiring uses while graph-output names stay
fixed, removing nodes, a stable topological order, dead-node removal, and reading constants
whether they are initializers or ``Constant`` nodes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import networkx as nx
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from mapc.ir.external import ExternalValues


class NamedGraph(Protocol):
    """What graph edits need of a model: its graph and a source of fresh, deterministic names
    (:class:`mapc.ir.model.Model` is one)."""

    graph: gs.Graph

    def fresh_name(self, base: str) -> str: ...


#: Domain of mapc's fused-op functions: model-local functions named after the standard op they
#: stand in for, used when the model's opset predates that op (``mapc::Attention`` at opset 18).
MAPC_DOMAIN = "mapc"


#: Readers that use only a tensor's shape, never its values (they fold away once shapes are static).
SHAPE_READERS = frozenset({"Shape", "Size"})
#: Constants up to this size are read to compare them or fold them (weights never are).
SMALL_CONSTANT_BYTES = 1 << 16


def optional_input(node: gs.Node, slot: int) -> gs.Tensor | None:
    """The input of ``node`` at ``slot``, or None when it is absent or empty (an omitted optional input)."""
    return node.inputs[slot] if len(node.inputs) > slot and not node.inputs[slot].is_empty() else None


FLOAT_TYPES = (np.float16, np.float32, np.float64)


def is_float_activation(tensor: gs.Tensor) -> bool:
    """A float tensor (float16/32/64) that no DequantizeLinear writes: an activation a
    quantizer left in float (any float tensor of an unquantized model)."""
    writer = tensor.inputs[0] if isinstance(tensor, gs.Variable) and tensor.inputs else None
    if writer is not None and writer.op == "DequantizeLinear":
        return False
    return tensor.dtype is not None and np.dtype(tensor.dtype).type in FLOAT_TYPES


def is_default_domain(node: gs.Node) -> bool:
    """True for a node of the default ONNX domain (``""`` or ``ai.onnx``)."""
    return (node.domain or "") in ("", "ai.onnx")


def standard_op(node: gs.Node) -> str | None:
    """The ai.onnx op ``node`` computes, or None: its op type for ai.onnx nodes, and for a mapc
    fused-op function (same inputs and attributes as the standard op) the op it stands in for."""
    domain = node.domain or ""
    if domain in ("", "ai.onnx") or (domain == MAPC_DOMAIN and onnx.defs.has(node.op)):
        return node.op
    return None


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node that computes ``tensor``, or None for graph inputs and constants."""
    return tensor.inputs[0] if tensor.inputs else None


def consumers(tensor: gs.Tensor) -> list[gs.Node]:
    """Nodes that read ``tensor`` (subgraph nodes reading it from an outer scope included)."""
    return list(tensor.outputs)


def is_graph_output(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(output is tensor for output in graph.outputs)


def is_graph_input(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(inp is tensor for inp in graph.inputs)


def replace_all_uses(model: NamedGraph, old: gs.Tensor, new: gs.Tensor, graph: gs.Graph | None = None) -> None:
    """Make every reader of ``old`` read ``new`` instead.

    Graph outputs keep their names: when ``old`` is a graph output, ``new`` takes over the name
    if it is an ordinary node output; otherwise (a graph input, a constant, another output)
    ``old`` is kept and recomputed as ``Identity(new)``. Afterwards ``old``'s producer, if any,
    usually has no readers left and can be removed.
    """
    graph = model.graph if graph is None else graph
    if old is new:
        return
    for node in consumers(old):
        for index, tensor in enumerate(node.inputs):
            if tensor is old:
                node.inputs[index] = new
    positions = [index for index, output in enumerate(graph.outputs) if output is old]
    if not positions:
        return
    if can_take_name(graph, new):
        name = old.name
        old.name = model.fresh_name(f"{name}_replaced")
        new.name = name
        if isinstance(new, gs.Variable) and isinstance(old, gs.Variable):
            new.dtype = new.dtype if new.dtype is not None else old.dtype
            new.shape = new.shape if new.shape is not None else old.shape
        for index in positions:
            graph.outputs[index] = new
        return
    source = producer(old)
    if source is not None:
        slot = next(i for i, out in enumerate(source.outputs) if out is old)
        source.outputs[slot] = gs.Variable(model.fresh_name(f"{old.name}_unused"))
    graph.nodes.append(gs.Node("Identity", name=model.fresh_name(f"{old.name}_identity"), inputs=[new], outputs=[old]))


def can_take_name(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    """True if ``tensor`` may be renamed to become one of ``graph``'s outputs: it is computed by a
    node of ``graph`` itself and is neither a graph input nor already a graph output."""
    source = producer(tensor)
    return (
        isinstance(tensor, gs.Variable)
        and source is not None
        and any(node is source for node in graph.nodes)
        and not is_graph_input(graph, tensor)
        and not is_graph_output(graph, tensor)
    )


def remove_nodes(graph: gs.Graph, nodes: Iterable[gs.Node]) -> int:
    """Detach ``nodes`` from their tensors and drop them from ``graph``; return how many.

    The caller must first rewire any remaining reader of their outputs. onnx-graphsurgeon
    unlinks one node at a time with ``list.remove`` (quadratic in the readers of a shared
    tensor, such as a weight read by thousands of nodes); here every touched producer/reader
    list is filtered once, by identity.
    """
    doomed = {id(node): node for node in nodes}
    touched = {id(t): t for node in doomed.values() for t in (*node.inputs, *node.outputs)}
    for tensor in touched.values():
        for links in (tensor.inputs, tensor.outputs):
            kept = [node for node in links if id(node) not in doomed]
            list.clear(links)  # the plain list methods skip gs's per-element synchronisation
            list.extend(links, kept)
    for node in doomed.values():
        list.clear(node.inputs)
        list.clear(node.outputs)
    before = len(graph.nodes)
    graph.nodes = [node for node in graph.nodes if id(node) not in doomed]
    return before - len(graph.nodes)


def toposort(graph: gs.Graph) -> None:
    """Order ``graph``'s nodes (and its subgraphs') topologically, keeping the current order
    wherever it is already valid. Raises ``ValueError`` naming a cycle if there is one."""
    for node in graph.nodes:
        for subgraph in node.subgraphs():
            toposort(subgraph)
    index_of = {id(node): index for index, node in enumerate(graph.nodes)}
    dependencies = nx.DiGraph()
    dependencies.add_nodes_from(range(len(graph.nodes)))
    for index, node in enumerate(graph.nodes):
        for tensor in _read_tensors(node):
            for source in tensor.inputs:
                if id(source) in index_of:
                    dependencies.add_edge(index_of[id(source)], index)
    try:
        order = list(nx.lexicographical_topological_sort(dependencies))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(dependencies)
        names = " -> ".join(graph.nodes[src].name or graph.nodes[src].op for src, _ in cycle)
        raise ValueError(f"graph has a cycle: {names}") from None
    if order != list(range(len(graph.nodes))):
        graph.nodes = [graph.nodes[index] for index in order]


def _read_tensors(node: gs.Node) -> list[gs.Tensor]:
    tensors = list(node.inputs)
    for subgraph in node.subgraphs():
        tensors.extend(subgraph._foreign_tensors().values())
    return tensors


def remove_dead_nodes(graph: gs.Graph) -> int:
    """Remove nodes (also inside subgraphs) that do not contribute to any graph output.

    Graph inputs are kept even when unused: they are the model's interface. Returns the number
    of nodes removed.
    """
    before = count_nodes(graph)
    graph.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=True, remove_unused_graph_inputs=False, recurse_functions=False)
    return before - count_nodes(graph)


def count_nodes(graph: gs.Graph) -> int:
    """Nodes of ``graph`` including those of its subgraphs."""
    return len(graph.nodes) + sum(len(sub.nodes) for sub in graph.subgraphs(recursive=True))


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of ``tensor`` if it is an initializer or the output of a ``Constant`` node."""
    if isinstance(tensor, gs.Constant):
        return tensor.values
    source = producer(tensor)
    if source is not None and source.op == "Constant" and not source.domain and "value" in source.attrs:
        value = source.attrs["value"]
        if isinstance(value, gs.Constant):
            return value.values
    return None


def int_constant(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a constant integer tensor (indices, axes, shapes) as int64, else None."""
    value = constant_value(tensor) if not tensor.is_empty() else None
    if value is None:
        return None
    array = np.asarray(value)
    return array.astype(np.int64) if array.dtype.kind in "iu" else None


def clip_bounds(node: gs.Node) -> tuple[float | None, float | None] | None:
    """Clip's (min, max) when both are constant (absent = unbounded), else None."""
    bounds: list[float | None] = []
    for index in (1, 2):
        if len(node.inputs) <= index or not node.inputs[index].name:
            bounds.append(None)
            continue
        value = constant_value(node.inputs[index])
        if value is None or np.asarray(value).size != 1:
            return None
        bounds.append(float(np.asarray(value).reshape(())))
    if "min" in node.attrs or "max" in node.attrs:  # opset < 11
        bounds = [node.attrs.get("min"), node.attrs.get("max")]
    return bounds[0], bounds[1]


def constant_tensor(tensor: gs.Tensor) -> gs.Constant | None:
    """The constant behind ``tensor`` (an initializer or a ``Constant`` node's value), or None."""
    if isinstance(tensor, gs.Constant):
        return tensor
    source = producer(tensor)
    if source is not None and source.op == "Constant" and not source.domain and isinstance(source.attrs.get("value"), gs.Constant):
        return source.attrs["value"]
    return None


def small_constant(tensor: gs.Tensor, max_bytes: int = SMALL_CONSTANT_BYTES) -> np.ndarray | None:
    """The value of a constant of at most ``max_bytes`` bytes (never loads a larger weight)."""
    constant = constant_tensor(tensor)
    if constant is None or constant_nbytes(constant) > max_bytes:
        return None
    return np.asarray(constant.values)


def scalar_value(tensor: gs.Tensor) -> float | None:
    """The value of a small constant whose elements are all equal (a scalar, or a [1]-shaped tensor)."""
    value = small_constant(tensor)
    if value is None or value.size == 0 or value.dtype.kind not in "fiub":
        return None
    flat = value.reshape(-1)
    if not np.all(flat == flat[0]):
        return None
    return float(flat[0])


def constant_nbytes(tensor: gs.Constant) -> int:
    """Bytes a constant's values occupy, without loading them."""
    values = tensor._values
    return int(values.nbytes) if isinstance(values, LazyValues) else int(np.asarray(values).nbytes)


def peek_bytes(tensor: gs.Constant, count: int) -> tuple[bytes, bytes] | None:
    """The first and last ``count`` bytes of a constant's raw data, read without loading a lazy
    weight; None where there is no raw form to read (strings, tensors stored as typed fields)."""
    values = tensor._values
    if isinstance(values, ExternalValues):
        ref = values.ref
        with open(ref.path, "rb") as source:
            source.seek(ref.offset)
            head = source.read(min(count, ref.length))
            source.seek(ref.offset + max(ref.length - count, 0))
            return head, source.read(min(count, ref.length))
    if isinstance(values, LazyValues):
        if not values.tensor.HasField("raw_data"):
            return None
        raw = values.tensor.raw_data
        return raw[:count], raw[-count:] if count else b""
    array = np.ascontiguousarray(values)
    if array.dtype == object:
        return None
    data = memoryview(array.reshape(-1).view(np.uint8))
    return bytes(data[:count]), bytes(data[-count:]) if count else b""


def peek_values(tensor: gs.Constant, count: int) -> np.ndarray | None:
    """Up to ``count`` leading elements of a constant, without loading a lazy weight (None for
    element types that are not stored one per numpy item). Lets a pass rule out a large weight
    cheaply before reading all of it."""
    dtype = np.dtype(tensor.dtype) if tensor.dtype is not None else None
    if dtype is None or dtype == object or dtype.itemsize == 0:
        return None
    peeked = peek_bytes(tensor, count * dtype.itemsize)
    if peeked is None:
        return None
    head = peeked[0][: len(peeked[0]) - len(peeked[0]) % dtype.itemsize]
    return np.frombuffer(head, dtype=dtype.newbyteorder("<"))


def is_lazy(tensor: gs.Constant) -> bool:
    """True if the constant's values have not been read yet (a weight no pass has touched)."""
    return isinstance(tensor._values, LazyValues)
