"""Settle shape arithmetic in one topological sweep: static shapes and small values flow forward.

Exporters compute shapes from shapes: ``Shape -> Cast -> Slice -> Squeeze -> Unsqueeze -> Concat
-> Reshape``, then ``Shape`` of that ``Reshape`` again, many levels deep (tf2onnx, keras2onnx).
onnx's whole-graph inference does not follow values through all of these ops, so folding and
re-inferring in alternation settles one level per round. :func:`settle_shapes` instead walks the
graph once, in topological order, and for each node:

* ``Shape``/``Size`` of a tensor whose dims are static: the value, from the shape alone;
* a node that reads only known values (small initializers, values found earlier in the sweep),
  is deterministic and evaluable, and whose outputs onnx infers as static and at most
  ``max_bytes``: queued for evaluation in onnxruntime (its outputs are then known values);
* any node whose outputs are not all static yet: its output shapes re-inferred by onnx for this
  node alone (:func:`~mapc.ir.infer_node`), with the known values of its inputs, so a
  ``Reshape`` to a computed target, and everything after it, gets its static shape at once.

Queued nodes are evaluated together, in one session, when a later node needs their values to
be inferred (and at the end), so a deep chain costs one session per level, not per node. A
batch that fails is evaluated node by node; a node onnxruntime cannot evaluate stays, and its
readers stay with it. The sweep visits every node once and infers it at most twice (again
after a flush): linear in the graph. It only annotates shapes and reports values; the caller materialises them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Inferred, Model, OnnxRuntimeError, constant_nbytes, infer_node, is_graph_output, is_static, small_constant
from mapc.passes.check_static import SHAPE_OPERANDS
from mapc.passes.fold_plan import foldable_op, is_fixed_constant, node_reads, pointless
from mapc.passes.shape_ops import shape_op_value

#: Evaluates nodes in onnxruntime: (nodes, feeds by name, output names) -> values by name.
Evaluate = Callable[[list[gs.Node], dict[str, np.ndarray], list[str]], dict[str, np.ndarray]]

#: Nodes between two progress reports.
PROGRESS_EVERY = 512


@dataclass
class Settled:
    """What one sweep found: the nodes whose outputs are now known, in graph order, and those
    values (by tensor id); nodes onnxruntime failed to evaluate, with its message."""

    nodes: list[gs.Node] = field(default_factory=list)
    values: dict[int, np.ndarray] = field(default_factory=dict)
    failures: list[tuple[gs.Node, str]] = field(default_factory=list)
    shape_ops: int = 0

    def frontier(self, graph: gs.Graph) -> list[gs.Variable]:
        """Known tensors something outside the settled nodes reads, or that are graph outputs."""
        members = {id(n) for n in self.nodes}
        return [
            t for n in self.nodes for t in n.outputs
            if id(t) in self.values and (is_graph_output(graph, t) or any(id(r) not in members for r in t.outputs))
        ]


def settle_shapes(
    model: Model,
    evaluate: Evaluate,
    *,
    max_bytes: int,
    exclude: set[int],
    domains: frozenset[str],
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Settled:
    """One topological sweep over ``model.graph`` (see the module doc). Nodes in ``exclude`` (by
    id) are never evaluated; values above ``max_bytes`` are neither read nor produced."""
    return _Sweep(model, evaluate, max_bytes, exclude, domains).run(progress)


class _Sweep:
    def __init__(self, model: Model, evaluate: Evaluate, max_bytes: int, exclude: set[int], domains: frozenset[str]) -> None:
        self.model = model
        self.graph = model.graph
        self.evaluate = evaluate
        self.max_bytes = max_bytes
        self.exclude = exclude
        self.domains = domains
        self.opsets = dict(model.opset_imports)
        self.result = Settled()
        self.pending: list[gs.Node] = []
        self.pending_outputs: set[int] = set()

    def run(self, progress: Callable[[int, int], None]) -> Settled:
        nodes = list(self.graph.nodes)
        for index, node in enumerate(nodes):
            self._visit(node)
            if index % PROGRESS_EVERY == PROGRESS_EVERY - 1:
                progress(index + 1, len(nodes))
        self._flush()
        settled = {id(n) for n in self.result.nodes}
        self.result.nodes = [n for n in nodes if id(n) in settled]
        return self.result

    def _visit(self, node: gs.Node) -> None:
        value = shape_op_value(node)
        if value is not None and node.outputs and not node.outputs[0].is_empty():
            self._settle(node, {node.outputs[0].name: value})
            self.result.shape_ops += 1
            return
        reads = node_reads(node)
        candidate = self._candidate(node, reads)
        if not candidate and any(id(t) in self.pending_outputs for t in reads):
            self._flush()
        inferred = _annotated(node) or self._infer(node)
        if candidate and not _static_outputs(node, inferred) and any(id(t) in self.pending_outputs for t in reads):
            self._flush()  # the output shape depends on values still queued
            inferred = self._infer(node)
        if candidate and _static_outputs(node, inferred) and _bytes(inferred) <= self.max_bytes:
            self.pending.append(node)
            self.pending_outputs.update(id(t) for t in node.outputs)
        if inferred is not None:
            self._annotate(node, inferred)

    def _candidate(self, node: gs.Node, reads: Sequence[gs.Tensor]) -> bool:
        """Deterministic, evaluable, and reading only values known now or queued."""
        if id(node) in self.exclude or not foldable_op(node, self.domains) or pointless(self.graph, node):
            return False
        if not [t for t in node.outputs if not t.is_empty()]:
            return False
        return all(id(t) in self.pending_outputs or self._readable(t) for t in reads)

    def _readable(self, tensor: gs.Tensor) -> bool:
        """Known, or a small initializer (judged without loading it)."""
        if id(tensor) in self.result.values:
            return True
        return is_fixed_constant(self.graph, tensor) and constant_nbytes(tensor) <= self.max_bytes  # type: ignore[arg-type]

    def _value(self, tensor: gs.Tensor) -> np.ndarray | None:
        """The value of a known tensor or a small initializer (loads the initializer)."""
        known = self.result.values.get(id(tensor))
        if known is not None or not is_fixed_constant(self.graph, tensor):
            return known
        return small_constant(tensor, self.max_bytes)

    def _infer(self, node: gs.Node) -> list[Inferred] | None:
        """onnx's inference for this node, told the values found in the sweep and those of small
        initializers in the positions whose values set the output shape (a ``Reshape`` target,
        ``Resize`` scales); no other weight is loaded for it."""
        operands = SHAPE_OPERANDS.get(node.op, ())
        values = {}
        for position, tensor in enumerate(node.inputs):
            if tensor.is_empty():
                continue
            if id(tensor) in self.result.values or (position in operands and self._readable(tensor)):
                values[tensor.name] = self._value(tensor)
        return infer_node(node, self.opsets, self.model.ir_version, values)

    def _annotate(self, node: gs.Node, inferred: list[Inferred]) -> None:
        """Static dims onnx found win; elsewhere the annotation stays (names carry what onnx
        cannot rediscover)."""
        for tensor, (dtype, shape) in zip(node.outputs, inferred):
            if tensor.is_empty() or isinstance(tensor, gs.Constant):
                continue
            if tensor.dtype is None and dtype is not None:
                tensor.dtype = dtype
            tensor.shape = _refine(tensor.shape, shape)

    def _settle(self, node: gs.Node, values: Mapping[str, np.ndarray]) -> None:
        self.result.nodes.append(node)
        for tensor in node.outputs:
            if tensor.name in values:
                value = np.asarray(values[tensor.name])
                self.result.values[id(tensor)] = value
                if not isinstance(tensor, gs.Constant):
                    tensor.dtype, tensor.shape = value.dtype, list(value.shape)

    def _flush(self) -> None:
        """Evaluate the queued nodes, in one session if onnxruntime takes them all."""
        batch, self.pending, self.pending_outputs = self.pending, [], set()
        if not batch:
            return
        try:
            results = self._run(batch)
        except OnnxRuntimeError:
            for node in batch:
                if all(self._readable(t) for t in node_reads(node)):
                    try:
                        self._settle(node, self._run([node]))
                    except OnnxRuntimeError as error:
                        self.result.failures.append((node, str(error)))
            return
        for node in batch:
            self._settle(node, results)

    def _run(self, nodes: list[gs.Node]) -> dict[str, np.ndarray]:
        produced = {id(t) for n in nodes for t in n.outputs}
        feeds = {t.name: self._value(t) for n in nodes for t in node_reads(n) if id(t) not in produced}
        outputs = [t.name for n in nodes for t in n.outputs if not t.is_empty()]
        return self.evaluate(nodes, feeds, outputs)  # type: ignore[arg-type]


def _annotated(node: gs.Node) -> list[Inferred] | None:
    """The outputs' annotated dtypes and shapes when all are known and static (inferred for the
    graph as it is: nothing to learn by inferring again), else None."""
    known: list[Inferred] = []
    for tensor in node.outputs:
        if tensor.is_empty():
            known.append((None, None))
        elif tensor.dtype is None or not is_static(tensor.shape):
            return None
        else:
            try:
                known.append((np.dtype(tensor.dtype), list(tensor.shape)))
            except TypeError:  # an onnx type numpy does not name (bfloat16, float8): ask onnx
                return None
    return known


def _static_outputs(node: gs.Node, inferred: list[Inferred] | None) -> bool:
    """onnx inferred a dtype and a static shape for every output the node writes."""
    return inferred is not None and all(
        dtype is not None and is_static(shape) for tensor, (dtype, shape) in zip(node.outputs, inferred) if not tensor.is_empty()
    )


def _bytes(inferred: list[Inferred]) -> int:
    """Bytes the inferred (static) outputs take."""
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize for dtype, shape in inferred if shape is not None and dtype is not None)


def _refine(old: Sequence | None, new: list | None) -> list | None:
    """``new``'s static dims over ``old``; where ``new`` knows less, or the ranks disagree, ``old``."""
    if new is None:
        return None if old is None else list(old)
    if old is None or len(old) != len(new):
        return new if old is None else list(old)
    return [n if isinstance(n, int) else o for o, n in zip(old, new)]
