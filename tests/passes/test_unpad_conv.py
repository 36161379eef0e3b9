"""unpad-conv: a Conv's padding along a kernel-1 axis as a strided Slice and bias columns."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model


def conv(shape, out_channels, kernel, strides, pads, bias=True, group=1):
    rng = np.random.default_rng(3)
    weights = [numpy_helper.from_array(rng.standard_normal((out_channels, shape[1] // group, *kernel)).astype(np.float32), "w")]
    if bias:
        weights.append(numpy_helper.from_array(rng.standard_normal(out_channels).astype(np.float32), "b"))
    node = helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["y"], kernel_shape=kernel, strides=strides, pads=pads, group=group)
    spatial = shape[2:]
    out = [(length + pads[i] + pads[i + len(spatial)] - kernel[i]) // strides[i] + 1 for i, length in enumerate(spatial)]
    return make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape[0], out_channels, *out])], weights)


@st.composite
def geometries(draw):
    rank = draw(st.integers(1, 3))
    spatial, kernel, strides, begin, end = [], [], [], [], []
    for _ in range(rank):
        size = draw(st.sampled_from([1, 1, 2, 3]))
        kernel.append(size), strides.append(draw(st.integers(1, 3)))
        spatial.append(draw(st.integers(size, 7)))
        begin.append(draw(st.integers(0, 2))), end.append(draw(st.integers(0, 2)))
    return spatial, kernel, strides, begin + end


@settings(max_examples=60, deadline=None)
@given(geometries(), st.booleans(), st.sampled_from([1, 2]))
def test_the_slice_conv_and_bias_columns_equal_the_padded_conv(geometry, bias, group):
    spatial, kernel, strides, pads = geometry
    rank = len(spatial)
    # onnxruntime wants each pad smaller than the kernel except along kernel-1 axes it pads anyway
    assume(all(pads[a] < max(kernel[a], 3) and pads[a + rank] < max(kernel[a], 3) for a in range(rank)))
    model, records = assert_pass_preserves(conv([2, 2, *spatial], 4, kernel, strides, pads, bias, group), ["unpad-conv"])
    padded_unit = [a for a in range(rank) if kernel[a] == 1 and (pads[a] or pads[a + rank])]
    assert records[0].counters["convs_unpadded"] <= 1
    if records[0].counters["convs_unpadded"]:
        conv_node = next(n for n in model.graph.nodes if n.op == "Conv")
        assert all(conv_node.attrs["pads"][a] == conv_node.attrs["pads"][a + rank] == 0 for a in padded_unit)


def test_htps_wrong_conv_becomes_slice_conv_concat():
    model, records = assert_pass_preserves(conv([1, 4, 3, 6], 2, [3, 1], [2, 2], [0, 1, 0, 0]), ["unpad-conv"])
    assert [n.op for n in model.graph.nodes] == ["Slice", "Conv", "Concat"]
    concat = model.graph.nodes[-1]
    assert concat.inputs[0].values.shape == (1, 2, 1, 1)  # output column 0 reads only padding


def test_other_convs_are_left_alone():
    for proto in (conv([1, 2, 6, 6], 2, [3, 3], [1, 1], [1, 1, 1, 1]), conv([1, 2, 6, 6], 2, [3, 1], [1, 1], [1, 0, 1, 0])):
        _, records = assert_pass_preserves(proto, ["unpad-conv"])
        assert records[0].counters == {"convs_unpadded": 0}


@settings(max_examples=30, deadline=None)
@given(onnx_models(families=("conv", "elementwise", "unary", "pool")))
def test_random_graphs_keep_their_outputs(proto):
    assert_pass_preserves(proto, ["unpad-conv"])
