"""conv-bias, gemm-bias and matmul-to-gemm: constant Adds folded into bias inputs."""

from __future__ import annotations

import numpy as np
import pytest

from .common import fuse, misses, ops
from .graphs import ConvSpec, Graph, conv_model, weights


@pytest.mark.parametrize("add", ["channel", "scalar"])
def test_conv_bias_folds(add):
    model, record = fuse(conv_model(ConvSpec(add=add, batch_norm=False, bias=False)))
    assert ops(model) == {"Conv": 1, "Relu": 1} and record.counters["conv-bias"] == 1


def test_per_element_add_after_conv_is_a_near_miss():
    g = Graph(18)
    x = g.input("x", [1, 2, 3, 3])
    y = g.op("Conv", x, g.const(np.ones((2, 2, 1, 1), np.float32)))
    g.output(g.op("Add", y, g.const(np.ones((1, 2, 3, 3), np.float32))))
    model, record = fuse(g.build())
    assert [m["code"] for m in misses(record, "conv-bias")] == ["not-per-channel"] and ops(model)["Add"] == 1


def test_residual_add_after_conv_is_not_a_bias():
    g = Graph(18)
    x = g.input("x", [1, 2, 3, 3])
    g.output(g.op("Add", g.op("Conv", x, g.const(np.ones((2, 2, 1, 1), np.float32))), x))
    model, record = fuse(g.build())
    assert ops(model)["Add"] == 1 and misses(record) == []


@pytest.mark.parametrize("with_c", [False, True])
def test_gemm_bias_folds(with_c):
    g = Graph(18)
    a = g.input("a", [3, 4])
    inputs = [a, g.const(np.ones((4, 5), np.float32))] + ([g.const(np.arange(5, dtype=np.float32))] if with_c else [])
    g.output(g.op("Add", g.op("Gemm", *inputs, beta=0.5), g.const(np.full((1, 5), 2.0, np.float32))))
    model, record = fuse(g.build())
    assert ops(model) == {"Gemm": 1} and record.counters["gemm-bias"] == 1


def test_matmul_add_to_gemm_is_opt_in_and_2d_only():
    def build(rank):
        g = Graph(18)
        a = g.input("a", [3, 4] if rank == 2 else [2, 3, 4])
        g.output(g.op("Add", g.op("MatMul", a, g.const(np.ones((4, 5), np.float32))), g.const(np.ones(5, np.float32))))
        return g.build()

    off, _ = fuse(build(2))
    on, record = fuse(build(2), [("fuse", {"enable": ["matmul-to-gemm"]})])
    three_d, _ = fuse(build(3), [("fuse", {"enable": ["matmul-to-gemm"]})])
    assert ops(off) == {"MatMul": 1, "Add": 1} and ops(on) == {"Gemm": 1} and ops(three_d) == {"MatMul": 1, "Add": 1}
    assert record.counters["matmul-to-gemm"] == 1


def test_two_constant_adds_after_a_conv_fold_in_one_run():
    """fuse is idempotent: a fold that enables itself again (Conv -> Add -> Add) repeats."""
    g = Graph(18)
    x = g.input("x", [1, 3, 6, 6])
    conv = g.op("Conv", x, g.const(weights((4, 3, 3, 3), 1)), kernel_shape=[3, 3])
    first = g.op("Add", conv, g.const(weights((1, 4, 1, 1), 2)))
    g.output(g.op("Add", first, g.const(weights((1, 4, 1, 1), 3))))
    model, record = fuse(g.build())
    assert [n.op for n in model.graph.nodes] == ["Conv"] and record.counters["conv-bias"] == 2


def test_a_dead_reader_of_the_conv_does_not_block_the_fold():
    """fuse is idempotent with dead nodes too: a reader nothing uses is removed before matching
    (it used to block conv-bias in the first run, which then removed it, so a second run fired)."""
    g = Graph(18)
    x = g.input("x", [1, 3, 6, 6])
    conv = g.op("Conv", x, g.const(weights((4, 3, 3, 3), 1)), kernel_shape=[3, 3])
    g.op("Relu", conv)  # read by nothing
    g.output(g.op("Add", conv, g.const(weights((1, 4, 1, 1), 2))))
    model, record = fuse(g.build())
    assert [n.op for n in model.graph.nodes] == ["Conv"] and record.counters["conv-bias"] == 1
