"""How partitioning scales with graph size (run by hand; never in CI).

    python benchmarks/partition_scaling.py [--sizes 1000,4000,16000] [--unsupported 0.05]

Builds transformer-like graphs of N nodes (chains of MatMul/Add/Relu blocks with residual
joins and side branches), marks a fraction of ops unsupported at random, and times
``plan_partitions`` (support check, units, schedule, merge, cost rounds) and the lowering.
Timings are reported next to onnx shape inference on the same model in the same run (a
linear-time pass every compile already pays), so the ratios are comparable across machines:
a constant ratio across sizes means the partitioner scales like shape inference, i.e. linearly.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import infer_shapes, load
from mapc.targets import PartitionOptions, plan_partitions
from mapc.targets.lower import lower_partitions
from mapc.targets.spec import OpSet, Performance, Target, TensorLimits

WIDTH = 16


def build(nodes: int, unsupported: float, seed: int) -> tuple[bytes, Target, set[str]]:
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((WIDTH, WIDTH)).astype(np.float32), "w")
    graph_nodes, current, count = [], "x", 0
    refused: set[str] = set()
    while count < nodes:
        base = f"b{count}"
        block = [
            helper.make_node("MatMul", [current, "w"], [f"{base}_m"], name=f"{base}_m"),
            helper.make_node("Add", [f"{base}_m", current], [f"{base}_a"], name=f"{base}_a"),
            helper.make_node("Relu", [f"{base}_a"], [f"{base}_r"], name=f"{base}_r"),
            helper.make_node("Neg", [current], [f"{base}_n"], name=f"{base}_n"),
            helper.make_node("Add", [f"{base}_r", f"{base}_n"], [f"{base}_o"], name=f"{base}_o"),
        ]
        for node in block:
            if rng.random() < unsupported:
                refused.add(node.name)
        graph_nodes += block
        current = f"{base}_o"
        count += len(block)
    graph = helper.make_graph(
        graph_nodes, "scaling", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, [1, WIDTH])], [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    target = Target(
        name="bench",
        description="benchmark target",
        tensors=TensorLimits(dtypes=frozenset({"float32"}), static_shapes=True, max_rank=4),
        ops=OpSet(supported=frozenset({"MatMul", "Add", "Relu", "Neg"})),
        performance=Performance(clock_mhz=1000, macs_per_cycle={"float32": 1024}, vector_ops_per_cycle=256, memory_gbps=50, transfer_gbps=10, dispatch_us=5),
        host=Performance(clock_mhz=2000, macs_per_cycle={"float32": 8}, vector_ops_per_cycle=8, memory_gbps=20, op_overhead_us=2),
    )
    return model.SerializeToString(), target, refused


def measure(nodes: int, unsupported: float) -> dict[str, float]:
    serialized, target, refused = build(nodes, unsupported, seed=nodes)
    from mapc.ir.notes import Note
    from mapc.targets.support import check_support

    def support(model_view, target):  # the target's rules, plus the benchmark's random refusals
        verdicts = check_support(model_view, target)
        for verdict in verdicts:
            if verdict.view.label in refused:
                verdict.reasons.append(Note("bench.refused", "refused at random"))
        return verdicts

    reference = load(serialized)
    started = time.perf_counter()
    infer_shapes(reference)
    shapes = time.perf_counter() - started

    model = load(serialized)
    started = time.perf_counter()
    plan = plan_partitions(model, target, PartitionOptions(), support=support)
    planned = time.perf_counter() - started
    started = time.perf_counter()
    lower_partitions(model, plan)
    lowered = time.perf_counter() - started
    return {
        "nodes": len(plan.model_view.nodes),
        "partitions": len(plan.partitions),
        "rounds": plan.rounds,
        "shape_inference_s": shapes,
        "plan_s": planned,
        "lower_s": lowered,
        "plan_per_node_us": planned / len(plan.model_view.nodes) * 1e6,
        "plan_vs_shapes": planned / shapes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,4000,16000")
    parser.add_argument("--unsupported", type=float, default=0.05)
    args = parser.parse_args()
    print(f"{'nodes':>7} {'parts':>6} {'rounds':>6} {'shapes s':>9} {'plan s':>8} {'lower s':>8} {'us/node':>8} {'plan/shapes':>11}")
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, args.unsupported)
        print(
            f"{r['nodes']:>7} {r['partitions']:>6} {r['rounds']:>6} {r['shape_inference_s']:>9.3f} {r['plan_s']:>8.3f} "
            f"{r['lower_s']:>8.3f} {r['plan_per_node_us']:>8.1f} {r['plan_vs_shapes']:>11.2f}"
        )


if __name__ == "__main__":
    main()
