"""Cost-aware partitioning: which nodes run on the target, grouped into acyclic partitions.

:func:`plan_partitions` works on atomic units (:mod:`mapc.targets.units`), never splitting one:

1. **Schedule.** A topological order that prefers the current device (Kahn's algorithm that
   keeps taking ready units of one device until none is left, then switches) turns the graph
   into alternating runs; each run of supported units is a candidate partition. A run of a
   topological order is convex, so no partition can close a cycle. Both starting devices are
   tried and the one giving fewer partitions kept.
2. **Merge.** Partitions are merged pairwise (horizontal siblings, branches the schedule put
   apart) while the contracted graph stays acyclic: with ancestor and descendant bitsets of the
   contracted graph, computed in one pass in topological order, merging A and B is refused
   when A reaches B (or B reaches A) through any third vertex. Each merge recomputes the
   bitsets once (``O(V·P/64)`` for V vertices and P partitions); no pair is checked by search.
3. **Cost.** Each partition's estimated gain is its nodes' CPU time minus their time on the
   target, its dispatch overhead and the transfer of every tensor crossing its boundary
   (:mod:`mapc.targets.cost`). Partitions that do not pay, that have fewer than
   ``min_partition_ops`` ops, or that exceed ``max_partitions`` (least gain first) go back to
   the CPU with a reason, and steps 1-3 repeat until nothing changes.

The result is a :class:`Plan`: segments in execution order (partitions on the target and runs
of CPU nodes), every fallback node with its reasons, and the estimate.

The :class:`Partition` pass (``partition{target=npu}``) runs :func:`plan_partitions` without
changing the model (it annotates shapes) and leaves the plan in ``ctx.facts[PARTITION_PLAN]`` for the
``lower`` pass (:mod:`mapc.targets.lower`) and for the report.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import onnx_graphsurgeon as gs

from mapc.ir import Model, Note, UsageError, toposort
from mapc.passes import Fact, Pass, PassContext, PassResult, flag, register_pass
from mapc.targets.builtin import DEFAULT_TARGET
from mapc.targets.cost import Work, node_seconds, node_work, tensor_bytes, transfer_seconds
from mapc.targets.registry import get_target
from mapc.targets.spec import Target
from mapc.targets.support import NodeSupport, check_support, validate_cpu_ops
from mapc.targets.units import Unit, atomic_units
from mapc.targets.views import ModelView, is_constant, view_model

#: Above this many candidate partitions the merge step is skipped (the schedule is already acyclic).
MERGE_LIMIT = 4096
#: Ops that do no work of their own; they do not count towards ``min_partition_ops``.
FREE_OPS = frozenset({"Constant", "Identity"})


Progress = Callable[[str, "int | None", "int | None"], None]
SupportOverride = Callable[[ModelView, Target], "list[NodeSupport]"]


@dataclass(frozen=True)
class PartitionOptions:
    """User controls of partitioning, declared once: the partition pass's options and their flags."""

    min_partition_ops: int = field(default=1, metadata=flag(
        "--min-partition-ops", "partitions with fewer ops stay on the CPU (default 1)", metavar="N", requires="--target"))
    max_partitions: int | None = field(default=None, metadata=flag(
        "--max-partitions", "keep at most N partitions, those with the largest estimated gain", metavar="N", requires="--target"))
    cpu_ops: tuple[str, ...] = field(default=(), metadata=flag(
        "--cpu-ops", "op types forced onto the CPU, e.g. Softmax,Resize", metavar="OP,...", requires="--target"))
    cost_model: bool = field(default=True, metadata=flag(
        "--cost-model", "keep every supported partition even when the estimate says it does not pay",
        negative="--no-cost-model", requires="--target"))

    def as_dict(self) -> dict[str, Any]:
        """The options as a compiled model's ``mapc.partition_options`` metadata records them."""
        return {
            "min_partition_ops": self.min_partition_ops,
            "max_partitions": self.max_partitions,
            "cpu_ops": list(self.cpu_ops),
            "cost_model": self.cost_model,
        }


@dataclass
class Segment:
    """Consecutive work on one device: a partition on the target, or a run of CPU nodes."""

    id: int
    device: str
    nodes: list[int]
    inputs: list[gs.Tensor] = field(default_factory=list)
    outputs: list[gs.Tensor] = field(default_factory=list)
    macs: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    seconds: float = 0.0
    transfer_seconds: float = 0.0
    cpu_seconds: float = 0.0
    lowered: bool = False
    function: str | None = None

    @property
    def on_target(self) -> bool:
        return self.device != "cpu"

    @property
    def gain_seconds(self) -> float:
        return self.cpu_seconds - self.seconds - self.transfer_seconds


