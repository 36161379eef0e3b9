"""unstride-conv: a strided, dilated 1-D depthwise Conv as a stride-1 Conv and a strided Slice."""

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
    assert records[0].counters["convs_unstrided"] == 1
    conv = next(n for n in model.graph.nodes if n.op == "Conv")
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
