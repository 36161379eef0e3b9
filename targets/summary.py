"""A plan as the report shows it: coverage, partitions, fallback by node and by reason, estimate.

Every function returns JSON-able data with the keys documented in ``docs/report-schema.md``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from mapc.targets.constraints import constraints_for
from mapc.targets.partition import Plan, Segment

#: Rule text for reason codes that do not come from a constraint function.
PARTITION_REASONS = {
    "op.not-supported": "The target does not run this operator.",
    "unit.member-unsupported": "A QDQ node unit, fused pattern or Constant-with-its-reader is never split, and one of its members cannot run on the target.",
    "cost.unprofitable": "Offloading the partition is estimated slower than running it on the CPU (dispatch and transfers included).",
    "partition.too-small": "The partition has fewer ops than --min-partition-ops.",
    "partition.limit": "There are more partitions than --max-partitions; those that gain least stay on the CPU.",
    "partition.already-compiled": "The model already holds partitions for this target.",
    "user.cpu-ops": "The op type is forced to the CPU by --cpu-ops.",
}
ESTIMATE_BASIS = (
    "estimates from the target's performance model (data-sheet peaks, roofline per op, serial execution); "
    "not measurements"
)


def target_summary(plan: Plan) -> dict[str, Any]:
    target = plan.target
    return {
        "name": target.name,
        "kind": target.kind,
        "description": target.description,
        "domain": target.domain,
        "origin": target.origin,
    }


def _on_target(plan: Plan) -> set[int]:
    """Nodes the target runs: those in partitions, or for the host itself every node it has a kernel for."""
    if plan.target.is_host:
        return {node.index for node in plan.model_view.nodes if not plan.reasons.get(node.index)}
    return {node for segment in plan.segments if segment.on_target for node in segment.nodes}


def coverage(plan: Plan) -> dict[str, Any]:
    """How much of the model runs on the target, by nodes and by MACs."""
    on_target = _on_target(plan)
    nodes_total = len(plan.model_view.nodes)
    macs_total = sum(work.macs for work in plan.work)
    macs_on_target = sum(plan.work[i].macs for i in on_target)
    return {
        "nodes_total": nodes_total,
        "nodes_on_target": len(on_target),
        "nodes_on_cpu": nodes_total - len(on_target),
        "macs_total": int(macs_total),
        "macs_on_target": int(macs_on_target),
        "nodes_percent": _percent(len(on_target), nodes_total),
        "macs_percent": _percent(macs_on_target, macs_total),
    }


def partitions(plan: Plan) -> list[dict[str, Any]]:
    """Every segment in execution order: partitions on the target and runs of CPU nodes."""
    return [_segment(plan, segment) for segment in plan.segments]


def _segment(plan: Plan, segment: Segment) -> dict[str, Any]:
    nodes = [plan.model_view.nodes[i] for i in segment.nodes]
    record: dict[str, Any] = {
        "id": segment.id,
        "device": segment.device,
        "nodes": len(nodes),
        "node_names": [n.label for n in nodes],
        "ops": dict(sorted(Counter(n.op for n in nodes).items())),
        "macs": int(segment.macs),
        "inputs": [t.name for t in segment.inputs],
        "outputs": [t.name for t in segment.outputs],
        "inputs_bytes": int(segment.input_bytes),
        "outputs_bytes": int(segment.output_bytes),
        "estimated_ms": _ms(segment.seconds),
        "transfer_ms": _ms(segment.transfer_seconds),
        "cpu_ms": _ms(segment.cpu_seconds),
    }
    if segment.on_target:
        record["gain_ms"] = _ms(segment.gain_seconds)
        record["function"] = segment.function
        record["already_lowered"] = segment.lowered
    return record


def fallback(plan: Plan) -> list[dict[str, Any]]:
    """Every node left on the CPU, with all its reasons and the fixes that would help."""
    entries = []
    for index in _cpu_nodes(plan):
        view = plan.model_view.nodes[index]
        reasons = plan.reasons.get(index, [])
        fixes = list(dict.fromkeys(r.fix for r in reasons if r.fix))
        entries.append(
            {
                "node": view.label,
                "op_type": view.op,
                "reasons": [{"code": r.code, "message": r.message} for r in reasons],
                "fix": "; ".join(fixes) if fixes else None,
            }
        )
    return entries


def fallback_by_reason(plan: Plan) -> list[dict[str, Any]]:
    """Fallback grouped by reason code: the rule, how many nodes, which ops, examples, the fix."""
    rule_text = {rule.code: rule.summary(plan.target) for rule in constraints_for(plan.target)}
    groups: dict[str, dict[str, Any]] = {}
    for index in _cpu_nodes(plan):
        node = plan.model_view.nodes[index]
        for reason in plan.reasons.get(index, []):
            group = groups.setdefault(reason.code, {"ops": Counter(), "examples": [], "fixes": {}, "nodes": 0})
            group["nodes"] += 1
            group["ops"][node.op] += 1
            if len(group["examples"]) < 3:
                group["examples"].append(f"{node.label}: {reason.message}")
            if reason.fix:
                group["fixes"][reason.fix] = None
    return [
        {
            "code": code,
            "rule": rule_text.get(code) or PARTITION_REASONS.get(code, ""),
            "nodes": group["nodes"],
            "ops": dict(group["ops"].most_common()),
            "examples": group["examples"],
            "fix": "; ".join(group["fixes"]) or None,
        }
        for code, group in sorted(groups.items(), key=lambda item: (-item[1]["nodes"], item[0]))
    ]


def _cpu_nodes(plan: Plan) -> list[int]:
    """Nodes left to the CPU (for the host target: the nodes it cannot run)."""
    on_target = _on_target(plan)
    return [node.index for node in plan.model_view.nodes if node.index not in on_target]


def estimate(plan: Plan) -> dict[str, Any]:
    """Estimated latency on the target (with fallback and transfers) against the CPU alone."""
    e = plan.estimate
    speedup = e.cpu_only_seconds / e.target_seconds if e.target_seconds > 0 else None
    return {
        "target_ms": _ms(e.target_seconds),
        "cpu_only_ms": _ms(e.cpu_only_seconds),
        "transfer_ms": _ms(e.transfer_seconds),
        "accelerator_ms": _ms(e.accelerator_seconds),
        "fallback_ms": _ms(e.fallback_seconds),
        "dispatch_ms": _ms(e.dispatch_seconds),
        "speedup": None if speedup is None else round(speedup, 3),
        "assumed_dims": e.assumed_dims,
        "basis": ESTIMATE_BASIS,
    }


def plan_report(plan: Plan) -> dict[str, Any]:
    """Every target-related section of the report."""
    return {
        "target": target_summary(plan),
        "coverage": coverage(plan),
        "partitions": partitions(plan),
        "fallback": fallback(plan),
        "fallback_by_reason": fallback_by_reason(plan),
        "estimate": estimate(plan),
    }


def _ms(seconds: float) -> float:
    return float(np.format_float_positional(seconds * 1e3, precision=4, unique=True, fractional=False, trim="-")) if seconds else 0.0


def _percent(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0