@dataclass
class Estimate:
    """Totals of the cost model, in seconds (estimates, not measurements)."""

    target_seconds: float
    cpu_only_seconds: float
    transfer_seconds: float
    accelerator_seconds: float
    fallback_seconds: float
    dispatch_seconds: float
    assumed_dims: bool


@dataclass
class Plan:
    """Where every node runs, and why the ones on the CPU are there."""

    target: Target
    options: PartitionOptions
    model_view: ModelView
    support: list[NodeSupport]
    units: list[Unit]
    segments: list[Segment]
    reasons: dict[int, list[Note]]
    work: list[Work]
    readers: list[list[int]]
    estimate: Estimate
    rounds: int

    @property
    def partitions(self) -> list[Segment]:
        """Segments on the target that mapc lowers (already-lowered ones excluded)."""
        return [s for s in self.segments if s.on_target and not s.lowered]

    def device_of(self) -> dict[int, Segment]:
        return {node: segment for segment in self.segments for node in segment.nodes}


#: The plan the partition pass leaves for ``lower`` and for the report.
PARTITION_PLAN: Fact[Plan] = Fact("partition-plan", "the partition plan", provided_by="partition")


def plan_partitions(
    model: Model,
    target: Target,
    options: PartitionOptions = PartitionOptions(),
    *,
    dims: Mapping[str, int] | None = None,
    support: SupportOverride | None = None,
    progress: Progress | None = None,
) -> Plan:
    """Decide the placement of every top-level node of ``model`` on ``target`` (see module doc).

    For a target whose runtime forms the partitions itself (``lowering`` none: the QNN EP takes
    every node unit it supports), the plan predicts that runtime, so the cost model and
    ``min_partition_ops``, which it does not apply, are off.
    """
    report = progress or (lambda *args: None)
    if target.lowering == "none":
        options = dataclasses.replace(options, cost_model=False, min_partition_ops=1)
    toposort(model.graph)
    report("inferring shapes", None, None)
    model_view = view_model(model)
    if support is not None:
        verdicts = support(model_view, target)
    else:
        verdicts = check_support(model_view, target, cpu_ops=options.cpu_ops, progress=progress)
    graph = _Graph(model.graph, model_view, target, dict(dims or {}))
    units = atomic_units(model.graph, target.ops.fused_patterns) if not target.is_host else [
        Unit(i, [i], "node", i) for i in range(len(model.graph.nodes))
    ]
    reasons: dict[int, list[Note]] = {i: list(v.reasons) for i, v in enumerate(verdicts) if v.reasons}
    eligible = _eligible_units(units, verdicts, reasons, model_view, target)
    pinned = {u.index for u in units if all(verdicts[m].lowered for m in u.members)}
    if pinned:
        _keep_existing_partitions(units, eligible, reasons, target)
    unit_graph = _UnitGraph(units, graph.readers)

    rounds = 0
    while True:
        rounds += 1
        report(f"partitioning (round {rounds})", None, None)
        groups = _schedule(unit_graph, eligible, pinned)
        if len(groups) <= MERGE_LIMIT:
            groups = _merge(unit_graph, groups, eligible, pinned)
        demoted = _demote(groups, units, graph, options, reasons, target)
        if not demoted:
            break
        for unit in demoted:
            eligible[unit] = False

    segments = _segments(unit_graph, groups, pinned, units, graph, target)
    estimate = _estimate(segments, graph, target)
    return Plan(target, options, model_view, verdicts, units, segments, reasons, graph.work, graph.readers, estimate, rounds)


# -- graph bookkeeping --------------------------------------------------------------------------------


