"""``fold-constants``: evaluate constant subgraphs in onnxruntime and keep only their results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, OnnxRuntimeError, constant_nbytes, is_default_domain, is_graph_output, remove_nodes, run_nodes
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.constants import replace_with_constant
from mapc.passes.facts import Fact
from mapc.passes.fold_if import inline_constant_ifs
from mapc.passes.fold_plan import (
    EVALUABLE_DOMAINS,
    Component,
    batches,
    estimate_bytes,
    node_reads,
    plan_folding,
)
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES, ensure_shapes
from mapc.passes.shape_sweep import settle_shapes

_MB = 1 << 20


@dataclass
class FoldMemory:
    """What fold-constants learnt in earlier rounds of this compile."""

    #: Nodes (by name, op and input names) onnxruntime failed to evaluate: not tried again.
    failed: set[tuple[str, str, tuple[str, ...]]] = field(default_factory=set)
    #: Notes already given (a note is not repeated every fixpoint round).
    noted: set[Any] = field(default_factory=set)

    def first_time(self, key: Any) -> bool:
        """True the first time ``key`` is noted in this compile."""
        if key in self.noted:
            return False
        self.noted.add(key)
        return True


def _start_memory(model: Model, ctx: PassContext) -> None:
    ctx.facts.setdefault(FOLD_MEMORY, FoldMemory())


FOLD_MEMORY: Fact[FoldMemory] = Fact("fold-memory", "what fold-constants learnt in earlier rounds", establish=_start_memory)


@register_pass
class FoldConstants(Pass):
    """Evaluate every node whose inputs are all constant and replace its results by initializers.

    Matches: nodes reading only initializers (not overridable graph inputs) or outputs of other
    foldable nodes, in any ONNX op onnxruntime evaluates (Range, ConstantOfShape, Expand, Trilu,
    Where, comparisons and boolean ops, Gather/GatherND/ScatterND, Cast, arithmetic, If with
    constant inputs...); ``Constant`` nodes; ``Shape``/``Size`` of tensors whose shape is static
    (answered from the shape, the tensor is never read). An ``If`` whose condition is constant
    is replaced by the nodes of the branch it takes. Never folded: random ops, Dropout,
    Quantize/DequantizeLinear (a QDQ model stays quantized), sequence and optional ops, and
    custom-domain ops other than onnxruntime's ``com.microsoft`` and the model's own functions.

    First, one topological sweep settles the shape arithmetic: Shape/Size of static tensors,
    small constant nodes evaluated as they become constant (results up to ``duplicate_kb``),
    and each node's shapes re-inferred with the values found so far, so a Reshape to a computed
    target and the Shape of its output settle in the same pass, however deep the chain.

    Then each connected constant subgraph is evaluated as a unit, many of them per onnxruntime
    session; only the tensors read outside it become initializers (named like the tensors they
    replace). If a session fails, the batch is split until the failing node is isolated: that
    node stays with a note and everything around it still folds.

    Guards: an output above ``max_size_mb`` is not materialised unless it replaces at least as
    many bytes of constants read only by it; a node reading a constant above ``duplicate_kb``
    that others also read (a shared weight) folds only if its output is that small, so weights
    are never duplicated. Weights are read only when a foldable node consumes them.
    """

    name = "fold-constants"
    requires = (SHAPES, FOLD_MEMORY)

    @dataclass
    class Options:
        #: Largest constant (MB) to materialise, unless it replaces larger constants.
        max_size_mb: float = 16.0
        #: Largest result (KB) that may be computed from a weight something else also reads.
        duplicate_kb: float = 64.0

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        memory = ctx.facts[FOLD_MEMORY]
        counters = dict.fromkeys(
            ("nodes_folded", "constants_created", "shape_ops_replaced", "ifs_inlined", "sessions", "eval_failed", "kept_too_large", "kept_shared_weight"), 0
        )
        notes: list[Note] = []
        counters["ifs_inlined"] = inline_constant_ifs(model)
        if counters["ifs_inlined"]:
            ensure_shapes(model, ctx)
        constant_nodes = _inline_constant_nodes(model)
        counters["nodes_folded"] += constant_nodes
        counters["constants_created"] += constant_nodes
        max_bytes = int(self.options.max_size_mb * _MB)
        exclude: set[int] = {id(n) for n in model.graph.nodes if _key(n) in memory.failed}
        domains = EVALUABLE_DOMAINS | {f.domain for f in model.functions}
        evaluator = _Evaluator(model, ctx, counters)
        failures: list[tuple[gs.Node, str]] = []
        settled = settle_shapes(model, evaluator.run, max_bytes=min(max_bytes, int(self.options.duplicate_kb * 1024)), exclude=exclude, domains=domains,
                                progress=lambda done, total: ctx.report_progress("settling shapes", done, total))
        failures.extend(settled.failures)
        exclude.update(id(node) for node, _ in settled.failures)
        counters["shape_ops_replaced"] = settled.shape_ops
        folded, created = _materialize(model, [Component(settled.nodes, settled.frontier(model.graph), [])], settled.values)
        counters["nodes_folded"] += folded
        counters["constants_created"] += created
        oversized: list[tuple[gs.Node, int]] = []
        while True:
            plan = plan_folding(model.graph, max_bytes=max_bytes, duplicate_bytes=int(self.options.duplicate_kb * 1024), exclude=exclude, domains=domains)
            values = evaluator.evaluate(plan.components, failures, batch_bytes=max(256 * _MB, 4 * max_bytes))
            exclude.update(id(node) for node, _ in failures)
            found = _oversized(plan.components, values, max_bytes)
            if not found:
                break
            oversized.extend(found)  # their shapes were unknown before evaluation: plan again without them
            exclude.update(id(node) for node, _ in found)
        plan.too_large.extend(oversized)
        for node, message in failures:
            memory.failed.add(_key(node))
            counters["eval_failed"] += 1
            notes.append(Note("fold-constants.eval-failed", f"onnxruntime cannot evaluate this {node.op} ({message}); it stays, and folding continued around it",
                              node=node.name, severity="warning"))
        for node, size in plan.too_large:
            counters["kept_too_large"] += 1
            if memory.first_time(("large", _key(node))):
                notes.append(Note("fold-constants.too-large", f"kept {node.op}: its result would be {size / _MB:.1f} MB, above max_size_mb={self.options.max_size_mb:g}",
                                  node=node.name, fix="raise fold-constants{max_size_mb=...} to fold it"))
        for node, weight in plan.duplicates:
            counters["kept_shared_weight"] += 1
            if memory.first_time(("shared", _key(node))):
                notes.append(Note("fold-constants.shared-weight", f"kept {node.op}: folding would duplicate weight {weight!r}, which other nodes also read", node=node.name))
        folded, created = _materialize(model, plan.components, values)
        counters["nodes_folded"] += folded
        counters["constants_created"] += created
        changed = bool(counters["nodes_folded"] or counters["ifs_inlined"])
        return PassResult(changed=changed, counters=counters, notes=notes)


class _Evaluator:
    """Runs components through onnxruntime, splitting batches that fail."""

    def __init__(self, model: Model, ctx: PassContext, counters: dict[str, int]) -> None:
        self.model = model
        self.ctx = ctx
        self.counters = counters
        self.opsets = dict(model.opset_imports)
        self.done = 0
        self.total = 0

    def evaluate(self, components: Sequence[Component], failures: list[tuple[gs.Node, str]], *, batch_bytes: int) -> dict[int, np.ndarray]:
        """Values of the frontier tensors (by tensor id); nodes that fail are added to ``failures``
        and their components shrink to what could be evaluated."""
        values: dict[int, np.ndarray] = {}
        self.done, self.total = 0, sum(len(c.nodes) for c in components)
        for batch in batches(components, batch_bytes):
            self._batch(batch, values, failures)
        return values

    def _batch(self, batch: list[Component], values: dict[int, np.ndarray], failures: list[tuple[gs.Node, str]]) -> None:
        nodes = [n for c in batch for n in c.nodes]
        frontier = [t for c in batch for t in c.frontier]
        feeds = {t.name: t.values for c in batch for t in c.feeds}
        try:
            results = self.run(nodes, feeds, [t.name for t in frontier])
        except OnnxRuntimeError:
            if len(batch) > 1:
                half = len(batch) // 2
                self._batch(batch[:half], values, failures)
                self._batch(batch[half:], values, failures)
            else:
                self._node_by_node(batch[0], values, failures)
            return
        for tensor in frontier:
            values[id(tensor)] = results[tensor.name]
        self._progress(len(nodes))

    def _node_by_node(self, component: Component, values: dict[int, np.ndarray], failures: list[tuple[gs.Node, str]]) -> None:
        """Evaluate a failing component one node at a time; a failed node's dependents stay too."""
        known: dict[int, np.ndarray] = {}
        blocked: set[int] = set()
        evaluated: list[gs.Node] = []
        for node in component.nodes:
            reads = node_reads(node)
            if any(id(t) in blocked for t in reads):
                blocked.update(id(t) for t in node.outputs)
                continue
            feeds = {t.name: (t.values if isinstance(t, gs.Constant) else known[id(t)]) for t in reads}
            outputs = [t for t in node.outputs if not t.is_empty()]
            try:
                results = self.run([node], feeds, [t.name for t in outputs])
            except OnnxRuntimeError as error:
                failures.append((node, _reason(str(error))))
                blocked.update(id(t) for t in node.outputs)
                continue
            for tensor in outputs:
                known[id(tensor)] = results[tensor.name]
            evaluated.append(node)
        members = {id(n) for n in evaluated}
        component.nodes = evaluated
        component.frontier = [
            t for n in evaluated for t in n.outputs
            if not t.is_empty() and (is_graph_output(self.model.graph, t) or any(id(r) not in members for r in t.outputs))
        ]
        for tensor in component.frontier:
            values[id(tensor)] = known[id(tensor)]
        self._progress(len(component.nodes))

    def run(self, nodes: list[gs.Node], feeds: dict[str, Any], outputs: list[str]) -> dict[str, np.ndarray]:
        """Evaluate ``nodes`` in one session (counted); :class:`OnnxRuntimeError` if it fails."""
        self.counters["sessions"] += 1
        opsets = dict(self.opsets)
        for node in nodes:
            opsets.setdefault(node.domain or "", 1)
        results = run_nodes(nodes, feeds, outputs, opset_imports=opsets, ir_version=self.model.ir_version, functions=self.model.functions)
        for name, value in results.items():
            if not isinstance(value, np.ndarray):
                raise OnnxRuntimeError(f"{name} is not a tensor")
        return results

    def _progress(self, count: int) -> None:
        self.done += count
        self.ctx.report_progress("folding constants", self.done, self.total)


