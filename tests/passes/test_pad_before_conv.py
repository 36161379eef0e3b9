"""pad-before-conv: a Conv's padding along axes where its kernel has size 1, as a Pad before it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model


def conv(shape, kernel, strides, pads, group=1, bias=True, **attrs):
    channels = shape[1]
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((4 * group, channels // group, *kernel)).astype(np.float32), "w")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(4 * group).astype(np.float32), "b"))
    node = helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["y"], kernel_shape=kernel, strides=strides, pads=pads, group=group, **attrs)
    return make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits, opset=17)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 7), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=3),
       st.sampled_from([1, 2]), st.booleans())
def test_the_pad_and_conv_equal_the_padded_conv(axes, group, bias):
    """Any kernel, stride and padding per axis: the outputs are kept, and the Pad takes exactly
    the padding of the kernel axes of size 1 (the Conv keeps the rest)."""
    assume(all(length + b + e >= k for length, k, _, b, e in axes))
    kernel, pads = [k for _, k, *_ in axes], [b for *_, b, _ in axes] + [e for *_, e in axes]
    model, records = assert_pass_preserves(conv([1, 2, *(a[0] for a in axes)], kernel, [a[2] for a in axes], pads, group, bias), ["pad-before-conv"])
    moved = [i for i, k in enumerate(kernel) if k == 1 and (pads[i] or pads[i + len(kernel)])]
    assert records[0].counters == {"convs_padded_before": int(bool(moved))}
    node = next(n for n in model.graph.nodes if n.op == "Conv")
    assert [p for i, p in enumerate(node.attrs["pads"]) if i % len(kernel) in moved] == [0] * (2 * len(moved))
    if moved:
        pad = next(n for n in model.graph.nodes if n.op == "Pad")
        assert pad.outputs[0] is node.inputs[0]


def test_htps_wrong_conv_gets_its_width_padding_from_a_pad():
    model, _ = assert_pass_preserves(conv([1, 4, 8, 8], [3, 1], [2, 2], [1, 1, 1, 1]), ["pad-before-conv"])
    pad, node = model.graph.nodes
    assert list(pad.inputs[1].values) == [0, 0, 0, 1, 0, 0, 0, 1] and list(pad.outputs[0].shape) == [1, 4, 8, 10]
    assert list(node.attrs["pads"]) == [1, 0, 1, 0]


@pytest.mark.parametrize("attrs", [{"auto_pad": "SAME_UPPER", "pads": None}, {"pads": [1, 1, 1, 1], "kernel": [3, 3]}, {"pads": [0, 0, 0, 0]}])
def test_other_convs_are_left_alone(attrs):
    kernel = attrs.pop("kernel", [3, 1])
    pads = attrs.pop("pads")
    proto = conv([1, 4, 8, 8], kernel, [1, 1], pads, **attrs) if pads is not None else conv([1, 4, 8, 8], kernel, [1, 1], [0, 0, 0, 0], **attrs)
    if pads is None:
        del proto.graph.node[0].attribute[[a.name for a in proto.graph.node[0].attribute].index("pads")]
    _, records = assert_pass_preserves(proto, ["pad-before-conv"])
    assert records[0].counters == {"convs_padded_before": 0} and not records[0].changed


@settings(max_examples=30, deadline=None)
@given(onnx_models(families=("conv", "elementwise", "unary", "reshape", "pool")))
def test_random_graphs_keep_their_outputs(proto):
    assert_pass_preserves(proto, ["pad-before-conv"])