class _Graph:
    """Per-node dependencies, tensors read and written, and cost on both devices."""

    def __init__(self, graph: gs.Graph, model_view: ModelView, target: Target, dims: dict[str, int]) -> None:
        self.graph = graph
        self.model_view = model_view
        self.dims = dims
        self.work = [node_work(node, dims) for node in model_view.nodes]
        host = target.host_performance
        self.cpu_seconds = [node_seconds(work, host) for work in self.work]
        accelerator = None if target.is_host else target
        self.target_seconds = [node_seconds(work, target.performance, accelerator) for work in self.work]
        self.reads: list[list[gs.Tensor]] = []
        self.producer: dict[int, int] = {}
        self.readers_of: dict[int, set[int]] = {}
        nested: list[list[gs.Node]] = []
        for index, node in enumerate(graph.nodes):
            nested.append([inner for subgraph in node.subgraphs() for inner in _nested_nodes(subgraph)])
            for tensor in node.outputs:
                self.producer[id(tensor)] = index
        outer = {id(t) for t in graph.inputs} | set(self.producer) | {id(t) for t in graph.tensors().values() if isinstance(t, gs.Constant)}
        for index, node in enumerate(graph.nodes):
            seen: dict[int, gs.Tensor] = {id(t): t for t in node.inputs if t.name}
            for inner in nested[index]:  # tensors a subgraph reads from this scope
                seen.update((id(t), t) for t in inner.inputs if id(t) in outer)
            self.reads.append(list(seen.values()))
            for key in seen:
                self.readers_of.setdefault(key, set()).add(index)
        following: list[set[int]] = [set() for _ in graph.nodes]
        for key, readers in self.readers_of.items():
            source = self.producer.get(key)
            if source is not None:
                following[source].update(r for r in readers if r != source)
        self.readers = [sorted(f) for f in following]
        self.graph_outputs = {id(t) for t in graph.outputs}

    def boundary(self, members: Iterable[int]) -> tuple[list[gs.Tensor], list[gs.Tensor]]:
        """Tensors a set of nodes reads from outside it, and those it produces for outside."""
        inside = set(members)
        inputs: dict[int, gs.Tensor] = {}
        outputs: dict[int, gs.Tensor] = {}
        for index in sorted(inside):
            for tensor in self.reads[index]:
                if self.producer.get(id(tensor)) not in inside:
                    inputs.setdefault(id(tensor), tensor)
            for tensor in self.graph.nodes[index].outputs:
                if not tensor.name:
                    continue
                outside = self.readers_of.get(id(tensor), set()) - inside
                if outside or id(tensor) in self.graph_outputs:
                    outputs.setdefault(id(tensor), tensor)
        return list(inputs.values()), list(outputs.values())

    def moved_bytes(self, tensors: Iterable[gs.Tensor]) -> int:
        """Bytes that cross the host-device link: weights are compiled in and never move."""
        return sum(tensor_bytes(self.model_view.describe(t), self.dims) for t in tensors if not is_constant(t))


def _nested_nodes(graph: gs.Graph) -> list[gs.Node]:
    nodes = list(graph.nodes)
    for node in graph.nodes:
        for subgraph in node.subgraphs():
            nodes.extend(_nested_nodes(subgraph))
    return nodes


class _UnitGraph:
    """The DAG of atomic units: successors, predecessor counts, and each node's unit."""

    def __init__(self, units: list[Unit], readers: list[list[int]]) -> None:
        self.units = units
        self.unit_of = {member: unit.index for unit in units for member in unit.members}
        successors: list[dict[int, None]] = [{} for _ in units]
        for unit in units:
            for member in unit.members:
                for reader in readers[member]:
                    other = self.unit_of[reader]
                    if other != unit.index:
                        successors[unit.index][other] = None
        self.successors = [list(s) for s in successors]
        self.predecessors: list[list[int]] = [[] for _ in units]
        for index, succ in enumerate(self.successors):
            for other in succ:
                self.predecessors[other].append(index)


def _eligible_units(
    units: list[Unit], verdicts: list[NodeSupport], reasons: dict[int, list[Note]], model_view: ModelView, target: Target
) -> list[bool]:
    """Units whose members are all supported; members of the others get a reason naming the culprit."""
    eligible = []
    for unit in units:
        if target.is_host:
            eligible.append(False)
            continue
        blocked = [m for m in unit.members if not verdicts[m].supported]
        eligible.append(not blocked and not any(verdicts[m].lowered for m in unit.members))
        if not blocked:
            continue
        culprit = model_view.nodes[blocked[0]]
        for member in unit.members:
            if not verdicts[member].supported:
                continue
            if unit.kind == "node":  # a Constant that follows its only reader
                message = f"a Constant stays with its only reader {culprit.label!r} ({culprit.op}), which cannot run on {target.name}"
            else:
                message = (
                    f"part of the {unit.kind} of {model_view.nodes[unit.anchor].label!r}, which is never split, "
                    f"and its member {culprit.label!r} ({culprit.op}) cannot run on {target.name}"
                )
            reasons.setdefault(member, []).append(Note("unit.member-unsupported", message))
    return eligible


