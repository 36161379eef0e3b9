"""Partitioning: a zoo of tricky graphs with golden partitionings, and invariants over random graphs.

Invariants (checked for every plan): every node is in exactly one segment; segments are in a
valid execution order, so the partition graph is a DAG; partitions on the target hold only
supported nodes; atomic units are never split; every node left on the CPU says why; the lowered
model computes the same outputs.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import load
from mapc.ir.notes import Note
from mapc.targets import PartitionOptions, plan_partitions
from mapc.targets.partition import Partition
from mapc.targets.spec import OpSet
from mapc.targets.support import NodeSupport, check_support
from mapc.targets.views import ModelView
from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model
from tests.targets.helpers import const, info, qdq_pair, toy_target

F = TensorProto.FLOAT
SUPPORTED = ["Relu", "Neg", "Add", "Mul", "Abs", "Conv", "QuantizeLinear", "DequantizeLinear", "Identity"]
TOY = toy_target(SUPPORTED)
STRUCTURE_ONLY = PartitionOptions(cost_model=False)


def node(op, inputs, output, **attrs):
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def plan_of(proto, target=TOY, options=STRUCTURE_ONLY, **kwargs):
    return plan_partitions(load(proto), target, options, **kwargs)


def layout(plan):
    """(partitions on the target as sets of node names in execution order, CPU node names)."""
    names = [n.label for n in plan.model_view.nodes]
    partitions = [{names[i] for i in s.nodes} for s in plan.segments if s.on_target]
    cpu = {names[i] for s in plan.segments if not s.on_target for i in s.nodes}
    return partitions, cpu


def assert_invariants(plan):
    count = len(plan.model_view.nodes)
    placed = sorted(i for s in plan.segments for i in s.nodes)
    assert placed == list(range(count)), "every node in exactly one segment"
    position = {i: k for k, s in enumerate(plan.segments) for i in s.nodes}
    contracted = nx.DiGraph()
    contracted.add_nodes_from(range(len(plan.segments)))
    for source, sinks in enumerate(plan.readers):
        for sink in sinks:
            assert position[source] <= position[sink], "segments are in execution order"
            if position[source] != position[sink]:
                contracted.add_edge(position[source], position[sink])
    assert nx.is_directed_acyclic_graph(contracted)
    for segment in plan.segments:
        if segment.on_target and not segment.lowered:
            assert all(plan.support[i].supported for i in segment.nodes), "partitions hold supported nodes only"
    for unit in plan.units:
        assert len({position[m] for m in unit.members}) == 1, "atomic units are never split"
    for segment in plan.segments:
        if not segment.on_target and not plan.target.is_host:
            silent = [plan.model_view.nodes[i].label for i in segment.nodes if not plan.reasons.get(i)]
            assert not silent, f"nodes on the CPU without a reason: {silent}"
    return contracted


def lowered_preserves(proto, target=TOY, **options):
    options.setdefault("cost_model", False)
    return assert_pass_preserves(proto, [Partition(target=target, **options), "lower"])


# -- the zoo -----------------------------------------------------------------------------------------


def diamond():
    """a feeds an unsupported b and a supported c; d joins them: d cannot join a's partition."""
    return make_model(
        [node("Relu", ["x"], "a"), node("Sin", ["a"], "b"), node("Neg", ["a"], "c"), node("Add", ["b", "c"], "d")],
        [info("x", [2, 3])],
        [info("d", [2, 3])],
    )


def unsupported_mid_chain():
    return make_model(
        [node("Relu", ["x"], "a"), node("Sin", ["a"], "b"), node("Neg", ["b"], "c")],
        [info("x", [4])],
        [info("c", [4])],
    )


def multi_producer():
    """Two producers, one behind an unsupported op, feed d: all three supported nodes merge."""
    return make_model(
        [node("Relu", ["x1"], "a"), node("Sin", ["x2"], "b"), node("Neg", ["b"], "c"), node("Add", ["a", "c"], "d")],
        [info("x1", [3]), info("x2", [3])],
        [info("d", [3])],
    )


def horizontal_siblings():
    """p and q read the same CPU node: one partition; u comes after another CPU node: its own."""
    return make_model(
        [node("Sin", ["x"], "s"), node("Relu", ["s"], "p"), node("Neg", ["s"], "q"), node("Cos", ["q"], "t"), node("Abs", ["t"], "u")],
        [info("x", [3])],
        [info("p", [3]), info("u", [3])],
    )


