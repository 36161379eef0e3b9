"""unstride-conv: a strided, dilated depthwise Conv as a stride-1 Conv and a strided Slice."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import load
from mapc.passes import PassContext, PassManager
from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model


def conv1d(channels, group, length, kernel, stride, dilation, pads):
    weights = numpy_helper.from_array(np.random.default_rng(1).standard_normal((channels, channels // group, kernel)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[kernel], strides=[stride], dilations=[dilation], group=group, pads=pads)
    out = (length + sum(pads) - dilation * (kernel - 1) - 1) // stride + 1
    return make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, length])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, out])], [weights])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(3, 19), st.integers(1, 3), st.integers(2, 4), st.integers(2, 3), st.integers(0, 2), st.integers(0, 2))
def test_the_rewrite_equals_the_strided_conv_for_any_length_and_pads(channels, length, kernel, stride, dilation, pad_left, pad_right):
    assume(length + pad_left + pad_right >= dilation * (kernel - 1) + 1)
    model, records = assert_pass_preserves(conv1d(channels, channels, length, kernel, stride, dilation, [pad_left, pad_right]), ["unstride-conv"])
    conv = next(n for n in model.graph.nodes if n.op == "Conv")
    if kernel == 1:  # nothing to dilate: the dilation goes, the stride stays
        assert records[0].counters == {"convs_unstrided": 0, "dilations_normalized": 1} and list(conv.attrs["dilations"]) == [1]
        return
    assert records[0].counters["convs_unstrided"] == 1
    assert list(conv.attrs["strides"]) == [1] and [n.op for n in model.graph.nodes] == ["Conv", "Slice"]


@pytest.mark.parametrize(("group", "stride", "dilation"), [(1, 2, 2), (4, 1, 2), (4, 2, 1)])
def test_other_convs_are_left_alone(group, stride, dilation):
    _, records = assert_pass_preserves(conv1d(4, group, 16, 3, stride, dilation, [0, 0]), ["unstride-conv"])
    assert records[0].counters["convs_unstrided"] == 0 and not records[0].changed


@settings(max_examples=30, deadline=None)
@given(onnx_models(families=("conv", "elementwise", "unary", "reshape")))
def test_random_graphs_keep_their_outputs(proto):
    assert_pass_preserves(proto, ["unstride-conv"])


def test_same_padding_which_depends_on_the_stride_is_left_alone():
    proto = conv1d(4, 4, 16, 3, 2, 2, [0, 0])
    conv = proto.graph.node[0]
    del conv.attribute[[a.name for a in conv.attribute].index("pads")]
    conv.attribute.append(helper.make_attribute("auto_pad", "VALID"))
    assert assert_pass_preserves(proto, ["unstride-conv"])[1][0].counters["convs_unstrided"] == 1
    conv.attribute[-1].CopyFrom(helper.make_attribute("auto_pad", "SAME_UPPER"))
    records = PassManager(["unstride-conv"]).run(load(proto), PassContext())  # onnxruntime refuses dilated SAME: not run
    assert records[0].counters["convs_unstrided"] == 0


def conv2d(channels, shape, kernel, strides, dilations, pads):
    weights = numpy_helper.from_array(np.random.default_rng(2).standard_normal((channels, 1, *kernel)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=kernel, strides=strides, dilations=dilations, group=channels, pads=pads)
    out = [(shape[i] + pads[i] + pads[i + 2] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(2)]
    return make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, *shape])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, *out])], [weights])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.lists(st.integers(1, 9), min_size=2, max_size=2), st.lists(st.integers(1, 3), min_size=2, max_size=2),
       st.lists(st.integers(1, 3), min_size=2, max_size=2), st.lists(st.integers(1, 3), min_size=2, max_size=2), st.lists(st.integers(0, 2), min_size=4, max_size=4))
def test_a_2d_depthwise_conv_is_unstrided_per_axis_and_keeps_its_outputs(channels, shape, kernel, strides, dilations, pads):
    assume(all(shape[i] + pads[i] + pads[i + 2] >= dilations[i] * (kernel[i] - 1) + 1 for i in range(2)))
    model, records = assert_pass_preserves(conv2d(channels, shape, kernel, strides, dilations, pads), ["unstride-conv"])
    effective = [d if k > 1 else 1 for d, k in zip(dilations, kernel)]
    dilated = max(strides) > 1 and max(effective) > 1
    # HTP's a8w8 depthwise Conv fails to finalize with a stride over a size-1 kernel axis and one over a longer kernel axis
    one_axis = [i for i in range(2) if kernel[i] == 1 and strides[i] > 1 and strides[1 - i] > 1 and kernel[1 - i] > 1]
    expected = int(dilated or bool(one_axis))
    assert records[0].counters["convs_unstrided"] == expected
    conv = next(n for n in model.graph.nodes if n.op == "Conv")
    assert list(conv.attrs["dilations"]) == effective
    if expected:
        kept = [1, 1] if dilated else [1 if i in one_axis else strides[i] for i in range(2)]
        assert list(conv.attrs["strides"]) == kept and [n.op for n in model.graph.nodes] == ["Conv", "Slice"]


def test_a_dilation_over_a_kernel_of_size_one_is_dropped_without_unstriding():
    """The QNN property test drew it: kernel [2, 1], strides [1, 2], dilations [1, 2]."""
    model, records = assert_pass_preserves(conv2d(3, [4, 1], [2, 1], [1, 2], [1, 2], [1, 0, 0, 1]), ["unstride-conv"])
    assert records[0].counters == {"convs_unstrided": 0, "dilations_normalized": 1}
    assert [n.op for n in model.graph.nodes] == ["Conv"] and list(model.graph.nodes[0].attrs["dilations"]) == [1, 1]


def test_htps_unfinalizable_depthwise_conv_keeps_only_its_height_stride():
    """a8w8, kernel [3, 1] at strides [2, 2]: QNN fails to finalize it; the width's stride moves
    into a Slice, and [2, 1] builds."""
    model, records = assert_pass_preserves(conv2d(3, [4, 3], [3, 1], [2, 2], [1, 1], [0, 0, 0, 0]), ["unstride-conv"])
    conv, slice_node = model.graph.nodes
    assert list(conv.attrs["strides"]) == [2, 1] and list(slice_node.inputs[3].values) == [3] and list(slice_node.inputs[4].values) == [2]