def _keep_existing_partitions(units: list[Unit], eligible: list[bool], reasons: dict[int, list[Note]], target: Target) -> None:
    """A model compiled before keeps its partitions and gets no new ones (compiling is idempotent)."""
    reason = Note(
        "partition.already-compiled",
        f"the model already holds partitions for {target.name}; mapc does not partition a compiled model again",
        fix="compile the original model instead",
    )
    for unit in units:
        if eligible[unit.index]:
            eligible[unit.index] = False
            _record(reason, unit.members, reasons)


# -- 1. schedule ------------------------------------------------------------------------------------------


def _schedule(unit_graph: _UnitGraph, eligible: list[bool], pinned: set[int]) -> list[list[int]]:
    """Candidate partitions: runs of eligible units in a device-preferring topological order."""
    best: list[list[int]] | None = None
    for start_on_target in (True, False):
        runs = _runs(unit_graph, eligible, pinned, start_on_target)
        if best is None or len(runs) < len(best):
            best = runs
    return best or []


def _runs(unit_graph: _UnitGraph, eligible: list[bool], pinned: set[int], start_on_target: bool) -> list[list[int]]:
    count = len(unit_graph.units)
    waiting = [len(p) for p in unit_graph.predecessors]
    ready: dict[bool, list[int]] = {True: [], False: []}
    for unit in range(count):
        if waiting[unit] == 0:
            heapq.heappush(ready[eligible[unit] and unit not in pinned], unit)
    on_target = start_on_target
    runs: list[list[int]] = []
    current: list[int] | None = None
    while ready[True] or ready[False]:
        if not ready[on_target]:
            on_target = not on_target
            current = None
        unit = heapq.heappop(ready[on_target])
        if on_target:
            if current is None:
                current = []
                runs.append(current)
            current.append(unit)
        for other in unit_graph.successors[unit]:
            waiting[other] -= 1
            if waiting[other] == 0:
                heapq.heappush(ready[eligible[other] and other not in pinned], other)
    return runs


# -- 2. merge ---------------------------------------------------------------------------------------------


def _merge(unit_graph: _UnitGraph, groups: list[list[int]], eligible: list[bool], pinned: set[int]) -> list[list[int]]:
    """Merge partitions pairwise while the contracted graph stays acyclic (see module doc)."""
    groups = [list(g) for g in groups]
    while len(groups) > 1:
        pair = _mergeable_pair(unit_graph, groups)
        if pair is None:
            return groups
        first, second = pair
        groups[first] = sorted(groups[first] + groups[second])
        del groups[second]
    return groups


def _mergeable_pair(unit_graph: _UnitGraph, groups: list[list[int]]) -> tuple[int, int] | None:
    group_of = {unit: g for g, members in enumerate(groups) for unit in members}
    vertex_of = [group_of.get(u, len(groups) + u) for u in range(len(unit_graph.units))]
    contracted = nx.DiGraph()
    contracted.add_nodes_from(range(len(groups) + len(unit_graph.units)))
    for unit, successors in enumerate(unit_graph.successors):
        for other in successors:
            if vertex_of[unit] != vertex_of[other]:
                contracted.add_edge(vertex_of[unit], vertex_of[other])
    order = list(nx.topological_sort(contracted))
    own = {v: (1 << v) if v < len(groups) else 0 for v in contracted.nodes}
    ancestors: dict[int, int] = {}
    for vertex in order:
        bits = 0
        for source in contracted.predecessors(vertex):
            bits |= ancestors[source] | own[source]
        ancestors[vertex] = bits
    descendants: dict[int, int] = {}
    for vertex in reversed(order):
        bits = 0
        for sink in contracted.successors(vertex):
            bits |= descendants[sink] | own[sink]
        descendants[vertex] = bits
    everything = (1 << len(groups)) - 1
    for second in range(1, len(groups)):
        # reachable from `second` only through another vertex -> merging would close a cycle
        far_above = 0
        for source in contracted.predecessors(second):
            far_above |= ancestors[source]
        far_below = 0
        for sink in contracted.successors(second):
            far_below |= descendants[sink]
        candidates = everything & ~far_above & ~far_below & ((1 << second) - 1)
        if candidates:
            neighbours = sum(1 << v for v in [*contracted.predecessors(second), *contracted.successors(second)] if v < len(groups))
            chosen = candidates & neighbours or candidates
            return (chosen & -chosen).bit_length() - 1, second
    return None