def qdq_boundary_cycle():
    """A dequantized tensor feeds a supported Relu and an unsupported Sin that rejoin in Add.

    Pulling the shared Q/DQ into the Relu's partition and the Add after it would close a
    cycle through the Sin; the Add gets a partition of its own.
    """
    qdq, constants, x_dq = qdq_pair("x")
    return make_model(
        [*qdq, node("Relu", [x_dq], "a"), node("Sin", [x_dq], "u"), node("Add", ["a", "u"], "y")],
        [info("x", [2, 2])],
        [info("y", [2, 2])],
        constants,
    )


def qdq_unit_with_unsupported_op():
    """DQ -> Sin -> Q is one node unit: the supported DQ and Q stay with the unsupported Sin."""
    first, c1, x_dq = qdq_pair("x")
    second, c2, s_dq = qdq_pair("s")
    return make_model(
        [*first, node("Sin", [x_dq], "s"), *second, node("Relu", [s_dq], "r")],
        [info("x", [2, 2])],
        [info("r", [2, 2])],
        c1 + c2,
    )


def fused_pattern():
    """Conv -> Relu is fused on the target; with Relu forced to the CPU the Conv follows it."""
    weight = const("w", np.full((2, 2, 1, 1), 0.5))
    return make_model(
        [node("Conv", ["x", "w"], "c"), node("Relu", ["c"], "r"), node("Neg", ["r"], "n")],
        [info("x", [1, 2, 3, 3])],
        [info("n", [1, 2, 3, 3])],
        [weight],
    )


ZOO = {
    "diamond": (diamond, [{"a", "c"}, {"d"}], {"b"}),
    "unsupported-mid-chain": (unsupported_mid_chain, [{"a"}, {"c"}], {"b"}),
    "multi-producer": (multi_producer, [{"a", "c", "d"}], {"b"}),
    "horizontal-siblings": (horizontal_siblings, [{"p", "q"}, {"u"}], {"s", "t"}),
    "qdq-boundary-cycle": (qdq_boundary_cycle, [{"x_Q", "x_DQ", "a"}, {"y"}], {"u"}),
    "qdq-unit-with-unsupported-op": (qdq_unit_with_unsupported_op, [{"x_Q"}, {"s_DQ", "r"}], {"x_DQ", "s", "s_Q"}),
}


@pytest.mark.parametrize("name", ZOO)
def test_zoo_golden_partitioning(name):
    build, partitions, cpu = ZOO[name]
    plan = plan_of(build())
    assert_invariants(plan)
    assert layout(plan) == (partitions, cpu)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_lowered_model_computes_the_same_outputs(name):
    build, partitions, _ = ZOO[name]
    model, records = lowered_preserves(build())
    functions = [f for f in model.functions if f.domain == TOY.domain]
    assert len(functions) == len(partitions)
    assert sorted(len([n for n in f.node if n.op_type != "Constant" or n.name]) for f in functions) == sorted(len(p) for p in partitions)


def test_qdq_unit_members_carry_the_reason_of_their_unsupported_member():
    plan = plan_of(qdq_unit_with_unsupported_op())
    by_name = {plan.model_view.nodes[i].label: reasons for i, reasons in plan.reasons.items()}
    assert [r.code for r in by_name["x_DQ"]] == ["unit.member-unsupported"]
    assert "'s' (Sin)" in by_name["x_DQ"][0].message and "never split" in by_name["x_DQ"][0].message
    assert [r.code for r in by_name["s"]] == ["op.not-supported"]


def test_fused_pattern_is_never_split():
    target = TOY.replace(ops=OpSet(supported=TOY.ops.supported, fused_patterns=(("Conv", "Relu"),)))
    partitions, cpu = layout(plan_of(fused_pattern(), target, PartitionOptions(cost_model=False, cpu_ops=("Relu",))))
    assert partitions == [{"n"}] and cpu == {"c", "r"}
    partitions, cpu = layout(plan_of(fused_pattern(), TOY, PartitionOptions(cost_model=False, cpu_ops=("Relu",))))
    assert partitions == [{"c"}, {"n"}] and cpu == {"r"}


def test_min_partition_ops_and_max_partitions():
    plan = plan_of(diamond(), options=PartitionOptions(cost_model=False, min_partition_ops=2))
    assert layout(plan) == ([{"a", "c"}], {"b", "d"})
    assert [r.code for r in plan.reasons[3]] == ["partition.too-small"]
    plan = plan_of(unsupported_mid_chain(), options=PartitionOptions(cost_model=False, max_partitions=1))
    partitions, _ = layout(plan)
    assert len(partitions) == 1
    dropped = next(i for i, rs in plan.reasons.items() if any(r.code == "partition.limit" for r in rs))
    assert "gains least" in next(r.message for r in plan.reasons[dropped] if r.code == "partition.limit")
    assert layout(plan_of(diamond(), options=PartitionOptions(cost_model=False, max_partitions=0)))[0] == []


