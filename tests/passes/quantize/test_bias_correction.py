"""quantize: the expected output shift bias correction removes from a Conv, padding included.

A tap reading the zero padding sees 0, not the channel mean: the per-channel constant that best
cancels the shift counts each tap with the fraction of output positions where it reads the
input (``tap_coverage``). Both are checked against onnxruntime running the Conv itself."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import Runner, load
from mapc.passes.quantize.weights import conv_bias_correction, tap_coverage
from tests.conftest import make_model

F = TensorProto.FLOAT


@st.composite
def convs(draw):
    """A Conv's spatial input size, kernel and attributes (explicit pads or auto_pad), 1-D or 2-D."""
    rank = draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(1, 9)) for _ in range(rank))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    attrs = {"strides": [draw(st.integers(1, 3)) for _ in range(rank)], "dilations": [draw(st.integers(1, 2)) for _ in range(rank)]}
    auto_pad = draw(st.sampled_from(["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"]))
    if auto_pad == "NOTSET":
        attrs["pads"] = [draw(st.integers(0, 2)) for _ in range(2 * rank)]
    else:
        attrs["auto_pad"] = auto_pad
        if auto_pad.startswith("SAME"):
            attrs["dilations"] = [1] * rank  # onnxruntime's SAME padding assumes dilation 1
    return spatial, kernel, attrs


def conv_means(x: np.ndarray, w: np.ndarray, attrs: dict, group: int = 1) -> np.ndarray:
    """onnxruntime's Conv of ``x`` with ``w`` (no bias), averaged over batch and positions."""
    out_channels = w.shape[0]
    proto = make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], group=group, **attrs)],
        [helper.make_tensor_value_info("x", F, list(x.shape))],
        [helper.make_tensor_value_info("y", F, None)],
        [numpy_helper.from_array(w.astype(np.float32), "w")],
    )
    y = Runner(load(proto)).run({"x": x.astype(np.float32)})["y"]
    assert y.shape[1] == out_channels
    return y.astype(np.float64).mean(axis=tuple(a for a in range(y.ndim) if a != 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(convs())
def test_tap_coverage_is_the_share_of_output_positions_where_each_tap_reads_the_input(conv):
    spatial, kernel, attrs = conv
    coverage = tap_coverage(spatial, kernel, attrs)
    assume(coverage is not None)
    taps = int(np.prod(kernel))
    one_hot = np.eye(taps).reshape(taps, 1, *kernel)  # output channel t reads tap t only
    np.testing.assert_allclose(coverage.reshape(-1), conv_means(np.ones((1, 1, *spatial)), one_hot, attrs), atol=1e-6)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(convs(), st.sampled_from([1, 2]), st.integers(0, 2**16))
def test_the_correction_is_the_mean_shift_a_constant_input_sees_through_the_padding(conv, group, seed):
    """With every input channel at its mean everywhere, the Conv of the weight error averaged
    over the output is exactly the shift (grouped too); ignoring the border overstates it."""
    spatial, kernel, attrs = conv
    coverage = tap_coverage(spatial, kernel, attrs)
    assume(coverage is not None)
    rng = np.random.default_rng(seed)
    channels, out_channels = 2 * group, 2 * group
    delta = rng.standard_normal((out_channels, channels // group, *kernel))
    mean = rng.uniform(0.5, 2.0, channels)
    x = np.broadcast_to(mean.reshape(1, channels, *[1] * len(spatial)), (1, channels, *spatial))
    expected = conv_means(x, delta, attrs, group)
    np.testing.assert_allclose(conv_bias_correction(delta, mean, group, coverage), expected, rtol=1e-4, atol=1e-5)
    if not np.allclose(coverage, 1.0):
        assert not np.allclose(conv_bias_correction(delta, mean, group), expected, rtol=1e-4, atol=1e-5)


def test_coverage_is_none_when_the_attributes_do_not_fit_the_input():
    assert tap_coverage((4, 4), (3,), {}) is None
    assert tap_coverage((2,), (5,), {}) is None  # no output position