# -- 3. cost ----------------------------------------------------------------------------------------------


def _group_costs(members: list[int], graph: _Graph, target: Target) -> tuple[float, float, float]:
    """(CPU seconds, target seconds with dispatch, transfer seconds) of one candidate partition."""
    cpu = sum(graph.cpu_seconds[i] for i in members)
    device = sum(graph.target_seconds[i] for i in members) + target.performance.dispatch_us * 1e-6
    inputs, outputs = graph.boundary(members)
    moved = graph.moved_bytes(inputs) + graph.moved_bytes(outputs)
    return cpu, device, transfer_seconds(moved, target)


def _demote(
    groups: list[list[int]],
    units: list[Unit],
    graph: _Graph,
    options: PartitionOptions,
    reasons: dict[int, list[Note]],
    target: Target,
) -> list[int]:
    """Send unprofitable, too small or surplus partitions back to the CPU; return their units."""
    demoted: list[int] = []
    kept: list[tuple[float, list[int], list[int]]] = []
    for group in groups:
        members = sorted(m for u in group for m in units[u].members)
        ops = sum(1 for m in members if graph.model_view.nodes[m].op not in FREE_OPS)
        cpu, device, transfer = _group_costs(members, graph, target)
        reason = None
        if ops < options.min_partition_ops:
            reason = Note(
                "partition.too-small",
                f"its partition has {ops} op(s), fewer than --min-partition-ops {options.min_partition_ops}",
                fix="lower --min-partition-ops, or make the neighbouring ops supported so partitions merge",
            )
        elif options.cost_model and cpu <= device + transfer:
            reason = Note(
                "cost.unprofitable",
                f"its partition of {ops} op(s) would cost {_ms(device)} on {target.name} plus {_ms(transfer)} of transfers, "
                f"more than {_ms(cpu)} on the CPU",
                fix="make the ops around it supported so it joins a larger partition, or keep it with --no-cost-model",
            )
        if reason is not None:
            _record(reason, members, reasons)
            demoted.extend(group)
        else:
            kept.append((cpu - device - transfer, group, members))
    if not demoted and options.max_partitions is not None and len(kept) > options.max_partitions:
        ranked = sorted(kept, key=lambda item: -item[0])
        for gain, group, members in ranked[options.max_partitions :]:
            _record(
                Note(
                    "partition.limit",
                    f"more partitions than --max-partitions {options.max_partitions}; this one gains least ({_ms(gain)})",
                    fix="raise --max-partitions",
                ),
                members,
                reasons,
            )
            demoted.extend(group)
    return demoted


def _record(reason: Note, members: Sequence[int], reasons: dict[int, list[Note]]) -> None:
    for member in members:
        reasons.setdefault(member, []).append(reason)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


# -- the plan -----------------------------------------------------------------------------------------------


def _segments(
    unit_graph: _UnitGraph, groups: list[list[int]], pinned: set[int], units: list[Unit], graph: _Graph, target: Target
) -> list[Segment]:
    """Execution order: each partition (and each already-lowered node) alone, CPU nodes in runs."""
    group_of = {unit: g for g, members in enumerate(groups) for unit in members}
    vertices: list[tuple[str, list[int]]] = [("target", g) for g in groups]
    for unit in range(len(units)):
        if unit not in group_of:
            group_of[unit] = len(vertices)
            vertices.append(("pinned" if unit in pinned else "cpu", [unit]))
    successors: list[set[int]] = [set() for _ in vertices]
    waiting = [0] * len(vertices)
    for unit, following in enumerate(unit_graph.successors):
        for other in following:
            a, b = group_of[unit], group_of[other]
            if a != b and b not in successors[a]:
                successors[a].add(b)
                waiting[b] += 1

    def first_node(vertex: int) -> int:
        return min(m for u in vertices[vertex][1] for m in units[u].members)

    ready: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
    for vertex in range(len(vertices)):
        if waiting[vertex] == 0:
            heapq.heappush(ready[vertices[vertex][0] == "cpu"], (first_node(vertex), vertex))
    on_cpu = True
    segments: list[Segment] = []
    run: list[int] | None = None
    while ready[True] or ready[False]:
        if not ready[on_cpu]:
            on_cpu = not on_cpu
            run = None
        _, vertex = heapq.heappop(ready[on_cpu])
        kind, members = vertices[vertex]
        nodes = sorted(m for u in members for m in units[u].members)
        if on_cpu:
            if run is None:
                run = []
                segments.append(Segment(len(segments), "cpu", run))
            run.extend(nodes)
        else:
            segments.append(Segment(len(segments), target.name, nodes, lowered=kind == "pinned"))
            run = None
        for other in successors[vertex]:
            waiting[other] -= 1
            if waiting[other] == 0:
                heapq.heappush(ready[vertices[other][0] == "cpu"], (first_node(other), other))
    for segment in segments:
        segment.nodes.sort()
        _fill_costs(segment, graph, target)
    return segments


