"""pool-as-global: a pool whose one window covers its whole input, as the global pool."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model


def pool(op, shape, kernel, **attrs):
    node = helper.make_node(op, ["x"], ["p"], kernel_shape=kernel, **attrs)
    return make_model([node, helper.make_node("Neg", ["p"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


def rewritten_to(proto):
    model, records = assert_pass_preserves(proto, ["pool-as-global"])
    return model.graph.nodes[0].op, records[0].counters["pools_made_global"]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(["AveragePool", "MaxPool"]), st.lists(st.tuples(st.integers(1, 6), st.integers(1, 8), st.integers(0, 2), st.integers(0, 2), st.integers(1, 3)), min_size=1, max_size=2),
       st.integers(0, 1), st.integers(0, 1))
def test_the_global_pool_equals_the_pool_on_every_input(op, axes, count_include_pad, ceil_mode):
    """Whatever the pool, the pass keeps its outputs; it rewrites exactly those with one window
    over the whole input (checked against the window's positions, listed by hand)."""
    shape = [2, 3, *(length for length, *_ in axes)]
    kernel = [max(k, 1) for _, k, *_ in axes]
    pads = [b for *_, b, _, _ in axes] + [e for *_, e, _ in axes]
    strides = [s for *_, s in axes]
    if any(p >= k for p, k in zip(pads, kernel * 2)) or any(length + b + e < k for length, k, b, e, _ in axes):
        return  # onnxruntime refuses pads as large as the kernel; no window at all
    attrs = {"pads": pads, "strides": strides, "ceil_mode": ceil_mode}
    if op == "AveragePool":
        attrs["count_include_pad"] = count_include_pad
    proto = pool(op, shape, kernel, **attrs)
    result, count = rewritten_to(proto)
    whole = True
    for length, k, begin, end, stride in axes:
        out = (length + begin + end - k + (stride - 1 if ceil_mode else 0)) // stride + 1
        window = set(range(-begin, -begin + k))
        whole &= out == 1 and k - 1 - begin <= length - 1 + end and set(range(length)) <= window and (not (op == "AveragePool" and count_include_pad) or window <= set(range(length)))
    assert count == int(whole) and (result.startswith("Global") == whole)


def test_inception_v1s_last_pool_is_a_global_average():
    assert rewritten_to(pool("AveragePool", [1, 16, 6, 6], [7, 7], pads=[0, 0, 1, 1])) == ("GlobalAveragePool", 1)


@pytest.mark.parametrize(("op", "shape", "kernel", "attrs", "expected"), [
    ("MaxPool", [1, 4, 5, 5], [5, 5], {}, "GlobalMaxPool"),
    ("AveragePool", [1, 4, 5, 5], [5, 5], {"auto_pad": "SAME_UPPER", "strides": [5, 5]}, "GlobalAveragePool"),
    ("AveragePool", [1, 4, 6, 6], [7, 7], {"pads": [0, 0, 1, 1], "count_include_pad": 1}, "AveragePool"),  # divides by 49
    ("MaxPool", [1, 4, 5, 5], [3, 3], {"dilations": [2, 2]}, "MaxPool"),  # reads every other position
    ("AveragePool", [1, 4, 6, 6], [5, 5], {}, "AveragePool"),  # two windows per axis
    ("MaxPool", [1, 4, 6, 6], [3, 3], {"strides": [3, 3]}, "MaxPool"),
])
def test_other_pools(op, shape, kernel, attrs, expected):
    assert rewritten_to(pool(op, shape, kernel, **attrs))[0] == expected


@settings(max_examples=30, deadline=None)
@given(onnx_models(families=("pool", "conv", "elementwise", "unary")))
def test_random_graphs_keep_their_outputs(proto):
    assert_pass_preserves(proto, ["pool-as-global"])