def _materialize(model: Model, components: Sequence[Component], values: dict[int, np.ndarray]) -> tuple[int, int]:
    """Replace frontier tensors by initializers and drop the nodes left without readers."""
    graph = model.graph
    created = 0
    folded: list[gs.Node] = []
    for component in components:
        if any(id(t) not in values for t in component.frontier):
            continue
        for tensor in component.frontier:
            replace_with_constant(model, tensor, values[id(tensor)])
            created += 1
        folded.extend(component.nodes)
    outputs = {id(t) for t in graph.outputs}
    doomed: set[int] = set()
    for node in reversed(folded):  # readers first, so a whole chain goes
        if not any(id(t) in outputs or any(id(r) not in doomed for r in t.outputs) for t in node.outputs):
            doomed.add(id(node))
    return remove_nodes(graph, [n for n in folded if id(n) in doomed]), created


def _inline_constant_nodes(model: Model) -> int:
    """Turn ``Constant`` nodes holding a tensor into initializers (no evaluation, no copy)."""
    graph = model.graph
    inlined = []
    for node in graph.nodes:
        if node.op != "Constant" or not is_default_domain(node) or not isinstance(node.attrs.get("value"), gs.Constant):
            continue
        output = node.outputs[0]
        if is_graph_output(graph, output):
            continue
        replace_with_constant(model, output, node.attrs["value"]._values)
        inlined.append(node)
    doomed = {id(n) for n in inlined}
    for node in inlined:
        node.outputs.clear()
    graph.nodes = [n for n in graph.nodes if id(n) not in doomed]
    return len(inlined)


def _oversized(components: Sequence[Component], values: dict[int, np.ndarray], max_bytes: int) -> list[tuple[gs.Node, int]]:
    """Producers of frontier results whose size was unknown before evaluation and turned out
    above the guard, without replacing as many bytes of constants read only by them."""
    found = []
    for component in components:
        for tensor in component.frontier:
            value = values.get(id(tensor))
            if value is None or value.nbytes <= max_bytes or estimate_bytes(tensor) is not None or not tensor.inputs:
                continue
            source = tensor.inputs[0]
            dying = sum(constant_nbytes(t) for t in node_reads(source) if isinstance(t, gs.Constant) and all(r is source for r in t.outputs))
            if value.nbytes > dying:
                found.append((source, int(value.nbytes)))
    return found


def _key(node: gs.Node) -> tuple[str, str, tuple[str, ...]]:
    return (node.name, node.op, tuple(t.name for t in node.inputs))




def _reason(message: str) -> str:
    """onnxruntime's own words, without mapc's "onnxruntime failed to ...:" prefix."""
    return message.split(": ", 1)[-1] if message.startswith("onnxruntime") else message
