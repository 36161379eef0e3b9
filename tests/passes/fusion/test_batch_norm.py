"""conv-batch-norm and batch-norm: BatchNormalization folded into weights or made Mul+Add."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .common import fuse, misses, ops
from .graphs import ConvSpec, Graph, conv_model


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_conv_and_batch_norm_fold_into_the_weights(transpose, group, bias):
    model, record = fuse(conv_model(ConvSpec(channels=4, out_channels=4, group=group, transpose=transpose, bias=bias)))
    assert ops(model) == {"ConvTranspose" if transpose else "Conv": 1, "Relu": 1}
    assert record.counters["conv-batch-norm"] == 1


def test_shared_weight_is_a_near_miss():
    g = Graph(18)
    x = g.input("x", [1, 2, 4, 4])
    weight = g.const(np.ones((2, 2, 1, 1), np.float32))
    params = [g.const(np.full(2, v, np.float32)) for v in (1.5, 0.1, 0.2, 0.9)]
    g.output(g.op("BatchNormalization", g.op("Conv", x, weight), *params))
    g.output(g.op("Conv", x, weight))
    model, record = fuse(g.build())
    assert [m["code"] for m in misses(record, "conv-batch-norm")] == ["shared-weight"]
    assert ops(model)["BatchNormalization"] == 0 and ops(model)["Mul"] == 1  # still made Mul+Add


def test_lone_batch_norm_becomes_mul_and_add():
    g = Graph(18)
    x = g.input("x", [2, 3, 4])
    params = [g.const(np.asarray(v, np.float32)) for v in ([1.0, 2.0, 0.5], [0.0, 1.0, -1.0], [0.1, 0.2, 0.3], [1.0, 0.5, 2.0])]
    g.output(g.op("BatchNormalization", g.op("Relu", x), *params))
    model, record = fuse(g.build())
    assert ops(model) == {"Relu": 1, "Mul": 1, "Add": 1} and record.counters["batch-norm"] == 1


def test_batch_norm_with_computed_statistics_is_a_near_miss():
    g = Graph(18)
    x = g.input("x", [2, 3, 4])
    mean = g.input("mean", [3])
    params = [g.const(np.ones(3, np.float32)), g.const(np.zeros(3, np.float32)), mean, g.const(np.ones(3, np.float32))]
    g.output(g.op("BatchNormalization", x, *params))
    _, record = fuse(g.build())
    assert [m["code"] for m in misses(record, "batch-norm")] == ["parameters"]


def test_batch_norm_with_negative_variance_is_a_near_miss():
    g = Graph(18)
    x = g.input("x", [2, 3, 4])
    params = [g.const(np.ones(3, np.float32)), g.const(np.zeros(3, np.float32)), g.const(np.zeros(3, np.float32)), g.const(np.asarray([1.0, -2.0, 1.0], np.float32))]
    g.output(g.op("BatchNormalization", x, *params))
    model, record = fuse(g.build())
    assert [m["code"] for m in misses(record, "batch-norm")] == ["variance"]
    assert ops(model)["BatchNormalization"] == 1


@settings(max_examples=30)
@given(
    spec=st.builds(
        ConvSpec,
        channels=st.sampled_from([2, 4]),
        out_channels=st.sampled_from([2, 4]),
        group=st.sampled_from([1, 2]),
        transpose=st.booleans(),
        bias=st.booleans(),
        add=st.sampled_from(["none", "channel", "scalar"]),
        batch_norm=st.booleans(),
        spatial=st.sampled_from([(5,), (4, 5)]),
    )
)
def test_convolution_folds_agree(spec):
    model, _ = fuse(conv_model(spec))
    assert set(ops(model)) == {"ConvTranspose" if spec.transpose else "Conv", "Relu"}
