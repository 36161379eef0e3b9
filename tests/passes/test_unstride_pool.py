"""unstride-pool: a float MaxPool's stride over a kernel axis of size 1 as a strided Slice."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model


def max_pool(shape, kernel, strides, **attrs):
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=kernel, strides=strides, **attrs)
    return make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=3))
def test_the_slice_and_pool_equal_the_strided_pool(axes):
    shape = [2, 3, *(max(length, kernel) for length, kernel, _ in axes)]
    kernel, strides = [k for _, k, _ in axes], [s for _, _, s in axes]
    model, records = assert_pass_preserves(max_pool(shape, kernel, strides), ["unstride-pool"])
    moved = any(k == 1 and s > 1 for k, s in zip(kernel, strides))
    assert records[0].counters == {"pools_unstrided": int(moved)}
    if moved:
        slice_node, pool = model.graph.nodes
        assert slice_node.op == "Slice" and all(s == 1 for k, s in zip(kernel, pool.attrs["strides"]) if k == 1)


def test_htps_aborting_pool_strides_its_width_in_a_slice():
    model, _ = assert_pass_preserves(max_pool([1, 4, 8, 8], [2, 1], [2, 2]), ["unstride-pool"])
    slice_node, pool = model.graph.nodes
    assert list(slice_node.inputs[3].values) == [3] and list(slice_node.inputs[4].values) == [2]
    assert list(pool.attrs["strides"]) == [2, 1] and list(slice_node.outputs[0].shape) == [1, 4, 8, 4]


@pytest.mark.parametrize("change", ["indices", "ceil mode", "quantized"])
def test_other_pools_are_left_alone(change):
    if change == "indices":
        proto = max_pool([1, 4, 8, 8], [2, 1], [2, 2])
        proto.graph.node[0].output.append("indices")
        proto.graph.output.append(helper.make_tensor_value_info("indices", TensorProto.INT64, None))
    elif change == "ceil mode":
        proto = max_pool([1, 4, 8, 8], [2, 1], [2, 2], ceil_mode=1)
    else:
        scale, zero = numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z")
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
                 helper.make_node("MaxPool", ["d"], ["y"], kernel_shape=[2, 1], strides=[2, 2])]
        proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [scale, zero])
    _, records = assert_pass_preserves(proto, ["unstride-pool"])
    assert records[0].counters == {"pools_unstrided": 0} and not records[0].changed


@settings(max_examples=30, deadline=None)
@given(onnx_models(families=("pool", "conv", "elementwise", "unary")))
def test_random_graphs_keep_their_outputs(proto):
    assert_pass_preserves(proto, ["unstride-pool"])
