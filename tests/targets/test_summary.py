"""A plan as the report shows it: coverage, segments, fallback by node and by reason, estimate."""

from __future__ import annotations

from types import SimpleNamespace

from onnx import helper

from mapc.ir import load
from mapc.targets import PartitionOptions, Plan, plan_partitions
from mapc.targets.partition import Estimate
from mapc.targets.summary import (
    ESTIMATE_BASIS,
    PARTITION_REASONS,
    coverage,
    estimate,
    fallback,
    fallback_by_reason,
    partitions,
    plan_report,
    target_summary,
)
from tests.conftest import make_model
from tests.targets.helpers import CPU, info, toy_target

TOY = toy_target(["Relu", "Neg", "Add"])


def plan_of(ops, target=TOY, shape=(1, 256), **options) -> Plan:
    """A plan for x -> ops[0] -> ops[1] -> ... (nodes named after their op and position)."""
    names = ["x", *(f"{op.lower()}{k}" for k, op in enumerate(ops))]
    nodes = [helper.make_node(op, [names[k]], [names[k + 1]], name=names[k + 1]) for k, op in enumerate(ops)]
    model = make_model(nodes, [info("x", list(shape))], [info(names[-1], list(shape))])
    return plan_partitions(load(model), target, PartitionOptions(cost_model=False, **options))


def test_coverage_counts_nodes_on_the_target_and_on_the_cpu():
    assert coverage(plan_of(["Relu", "Sin", "Neg"])) == {
        "nodes_total": 3,
        "nodes_on_target": 2,
        "nodes_on_cpu": 1,
        "macs_total": 0,
        "macs_on_target": 0,
        "nodes_percent": 66.7,
        "macs_percent": 0.0,
    }


def test_segments_are_listed_in_execution_order_and_only_partitions_carry_gain_and_function():
    segments = partitions(plan_of(["Relu", "Sin", "Neg"]))
    assert [(s["id"], s["device"], s["node_names"], s["ops"]) for s in segments] == [
        (0, "toy", ["relu0"], {"Relu": 1}),
        (1, "cpu", ["sin1"], {"Sin": 1}),
        (2, "toy", ["neg2"], {"Neg": 1}),
    ]
    assert [(s["inputs"], s["outputs"], s["inputs_bytes"]) for s in segments] == [
        (["x"], ["relu0"], 1024),
        (["relu0"], ["sin1"], 1024),
        (["sin1"], ["neg2"], 1024),
    ]
    assert {"gain_ms", "function", "already_lowered"} <= set(segments[0])
    assert not {"gain_ms", "function", "already_lowered"} & set(segments[1])
    assert segments[1]["transfer_ms"] == 0.0 and segments[1]["estimated_ms"] == segments[1]["cpu_ms"] > 0


def test_fallback_lists_each_cpu_node_with_all_its_reasons_and_fixes():
    assert fallback(plan_of(["Relu", "Sin", "Neg"])) == [
        {"node": "sin1", "op_type": "Sin", "reasons": [{"code": "op.not-supported", "message": "Sin is not one of them"}], "fix": None}
    ]
    dynamic = fallback(plan_of(["Relu"], target=toy_target(["Relu"], static_shapes=True), shape=("batch", 4)))
    assert [r["code"] for r in dynamic[0]["reasons"]] == ["shape.static"]
    assert dynamic[0]["fix"] == "fix the input shapes: --input-shape x:<batch>,4"


def test_fallback_by_reason_groups_by_code_most_nodes_first_with_the_rule_text_and_three_examples():
    target = toy_target(["Relu"], static_shapes=True)
    groups = fallback_by_reason(plan_of(["Relu", "Sin", "Sin", "Sin", "Sin"], target=target, shape=("batch", 4)))
    assert [(g["code"], g["nodes"], g["ops"]) for g in groups] == [
        ("shape.static", 5, {"Sin": 4, "Relu": 1}),
        ("op.not-supported", 4, {"Sin": 4}),
    ]
    static, unsupported = groups
    assert static["rule"] == "Every tensor the op reads or writes must have a static shape."
    assert static["fix"] == "fix the input shapes: --input-shape x:<batch>,4"
    assert static["examples"][0].startswith("relu0: Every tensor the op reads or writes must have a static shape; ")
    assert len(static["examples"]) == 3
    assert unsupported["rule"] == PARTITION_REASONS["op.not-supported"]
    assert unsupported["examples"] == [f"sin{k}: Sin is not one of them" for k in (1, 2, 3)]
    assert unsupported["fix"] is None


def test_on_the_host_target_every_node_it_runs_counts_and_forced_ones_fall_back():
    plan = plan_of(["Relu", "Sin", "Neg"], target=CPU, cpu_ops=("Sin",))
    assert (coverage(plan)["nodes_on_target"], coverage(plan)["nodes_on_cpu"]) == (2, 1)
    assert [(entry["node"], [r["code"] for r in entry["reasons"]]) for entry in fallback(plan)] == [("sin1", ["user.cpu-ops"])]
    assert fallback_by_reason(plan)[0]["rule"] == PARTITION_REASONS["user.cpu-ops"]


def test_estimate_reports_milliseconds_to_four_digits_and_the_speedup():
    totals = Estimate(
        target_seconds=0.0012345678,
        cpu_only_seconds=0.0049382712,
        transfer_seconds=0.0001,
        accelerator_seconds=0.0002,
        fallback_seconds=0.0,
        dispatch_seconds=2e-5,
        assumed_dims=True,
    )
    assert estimate(SimpleNamespace(estimate=totals)) == {
        "target_ms": 1.235,
        "cpu_only_ms": 4.938,
        "transfer_ms": 0.1,
        "accelerator_ms": 0.2,
        "fallback_ms": 0.0,
        "dispatch_ms": 0.02,
        "speedup": 4.0,
        "assumed_dims": True,
        "basis": ESTIMATE_BASIS,
    }
    idle = Estimate(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, False)
    assert estimate(SimpleNamespace(estimate=idle))["speedup"] is None


def test_plan_report_has_every_target_section_and_names_the_target():
    plan = plan_of(["Relu"])
    report = plan_report(plan)
    assert list(report) == ["target", "coverage", "partitions", "fallback", "fallback_by_reason", "estimate"]
    assert target_summary(plan) == report["target"] == {
        "name": "toy",
        "kind": "accelerator",
        "description": "test target",
        "domain": "mapc.toy",
        "origin": "built-in",
    }
    assert report["fallback"] == [] and report["fallback_by_reason"] == []