def test_cost_model_sends_back_a_partition_that_does_not_pay():
    """One cheap Relu between two CPU ops: dispatch and transfers cost more than it saves."""
    from mapc.targets.spec import Performance

    slow_link = TOY.replace(performance=Performance(clock_mhz=1000, macs_per_cycle={"float32": 1024}, vector_ops_per_cycle=256, memory_gbps=100, transfer_gbps=0.001, dispatch_us=100))
    plan = plan_of(unsupported_mid_chain(), slow_link, PartitionOptions())
    assert layout(plan) == ([], {"a", "b", "c"})
    reason = plan.reasons[0][0]
    assert reason.code == "cost.unprofitable" and "more than" in reason.message and "--no-cost-model" in reason.fix
    assert plan.estimate.target_seconds == pytest.approx(plan.estimate.cpu_only_seconds)
    kept = plan_of(unsupported_mid_chain(), TOY, PartitionOptions())  # fast link, slow host: it pays
    assert layout(kept)[0] == [{"a"}, {"c"}]
    assert kept.estimate.target_seconds < kept.estimate.cpu_only_seconds


def test_compiling_a_compiled_model_adds_no_partitions():
    model, _ = lowered_preserves(diamond())
    plan = plan_partitions(model, TOY, STRUCTURE_ONLY)
    assert_invariants(plan)
    assert [s.lowered for s in plan.segments if s.on_target] == [True, True]
    assert any(r.code == "partition.already-compiled" for rs in plan.reasons.values() for r in rs) is False  # Sin is unsupported anyway


def test_subgraph_reads_count_as_dependencies():
    """An If reading a partition's output from its branch must run after that partition."""
    then_branch = helper.make_graph([helper.make_node("Identity", ["a"], ["t"])], "then", [], [info("t", [2])])
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [], [info("e", [2])])
    proto = make_model(
        [node("Relu", ["x"], "a"), helper.make_node("If", ["c"], ["i"], name="i", then_branch=then_branch, else_branch=else_branch), node("Neg", ["i"], "n")],
        [info("x", [2]), info("c", [], TensorProto.BOOL)],
        [info("n", [2])],
    )
    plan = plan_of(proto)
    assert_invariants(plan)
    assert layout(plan) == ([{"a"}, {"n"}], {"i"})
    lowered_preserves(proto)


# -- random graphs ------------------------------------------------------------------------------------------

OPS_IN_RANDOM_MODELS = sorted(
    {"Add", "Sub", "Mul", "Div", "Max", "Min", "Relu", "Tanh", "Sigmoid", "Neg", "Abs", "Erf", "Sin", "Identity", "LeakyRelu", "Clip",
     "MatMul", "Gemm", "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Transpose",
     "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Softmax", "LogSoftmax", "ReduceSum", "ReduceMean", "ReduceMax",
     "ReduceMin", "ReduceL2", "Cast", "Where", "Greater", "Less", "GreaterOrEqual", "ConstantOfShape", "Range", "Shape", "Gather",
     "Size", "Constant"}
)  # fmt: skip


@st.composite
def random_targets(draw):
    """A target that runs most ops of the random models, but not a random few."""
    refused = draw(st.sets(st.sampled_from(OPS_IN_RANDOM_MODELS), max_size=8))
    return toy_target(set(OPS_IN_RANDOM_MODELS) - refused, static_shapes=draw(st.sampled_from([False, False, True])))


@st.composite
def partition_options(draw):
    return {
        "cpu_ops": draw(st.lists(st.sampled_from(["Relu", "Add", "MatMul", "Reshape"]), max_size=2, unique=True)),
        "min_partition_ops": draw(st.integers(1, 3)),
        "max_partitions": draw(st.none() | st.integers(0, 3)),
        "cost_model": draw(st.booleans()),
    }


