"""Which nodes ``fold-constants`` may evaluate, grouped into connected constant subgraphs.

A node is foldable when everything it reads is constant (an initializer that is not also a graph
input, or the output of another foldable node), it is deterministic, onnxruntime can be asked to
evaluate it, and materialising its result respects two guards:

* **size**: an output estimated above ``max_bytes`` is kept as computation unless the node
  consumes at least as many bytes of constants that die with it (``Transpose(W)`` of a weight
  read only there replaces ``W``);
* **no duplicated weights**: a node reading a constant larger than ``duplicate_bytes`` that
  something else also reads would leave two copies; it folds only if its own output is that
  small.

Foldable nodes are grouped into weakly connected components (one constant subgraph each); only a
component's *frontier* (tensors read outside it, or graph outputs) is materialised, so large
intermediates inside a component never become initializers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import constant_nbytes, is_graph_input, is_graph_output
from mapc.passes.cleanup import NONDETERMINISTIC_OPS

#: Ops never folded: random, training-only, quantization boundaries (folding DequantizeLinear of
#: an int8 weight would silently de-quantize a QDQ model), and non-tensor (sequence/optional) values.
NEVER_FOLD = NONDETERMINISTIC_OPS | frozenset(
    {
        "Dropout",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceInsert",
        "SequenceErase",
        "SequenceAt",
        "SequenceLength",
        "SequenceMap",
        "SplitToSequence",
        "ConcatFromSequence",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
    }
)

#: Domains onnxruntime's CPU provider implements (model-local functions are added per model).
EVALUABLE_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})

#: Nodes per onnxruntime session; bounds session-creation time and memory of one batch.
MAX_BATCH_NODES = 4096


@dataclass
class Component:
    """A connected set of foldable nodes, in graph order, and the tensors to materialise."""

    nodes: list[gs.Node]
    frontier: list[gs.Variable]
    feeds: list[gs.Constant]
    estimated_bytes: int = 0


@dataclass
class FoldPlan:
    components: list[Component] = field(default_factory=list)
    #: Nodes kept because of the size guard: node -> (output bytes, guard bytes).
    too_large: list[tuple[gs.Node, int]] = field(default_factory=list)
    #: Nodes kept because folding would duplicate a weight: node -> the weight's name.
    duplicates: list[tuple[gs.Node, str]] = field(default_factory=list)


def plan_folding(
    graph: gs.Graph,
    *,
    max_bytes: int,
    duplicate_bytes: int,
    exclude: set[int],
    domains: frozenset[str],
) -> FoldPlan:
    """Choose the foldable nodes of ``graph`` (not in ``exclude``, by id) and group them."""
    plan = FoldPlan()
    foldable: dict[int, gs.Node] = {}
    produced_by_foldable: set[int] = set()
    estimates: dict[int, int | None] = {}
    for node in graph.nodes:
        if id(node) in exclude or not foldable_op(node, domains):
            continue
        reads = node_reads(node)
        if not all(is_fixed_constant(graph, t) or id(t) in produced_by_foldable for t in reads):
            continue
        outputs = [t for t in node.outputs if not t.is_empty()]
        if not outputs or pointless(graph, node):
            continue
        out_bytes = sum(estimate_bytes(t) or 0 for t in outputs)
        dying = sum(_bytes(t, estimates) for t in _distinct(reads) if _only_reader(t, node))
        if out_bytes > max_bytes and out_bytes > dying:
            plan.too_large.append((node, out_bytes))
            continue
        shared = next((t for t in _distinct(reads) if _bytes(t, estimates) > duplicate_bytes and not _only_reader(t, node)), None)
        if shared is not None and out_bytes > duplicate_bytes:
            plan.duplicates.append((node, shared.name))
            continue
        foldable[id(node)] = node
        for tensor in outputs:
            produced_by_foldable.add(id(tensor))
            estimates[id(tensor)] = estimate_bytes(tensor)
    plan.components = _components(graph, foldable, estimates)
    return plan


def batches(components: Sequence[Component], max_bytes: int) -> list[list[Component]]:
    """Split components into session batches bounded in node count and estimated bytes."""
    result: list[list[Component]] = []
    current: list[Component] = []
    nodes = size = 0
    for component in components:
        if current and (nodes + len(component.nodes) > MAX_BATCH_NODES or size + component.estimated_bytes > max_bytes):
            result.append(current)
            current, nodes, size = [], 0, 0
        current.append(component)
        nodes += len(component.nodes)
        size += component.estimated_bytes
    if current:
        result.append(current)
    return result


# -- helpers ----------------------------------------------------------------------------------------


def foldable_op(node: gs.Node, domains: frozenset[str]) -> bool:
    """A deterministic op of an evaluable domain that is not one of :data:`NEVER_FOLD`."""
    return (node.domain or "") in domains and node.op not in NEVER_FOLD


def pointless(graph: gs.Graph, node: gs.Node) -> bool:
    """Folding would rebuild the node itself: a Constant/Identity feeding graph outputs only."""
    return node.op in ("Constant", "Identity") and all(is_graph_output(graph, t) for t in node.outputs if not t.is_empty())


def node_reads(node: gs.Node) -> list[gs.Tensor]:
    """Every tensor ``node`` reads: its non-empty inputs and what its subgraphs read from outside."""
    tensors = [t for t in node.inputs if not t.is_empty()]
    for subgraph in node.subgraphs():
        tensors.extend(subgraph._foreign_tensors().values())
    return tensors


def _distinct(tensors: Iterable[gs.Tensor]) -> list[gs.Tensor]:
    return list({id(t): t for t in tensors}.values())


def is_fixed_constant(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    """An initializer whose value cannot be overridden (an initializer that is also a graph input
    is only a default)."""
    return isinstance(tensor, gs.Constant) and not is_graph_input(graph, tensor)


def _only_reader(tensor: gs.Tensor, node: gs.Node) -> bool:
    return all(reader is node for reader in tensor.outputs)


def _bytes(tensor: gs.Tensor, estimates: dict[int, int | None]) -> int:
    if isinstance(tensor, gs.Constant):
        return constant_nbytes(tensor)
    return estimates.get(id(tensor)) or 0


def estimate_bytes(tensor: gs.Tensor) -> int | None:
    """Bytes ``tensor`` will take, from its inferred dtype and static shape (None if unknown)."""
    if tensor.dtype is None or tensor.shape is None or not all(isinstance(d, int) and d >= 0 for d in tensor.shape):
        return None
    try:
        itemsize = np.dtype(tensor.dtype).itemsize
    except TypeError:
        return None
    return int(np.prod(tensor.shape, dtype=np.int64)) * max(itemsize, 1)


def _components(graph: gs.Graph, foldable: dict[int, gs.Node], estimates: dict[int, int | None]) -> list[Component]:
    parent = {key: key for key in foldable}

    def find(key: int) -> int:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for node in foldable.values():
        for tensor in node_reads(node):
            source = tensor.inputs[0] if tensor.inputs else None
            if source is not None and id(source) in foldable:
                parent[find(id(node))] = find(id(source))
    groups: dict[int, list[gs.Node]] = {}
    for node in graph.nodes:  # graph order, so each group is topologically sorted
        if id(node) in foldable:
            groups.setdefault(find(id(node)), []).append(node)
    components = []
    for nodes in groups.values():
        members = {id(n) for n in nodes}
        frontier = [
            t
            for n in nodes
            for t in n.outputs
            if not t.is_empty() and (is_graph_output(graph, t) or any(id(reader) not in members for reader in t.outputs))
        ]
        if not frontier:
            continue
        feeds = _distinct(t for n in nodes for t in node_reads(n) if isinstance(t, gs.Constant))
        size = sum(constant_nbytes(t) for t in feeds) + sum(estimates.get(id(t)) or 0 for t in frontier)
        components.append(Component(nodes, frontier, feeds, size))  # type: ignore[arg-type]
    return components
