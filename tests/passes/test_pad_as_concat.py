"""pad-as-concat: a float constant-mode Pad as Concats with constant blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model


def pad_model(shape, pads, value=None, axes=None, mode="constant", opset=18):
    inputs = ["x", "pads", "value" if value is not None else "", *(["axes"] if axes is not None else [])]
    initializers = [numpy_helper.from_array(np.array(pads, np.int64), "pads")]
    if value is not None:
        initializers.append(numpy_helper.from_array(np.array(value, np.float32), "value"))
    if axes is not None:
        initializers.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
    node = helper.make_node("Pad", inputs, ["y"], mode=mode)
    return make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers, opset=opset)


@st.composite
def pads_of(draw):
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    pads = draw(st.lists(st.integers(0, 2), min_size=2 * len(shape), max_size=2 * len(shape)))
    return shape, pads


@settings(max_examples=60, deadline=None)
@given(pads_of(), st.sampled_from([None, 0.0, -1.5]))
def test_the_concats_equal_the_pad(geometry, value):
    shape, pads = geometry
    model, records = assert_pass_preserves(pad_model(shape, pads, value), ["pad-as-concat"])
    rank = len(shape)
    padded_axes = sum(1 for a in range(rank) if pads[a] or pads[a + rank])
    matches = rank >= 2 and not any(pads[rank - 2:rank]) and all(pads[2 * rank - 2:])
    assert records[0].counters == {"pads_as_concat": int(matches)}
    if matches:
        assert [n.op for n in model.graph.nodes] == ["Concat"] * padded_axes


def test_the_axes_input_names_the_padded_axes():
    model, records = assert_pass_preserves(pad_model([1, 3, 4, 4], [0, 0, 2, 1], axes=[-1, 2]), ["pad-as-concat"])
    assert records[0].counters == {"pads_as_concat": 1}
    assert [n.attrs["axis"] for n in model.graph.nodes] == [2, 3]


def test_htps_failing_shape_becomes_two_concats_of_zeros():
    model, _ = assert_pass_preserves(pad_model([1, 8, 6, 6], [0, 0, 0, 0, 0, 0, 1, 1]), ["pad-as-concat"])
    first, second = model.graph.nodes
    assert first.inputs[1].values.shape == (1, 8, 1, 6) and second.inputs[1].values.shape == (1, 8, 7, 1)
    assert not first.inputs[1].values.any()


@pytest.mark.parametrize("change", ["reflect", "crop", "quantized", "both ends", "one axis"])
def test_other_pads_are_left_alone(change):
    if change == "both ends":  # QNN computes these right
        proto = pad_model([1, 3, 4, 4], [0, 0, 1, 1, 0, 0, 1, 1])
    elif change == "one axis":
        proto = pad_model([1, 3, 4, 4], [0, 0, 0, 0, 0, 0, 0, 2])
    elif change == "reflect":
        proto = pad_model([1, 3, 4, 4], [0, 0, 1, 1, 0, 0, 1, 1], mode="reflect")
    elif change == "crop":
        proto = pad_model([1, 3, 4, 4], [0, 0, 0, 0, 0, 0, -1, 1])
    else:
        scale, zero = numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z")
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
                 helper.make_node("Pad", ["d", "pads"], ["y"])]
        proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                           [scale, zero, numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads")], opset=18)
    _, records = assert_pass_preserves(proto, ["pad-as-concat"])
    assert records[0].counters == {"pads_as_concat": 0} and not records[0].changed


@settings(max_examples=30, deadline=None)
@given(onnx_models(families=("conv", "pool", "elementwise", "concat", "reshape")))
def test_random_graphs_keep_their_outputs(proto):
    assert_pass_preserves(proto, ["pad-as-concat"])