def _fill_costs(segment: Segment, graph: _Graph, target: Target) -> None:
    segment.inputs, segment.outputs = graph.boundary(segment.nodes)
    segment.macs = sum(graph.work[i].macs for i in segment.nodes)
    segment.input_bytes = graph.moved_bytes(segment.inputs)
    segment.output_bytes = graph.moved_bytes(segment.outputs)
    segment.cpu_seconds = sum(graph.cpu_seconds[i] for i in segment.nodes)
    if segment.on_target:
        segment.seconds = sum(graph.target_seconds[i] for i in segment.nodes) + target.performance.dispatch_us * 1e-6
        segment.transfer_seconds = transfer_seconds(segment.input_bytes + segment.output_bytes, target)
    else:
        segment.seconds = segment.cpu_seconds


def _estimate(segments: list[Segment], graph: _Graph, target: Target) -> Estimate:
    on_target = [s for s in segments if s.on_target]
    accelerator = sum(s.seconds for s in on_target)
    transfer = sum(s.transfer_seconds for s in on_target)
    fallback = sum(s.seconds for s in segments if not s.on_target)
    return Estimate(
        target_seconds=accelerator + transfer + fallback,
        cpu_only_seconds=sum(graph.cpu_seconds),
        transfer_seconds=transfer,
        accelerator_seconds=accelerator,
        fallback_seconds=fallback,
        dispatch_seconds=len(on_target) * target.performance.dispatch_us * 1e-6,
        assumed_dims=any(work.assumed_dims for work in graph.work),
    )


# -- the pass -----------------------------------------------------------------------------------------------


@register_pass
class Partition(Pass):
    """Check every node against a target and plan acyclic, cost-aware partitions.

    Runs shape inference, checks each node with the target's rules (every failing rule is a
    reason with a fix where one exists), keeps QDQ node units and the target's fused patterns
    together, groups supported units into partitions that keep the graph acyclic, and sends back
    to the CPU any partition whose estimated gain does not pay for its transfers and dispatch
    (see docs/targets.md). The model is not changed; the plan goes to the ``lower`` pass.
    A model that already holds partitions for the target is not partitioned again.
    """

    name = "partition"
    provides = (PARTITION_PLAN,)

    @dataclass(frozen=True)
    class Options(PartitionOptions):
        #: A target name, a .toml path, or a :class:`~mapc.targets.Target`.
        target: Any = field(default=DEFAULT_TARGET, metadata=flag(
            "--target", f"target to compile for: {DEFAULT_TARGET} (the default when the flag has no value), cpu, "
            "ethos-u55, or a TOML description", metavar="NAME|FILE.toml", const=DEFAULT_TARGET))

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options = self.options
        target = options.target if isinstance(options.target, Target) else get_target(str(options.target))
        if options.min_partition_ops < 1:
            raise UsageError("--min-partition-ops must be at least 1")
        if options.max_partitions is not None and options.max_partitions < 0:
            raise UsageError("--max-partitions must be 0 or more")
        settings = PartitionOptions(
            min_partition_ops=options.min_partition_ops,
            max_partitions=options.max_partitions,
            cpu_ops=validate_cpu_ops(options.cpu_ops),
            cost_model=options.cost_model,
        )
        plan = plan_partitions(model, target, settings, dims=ctx.dims, progress=ctx.progress)
        ctx.facts[PARTITION_PLAN] = plan
        on_target = sum(len(s.nodes) for s in plan.segments if s.on_target)
        notes = []
        if not plan.model_view.shapes_inferred:
            notes.append(Note("partition.no-shapes", "onnx shape inference failed on this model; shape rules see unknown shapes", severity="warning"))
        return PassResult(
            changed=False,
            counters={"partitions": len(plan.partitions), "nodes_on_target": on_target, "nodes_on_cpu": len(plan.model_view.nodes) - on_target},
            notes=notes,
        )
