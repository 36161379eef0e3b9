"""decompose-lrn: LRN as x * (bias + Conv(x*x, W)) ** -beta, for silicon whose LRN lacks 16 bits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from mapc import compile
from mapc.ir import Tolerance, load, run
from mapc.passes import PassContext, PassManager, get_pass
from mapc.passes.decompose_lrn import window_weights
from mapc.testing import assert_pass_preserves
from tests.conftest import make_model


def lrn_model(channels: int, size: int, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0, spatial=(5, 6)):
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha, beta=beta, bias=bias)
    shape = [2, channels, *spatial]
    return make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])


#: onnxruntime's LRN kernel itself is off by up to ~2e-3 relative (its power is approximate: for
#: x = 5.5167, alpha 0.01, beta 0.5 it gives 4.829802 where float64 and the decomposition give
#: 4.830437); so onnxruntime is the coarse check and float64 the exact one, at float32's tolerance.
ORT_LRN = Tolerance(rtol=3e-3, atol=1e-5)


def reference(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """ONNX's LRN definition in float64."""
    squares = x.astype(np.float64) ** 2
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    channels = x.shape[1]
    total = np.stack([squares[:, max(0, c - before):min(channels, c + after + 1)].sum(axis=1) for c in range(channels)], axis=1)
    return x * (bias + alpha / size * total) ** -beta


def at_16_bits():
    return get_pass("decompose-lrn")(activations="int16")


def test_the_window_matrix_is_lrns_channel_window_clipped_at_the_edges():
    weights = window_weights(5, 4, 1.0, np.float32) * 4  # size 4: one channel before, two after
    assert weights.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [0, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 1, 1]]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 24), st.sampled_from([1, 3, 5, 7]), st.sampled_from([1e-4, 1e-2, 0.5]), st.sampled_from([0.5, 0.75, 1.0]),
       st.sampled_from([1.0, 2.0, 0.5]), st.sampled_from([(5, 6), (1, 9), (3, 1)]))
def test_the_decomposition_equals_onnxruntimes_lrn_and_the_definition(channels, size, alpha, beta, bias, spatial):
    """onnxruntime's LRN kernel takes odd sizes over 4-D inputs; even sizes are checked against
    the definition alone (below)."""
    proto = lrn_model(channels, size, alpha, beta, bias, spatial)
    feeds = {"x": np.random.default_rng(channels).standard_normal((2, channels, *spatial)).astype(np.float32)}
    model, records = assert_pass_preserves(proto, [at_16_bits()], feeds=feeds, tolerance=ORT_LRN)
    assert records[0].counters["lrns_decomposed"] == 1
    assert sorted(n.op for n in model.graph.nodes) == ["Add", "Conv", "Mul", "Mul", "Pow"]
    for scale in (1e-3, 1.0, 1e3):
        x = (np.random.default_rng(channels).standard_normal((2, channels, *spatial)) * scale).astype(np.float32)
        np.testing.assert_allclose(run(model, {"x": x})["y"], reference(x, size, alpha, beta, bias), rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("size", [1, 2, 4, 5])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 1e3])
def test_the_decomposition_is_lrns_definition_also_for_even_sizes(size, scale):
    proto = lrn_model(7, size, alpha=0.01, beta=0.75, bias=2.0)
    model = load(proto)
    PassManager([at_16_bits()]).run(model, PassContext(seed=0))
    x = (np.random.default_rng(size).standard_normal((2, 7, 5, 6)) * scale).astype(np.float32)
    np.testing.assert_allclose(run(model, {"x": x})["y"], reference(x, size, 0.01, 0.75, 2.0), rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 1e3])
def test_inputs_at_every_scale_keep_their_outputs(scale):
    feeds = {"x": (np.random.default_rng(3).standard_normal((2, 16, 5, 6)) * scale).astype(np.float32)}
    assert_pass_preserves(lrn_model(16, 5), [at_16_bits()], feeds=feeds, tolerance=ORT_LRN)


@pytest.mark.parametrize("activations", ["float", "int8"])
def test_below_16_bits_the_native_lrn_stays(activations):
    _, records = assert_pass_preserves(lrn_model(8, 5), [get_pass("decompose-lrn")(activations=activations)])
    assert records[0].counters["lrns_decomposed"] == 0 and not records[0].changed


def test_a_dynamic_channel_count_keeps_the_lrn_with_a_note():
    proto = lrn_model(8, 5)
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[1].dim_param = "channels"
    _, records = assert_pass_preserves(proto, [at_16_bits()], feeds={"x": np.ones((2, 8, 5, 6), np.float32)})
    assert [note.code for note in records[0].notes] == ["decompose-lrn.kept"]


def test_the_precision_follows_the_quantize_step_on_qnn_htp():
    result = compile(lrn_model(8, 5), target="qnn-htp", quantize={"scheme": "a16w8", "calibration": "random"})
    assert "LRN" not in {n.op for n in result.model.graph.nodes}
    result = compile(lrn_model(8, 5), target="qnn-htp", quantize={"scheme": "a8w8", "calibration": "random"})
    assert "LRN" in {n.op for n in result.model.graph.nodes}
