"""The ``partition`` and ``lower`` passes: the target stages of a compile pipeline.

``mapc compile --target npu`` (or ``mapc.compile(model, target="npu")``) appends
``partition{target=npu},lower`` to the target-independent pipeline. ``partition`` changes
nothing in the model (it annotates shapes); it leaves its :class:`~.partition.Plan` in
``ctx.facts["partition"]`` for ``lower``, which rewrites the model, and for the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mapc.ir import Model
from mapc.ir.errors import UsageError
from mapc.ir.version import __version__
from mapc.passes import Note, Pass, PassContext, PassResult, register_pass
from mapc.targets.lower import lower_partitions
from mapc.targets.partition import PartitionOptions, Plan, plan_partitions
from mapc.targets.registry import get_target
from mapc.targets.spec import Target
from mapc.targets.summary import coverage, estimate
from mapc.targets.support import validate_cpu_ops

PLAN_FACT = "partition"


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

    @dataclass
    class Options:
        target: Any = "npu"  # a target name, a .toml path, or a Target
        min_partition_ops: int = 1
        max_partitions: int | None = None
        cpu_ops: list[str] = field(default_factory=list)
        cost_model: bool = True

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
        ctx.facts[PLAN_FACT] = plan
        on_target = sum(len(s.nodes) for s in plan.segments if s.on_target)
        notes = []
        if not plan.model_view.shapes_inferred:
            notes.append(Note("partition.no-shapes", "onnx shape inference failed on this model; shape rules see unknown shapes", severity="warning"))
        return PassResult(
            changed=False,
            counters={"partitions": len(plan.partitions), "nodes_on_target": on_target, "nodes_on_cpu": len(plan.model_view.nodes) - on_target},
            notes=notes,
        )


@register_pass
class Lower(Pass):
    """Replace each planned partition by one node backed by a model-local function.

    Needs the ``partition`` pass before it. Each partition becomes ``<domain>::partition_<k>``
    (domain ``mapc.<target>``) whose local function holds the partition's nodes; weights stay
    initializers passed as inputs, small constants move into the function. The model still
    runs in onnxruntime, which inlines the functions. Metadata records the target, the mapc
    version, the partition options and a summary.
    """

    name = "lower"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        plan = ctx.facts.get(PLAN_FACT)
        if not isinstance(plan, Plan):
            raise UsageError("the lower pass needs the partition pass before it (e.g. 'partition{target=npu},lower')")
        if plan.model_view.graph is not model.graph:
            raise UsageError("the lower pass must run right after partition, on the same model")
        lowered = lower_partitions(model, plan)
        if lowered:
            record_metadata(model, plan)
        return PassResult(changed=bool(lowered), counters={"partitions_lowered": len(lowered)})


def record_metadata(model: Model, plan: Plan) -> None:
    """Stamp the compiled model with the target, mapc version, options and a summary."""
    model.set_metadata("mapc.version", __version__)
    model.set_metadata("mapc.target", str(plan.target))
    model.set_metadata("mapc.partition_options", json.dumps(plan_options(plan), sort_keys=True))
    model.set_metadata(
        "mapc.summary",
        json.dumps({"coverage": coverage(plan), "estimate": estimate(plan), "partitions": len(plan.partitions)}, sort_keys=True),
    )


def plan_options(plan: Plan) -> dict[str, Any]:
    options = plan.options
    return {
        "min_partition_ops": options.min_partition_ops,
        "max_partitions": options.max_partitions,
        "cpu_ops": list(options.cpu_ops),
        "cost_model": options.cost_model,
    }
