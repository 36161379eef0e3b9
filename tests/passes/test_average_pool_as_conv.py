"""average-pool-as-conv: a padded float AveragePool as a depthwise Conv (and a count correction)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.passes.windows import same_pads, window_counts
from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model


def pool_model(spatial, kernel, strides, dilations, pads=None, count_include_pad=0, auto_pad="NOTSET", ceil_mode=0, channels=3):
    attrs = {"kernel_shape": kernel, "strides": strides, "dilations": dilations, "count_include_pad": count_include_pad, "ceil_mode": ceil_mode}
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
    else:
        attrs["auto_pad"] = auto_pad
    node = helper.make_node("AveragePool", ["x"], ["y"], **attrs)
    return make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, channels, *spatial])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], opset=19)


@st.composite
def geometries(draw):
    rank = draw(st.integers(1, 3))
    spatial, kernel, strides, dilations = [], [], [], []
    for _ in range(rank):
        k, d = draw(st.integers(1, 4)), draw(st.integers(1, 2))
        spatial.append(draw(st.integers((k - 1) * d + 1, 9)))
        kernel.append(k), strides.append(draw(st.integers(1, 3))), dilations.append(d)
    # onnxruntime wants each pad smaller than the kernel
    begin = [draw(st.integers(0, k - 1)) for k in kernel]
    end = [draw(st.integers(0, k - 1)) for k in kernel]
    return spatial, kernel, strides, dilations, begin + end


@settings(max_examples=60, deadline=None)
@given(geometries(), st.booleans())
def test_the_rewrite_equals_the_padded_pool(geometry, count_include_pad):
    spatial, kernel, strides, dilations, pads = geometry
    assume(any(pads))
    model, records = assert_pass_preserves(pool_model(spatial, kernel, strides, dilations, pads, int(count_include_pad)), ["average-pool-as-conv"])
    assert records[0].counters == {"pools_as_conv": 1}
    conv = model.graph.nodes[0]
    assert conv.op == "Conv" and conv.attrs["group"] == 3 and conv.attrs["pads"] == pads


@settings(max_examples=30, deadline=None)
@given(geometries(), st.sampled_from(["SAME_UPPER", "SAME_LOWER"]), st.booleans())
def test_same_padding_becomes_explicit(geometry, auto_pad, count_include_pad):
    spatial, kernel, strides, dilations, _ = geometry
    assume(all(d == 1 for d in dilations))  # onnxruntime refuses a dilated AveragePool with SAME padding
    assert_pass_preserves(pool_model(spatial, kernel, strides, dilations, None, int(count_include_pad), auto_pad), ["average-pool-as-conv"])


def test_the_counts_are_those_of_the_window_inside_the_input():
    # length 5, kernel 3, stride 2, pads (1, 1): windows [-1..1], [1..3], [3..5]
    assert window_counts(5, 3, 2, 1, 1, 1).tolist() == [2, 3, 2]
    assert window_counts(4, 2, 1, 2, 2, 0).tolist() == [1, 1, 2, 2]  # dilation 2: positions o-2 and o
    assert same_pads(5, 3, 2, 1, upper=True) == (1, 1) and same_pads(6, 4, 1, 1, upper=True) == (1, 2)
    assert same_pads(6, 4, 1, 1, upper=False) == (2, 1)
    assert same_pads(3, 1, 3, 1, upper=True) == (-1, -1)  # a crop: left alone


def test_the_counted_padding_needs_no_correction_and_the_uncounted_one_a_constant():
    counted, _ = assert_pass_preserves(pool_model([8, 8], [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 1), ["average-pool-as-conv"])
    assert [n.op for n in counted.graph.nodes] == ["Conv"]
    assert counted.graph.nodes[0].inputs[1].values.shape == (3, 1, 3, 3)
    uncounted, _ = assert_pass_preserves(pool_model([8, 8], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], 0), ["average-pool-as-conv"])
    assert [n.op for n in uncounted.graph.nodes] == ["Conv", "Mul"]
    correction = uncounted.graph.nodes[-1].inputs[1].values
    assert correction.shape == (1, 1, 4, 4) and correction[0, 0, 0, 0] == pytest.approx(9 / 4) and correction[0, 0, 1, 1] == 1


@pytest.mark.parametrize("change", ["no padding", "ceil mode", "quantized input"])
def test_other_pools_are_left_alone(change):
    if change == "no padding":
        proto = pool_model([8, 8], [3, 3], [1, 1], [1, 1], [0, 0, 0, 0])
    elif change == "ceil mode":
        proto = pool_model([8, 8], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], ceil_mode=1)
    else:
        scale, zero = numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z")
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
                 helper.make_node("AveragePool", ["d"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
        proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [scale, zero], opset=19)
    _, records = assert_pass_preserves(proto, ["average-pool-as-conv"])
    assert records[0].counters == {"pools_as_conv": 0} and not records[0].changed


@settings(max_examples=30, deadline=None)
@given(onnx_models(families=("pool", "conv", "elementwise", "unary")))
def test_random_graphs_keep_their_outputs(proto):
    assert_pass_preserves(proto, ["average-pool-as-conv"])
