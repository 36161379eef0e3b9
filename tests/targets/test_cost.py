"""The cost model: MACs by hand formula, roofline time, SRAM, boundary transfers and totals."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from mapc.ir import load
from mapc.targets import PartitionOptions, plan_partitions
from mapc.targets.cost import Work, bytes_per_element, node_seconds, node_work
from mapc.targets.spec import Performance
from mapc.targets.views import view_model
from tests.conftest import make_model
from tests.targets.helpers import NPU, TOY_OPS, const, info, toy_target

F = TensorProto.FLOAT


def work_of(nodes, inputs, outputs, initializers=(), opset=18, index=-1, dims=None):
    model_view = view_model(load(make_model(nodes, inputs, outputs, initializers, opset=opset)))
    return node_work(model_view.nodes[index], dims or {})


def test_conv_macs_are_output_elements_times_kernel_volume():
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    work = work_of([node], [info("x", [1, 3, 8, 8])], [info("y", 4)], [const("w", np.zeros((4, 3, 3, 3)))])
    assert work.macs == 4 * 8 * 8 * 3 * 3 * 3


def test_depthwise_conv_counts_one_input_channel_per_output():
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=4)
    work = work_of([node], [info("x", [2, 4, 5, 5])], [info("y", 4)], [const("w", np.zeros((4, 1, 3, 3)))])
    assert work.macs == 2 * 4 * 3 * 3 * 9


def test_conv_transpose_macs_are_input_elements_times_kernel_volume():
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])
    work = work_of([node], [info("x", [1, 2, 4, 4])], [info("y", 4)], [const("w", np.zeros((2, 3, 2, 2)))])
    assert work.macs == 2 * 16 * 3 * 2 * 2


def test_matmul_and_gemm_macs():
    matmul = helper.make_node("MatMul", ["a", "b"], ["y"])
    assert work_of([matmul], [info("a", [2, 3, 4])], [info("y", 3)], [const("b", np.zeros((4, 5)))]).macs == 2 * 3 * 5 * 4
    gemm = helper.make_node("Gemm", ["a", "b"], ["y"], transA=1)
    assert work_of([gemm], [info("a", [4, 3])], [info("y", 2)], [const("b", np.zeros((4, 5)))]).macs == 3 * 5 * 4


def test_attention_macs_count_both_products():
    node = helper.make_node("Attention", ["q", "k", "v"], ["y"])
    work = work_of([node], [info("q", [1, 2, 5, 8]), info("k", [1, 2, 7, 8]), info("v", [1, 2, 7, 6])], [info("y", 4)], opset=23)
    assert work.macs == 1 * 2 * 5 * 7 * (8 + 6)


def test_views_cost_nothing_and_symbolic_dims_are_assumed():
    reshape = helper.make_node("Reshape", ["x", "s"], ["y"])
    work = work_of([reshape], [info("x", [2, 3])], [info("y", 2)], [const("s", [3, 2], np.int64)])
    assert (work.macs, work.vector_ops, work.activations) == (0, 0, ())
    relu = helper.make_node("Relu", ["x"], ["y"])
    assumed = work_of([relu], [info("x", ["N", 3])], [info("y", ["N", 3])])
    assert assumed.assumed_dims and assumed.vector_ops == 3
    assert work_of([relu], [info("x", ["N", 3])], [info("y", ["N", 3])], dims={"N": 4}).vector_ops == 12


def test_roofline_takes_the_larger_of_compute_and_memory():
    device = Performance(clock_mhz=1000, macs_per_cycle={"float32": 1000}, vector_ops_per_cycle=100, memory_gbps=1)
    compute_bound = Work(macs=10**9, vector_ops=0, dtype="float32", weights=(("float32", 10),), activations=(), assumed_dims=False)
    assert node_seconds(compute_bound, device) == pytest.approx(1e-3)
    memory_bound = Work(macs=1000, vector_ops=0, dtype="float32", weights=(("float32", 250_000),), activations=(), assumed_dims=False)
    assert node_seconds(memory_bound, device) == pytest.approx(1e-3)


def test_activations_that_fit_in_sram_move_at_sram_speed():
    device = Performance(clock_mhz=1000, macs_per_cycle={"float32": 1}, vector_ops_per_cycle=1e9, memory_gbps=1, sram_kib=1, sram_gbps=100)
    small = Work(macs=0, vector_ops=1, dtype="float32", weights=(), activations=(("float32", 256),), assumed_dims=False)
    large = Work(macs=0, vector_ops=1, dtype="float32", weights=(), activations=(("float32", 257),), assumed_dims=False)
    assert node_seconds(small, device) == pytest.approx(1024 / 100e9)
    assert node_seconds(large, device) == pytest.approx(1028 / 1e9)


def test_float32_takes_the_computed_width_on_the_accelerator():
    assert bytes_per_element("float32") == 4
    assert bytes_per_element("float32", NPU) == 2
    assert bytes_per_element("int4") == 0.5
    work = Work(macs=4096 * 10**6, vector_ops=0, dtype="float32", weights=(), activations=(), assumed_dims=False)
    assert node_seconds(work, NPU.performance, NPU) == pytest.approx(4096e6 / (2048 * 1e9) + 0.1e-6)


def test_plan_totals_add_up_and_transfers_count_boundary_tensors():
    chain = make_model(
        [helper.make_node("Relu", ["x"], ["a"], name="a"), helper.make_node("Sin", ["a"], ["b"], name="b"), helper.make_node("Neg", ["b"], ["c"], name="c")],
        [info("x", [1000])],
        [info("c", [1000])],
    )
    target = toy_target(TOY_OPS)
    plan = plan_partitions(load(chain), target, PartitionOptions(cost_model=False))
    first, _, last = plan.segments
    assert (first.input_bytes, first.output_bytes) == (4000, 4000)
    assert first.transfer_seconds == pytest.approx(8000 / (target.performance.transfer_gbps * 1e9))
    e = plan.estimate
    assert e.target_seconds == pytest.approx(e.accelerator_seconds + e.transfer_seconds + e.fallback_seconds)
    assert e.cpu_only_seconds == pytest.approx(sum(s.cpu_seconds for s in plan.segments))
    assert e.dispatch_seconds == pytest.approx(2 * target.performance.dispatch_us * 1e-6)


def test_weights_never_cross_the_link():
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="m")], [info("x", [1, 64])], [info("y", [1, 64])], [const("w", np.ones((64, 64)))])
    plan = plan_partitions(load(model), toy_target(["MatMul"]), PartitionOptions(cost_model=False))
    (partition,) = plan.partitions
    assert (partition.input_bytes, partition.output_bytes) == (256, 256)