@settings(max_examples=100)  # each example compiles, runs and recompiles the model: keep CI under budget
@given(onnx_models(), random_targets(), partition_options())
def test_random_targets_keep_the_invariants_and_the_outputs(model, target, options):
    plan = plan_partitions(load(model), target, PartitionOptions(**{**options, "cpu_ops": tuple(options["cpu_ops"])}))
    assert_invariants(plan)
    if options["max_partitions"] is not None:
        assert len(plan.partitions) <= options["max_partitions"]
    lowered, _ = lowered_preserves(model, target, **options)
    original = load(model)
    inner = sum(1 for f in lowered.functions if f.domain == target.domain for n in f.node if n.name or n.op_type != "Constant")
    host = sum(1 for n in lowered.graph.nodes if n.domain != target.domain)
    assert inner + host == len(original.graph.nodes), "every node in exactly one place after lowering"


@st.composite
def random_predicates(draw):
    """A support predicate that accepts an arbitrary subset of nodes (by position)."""
    accepted = draw(st.lists(st.booleans(), min_size=64, max_size=64))

    def support(model_view: ModelView, target) -> list[NodeSupport]:
        return [
            NodeSupport(n, [] if accepted[n.index % 64] else [Note("test.refused", "refused by the random predicate")])
            for n in model_view.nodes
        ]

    return support


@given(onnx_models(max_ops=10), random_predicates())
def test_random_predicates_keep_the_invariants(model, support):
    plan = plan_partitions(load(model), TOY, STRUCTURE_ONLY, support=support)
    contracted = assert_invariants(plan)
    refused = {i for i, v in enumerate(plan.support) if not v.supported}
    assert all(i not in refused for s in plan.partitions for i in s.nodes)
    # greedy is maximal: no two partitions could be merged without closing a cycle
    partition_ids = [k for k, s in enumerate(plan.segments) if s.on_target]
    for a in partition_ids:
        for b in partition_ids:
            if a < b:
                merged = nx.contracted_nodes(contracted, a, b, self_loops=False)
                assert not nx.is_directed_acyclic_graph(merged), f"partitions {a} and {b} could have merged"


def quantize_everything(proto: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Insert QuantizeLinear -> DequantizeLinear after every float tensor a node produces, and
    store MatMul/Gemm/Conv weights as int8 behind DequantizeLinear: a QDQ model to partition."""
    rng = np.random.default_rng(seed)
    quantized = onnx.ModelProto()
    quantized.CopyFrom(proto)
    graph = quantized.graph
    inferred = onnx.shape_inference.infer_shapes(quantized).graph
    float_tensors = {v.name for v in [*inferred.value_info, *inferred.output] if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    outputs = {o.name for o in graph.output}
    initializers = {t.name: t for t in graph.initializer}
    nodes, extra = [], []
    renamed: dict[str, str] = {}
    for original in graph.node:
        current = onnx.NodeProto()
        current.CopyFrom(original)
        for position, name in enumerate(current.input):
            current.input[position] = renamed.get(name, name)
            if current.op_type in ("MatMul", "Gemm", "Conv") and position == 1 and name in initializers and rng.random() < 0.7:
                weight = numpy_helper.to_array(initializers[name])
                scale = max(float(np.abs(weight).max()) / 127, 1e-3)
                extra += [numpy_helper.from_array(np.clip(np.round(weight / scale), -127, 127).astype(np.int8), f"{name}_int8"),
                          numpy_helper.from_array(np.array(scale, np.float32), f"{name}_wscale")]
                dequantized = f"{name}_wdq_{len(nodes)}"
                nodes.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_wscale"], [dequantized], name=dequantized))
                current.input[position] = dequantized
        nodes.append(current)
        for name in current.output:
            if name in float_tensors and name not in outputs and rng.random() < 0.8:
                q_nodes, constants, dequantized = qdq_pair(name, scale=float(rng.choice([0.02, 0.1])))
                nodes += q_nodes
                extra += constants
                renamed[name] = dequantized
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(extra)
    return quantized


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(onnx_models(families=("elementwise", "unary", "matmul", "gemm", "conv", "pool", "reshape", "concat", "softmax"), discontinuous=False), st.integers(0, 2**16), random_targets())
def test_random_qdq_models_keep_units_whole_and_outputs_equal(model, seed, target):
    quantized = quantize_everything(model, seed)
    target = toy_target(target.ops.supported | {"QuantizeLinear", "DequantizeLinear"})
    plan = plan_partitions(load(quantized), target, STRUCTURE_ONLY)
    assert_invariants(plan)
    lowered_preserves(quantized, target)


def test_check_support_matches_plan_support():
    proto = diamond()
    model = load(proto)
    from mapc.targets.views import view_model

    verdicts = check_support(view_model(model), TOY)
    assert [v.supported for v in verdicts] == [True, False, True, True]
