"""quantize: calibration data, streaming statistics, calibration methods and their fallbacks,
and the scheme/target contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import load
from mapc.ir.errors import UsageError
from mapc.passes.quantize import resolve
from mapc.passes.quantize.calibrate import TensorStats, collect
from mapc.passes.quantize.data import open_calibration
from mapc.passes.quantize.qtypes import QUANT_TYPES, activation_params
from mapc.passes.quantize.ranges import METHODS, choose_range
from mapc.passes.quantize.schemes import QuantizationSupport
from tests.conftest import make_model
from tests.passes.quantize.support import quantize

F = TensorProto.FLOAT
U8 = QUANT_TYPES["uint8"]
RNG = np.random.default_rng(2)


def two_inputs():
    return make_model(
        [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Cast", ["ids"], ["f"], to=F), helper.make_node("Mul", ["s", "f"], ["out"])],
        [helper.make_tensor_value_info("x", F, ["N", 3]), helper.make_tensor_value_info("y", F, ["N", 3]), helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
        [helper.make_tensor_value_info("out", F, ["N", 3])],
    )


def sample(batch=2):
    return {"x": RNG.standard_normal((batch, 3)).astype(np.float32), "y": RNG.standard_normal((batch, 3)).astype(np.float32), "ids": np.ones((batch, 3), np.int64)}


# -- data ------------------------------------------------------------------------------------------


def test_a_folder_of_npz_samples_is_read_in_name_order(tmp_path):
    samples = [sample() for _ in range(3)]
    for index, values in enumerate(samples):
        np.savez(tmp_path / f"s{index}.npz", **{("input:" + k if k == "x" else k): v for k, v in values.items()}, **{"output:out": np.zeros(1)})
    data = open_calibration(str(tmp_path), load(two_inputs()))
    assert len(data) == 3
    np.testing.assert_array_equal(data.sample(2)["x"], samples[2]["x"])
    assert data.sample(0)["ids"].dtype == np.int64


def test_stacked_arrays_in_one_npz_or_one_npy_per_input(tmp_path):
    stacked = {k: np.stack([sample()[k] for _ in range(4)]) for k in ("x", "y", "ids")}
    np.savez(tmp_path / "all.npz", **stacked)
    assert len(open_calibration(str(tmp_path / "all.npz"), load(two_inputs()))) == 4
    folder = tmp_path / "npy"
    folder.mkdir()
    for key, array in stacked.items():
        np.save(folder / f"{key}.npy", array)
    data = open_calibration(str(folder), load(two_inputs()))
    assert len(data) == 4 and data.sample(3)["y"].shape == (2, 3)


def test_float64_and_int32_arrays_are_converted_to_the_input_types(tmp_path):
    values = sample()
    np.savez(tmp_path / "a.npz", x=values["x"].astype(np.float64), y=values["y"], ids=values["ids"].astype(np.int32))
    first = open_calibration(str(tmp_path), load(two_inputs())).sample(0)
    assert first["x"].dtype == np.float32 and first["ids"].dtype == np.int64


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((2, 3), np.float32)}, "no array for input 'y'"),
    ({"x": np.zeros((2, 3), np.float32), "y": np.zeros((2, 3), np.float32), "ids": np.zeros((2, 3), np.float32)}, "needs int64"),
    ({"x": np.zeros((2, 4), np.float32), "y": np.zeros((2, 4), np.float32), "ids": np.zeros((2, 4), np.int64)}, "needs size 3 on axis 1"),
])
def test_a_sample_that_does_not_fit_the_model_is_a_usage_error(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UsageError, match=message):
        open_calibration(str(tmp_path), load(two_inputs()))


def test_missing_or_empty_calibration_data_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        open_calibration(str(tmp_path / "nope"), load(two_inputs()))
    with pytest.raises(UsageError, match="no .npz or .npy"):
        open_calibration(str(tmp_path), load(two_inputs()))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a readable .npz"):
        open_calibration(str(tmp_path / "broken.npz"), load(two_inputs()))


def test_random_data_is_seeded_and_fills_symbolic_dims():
    model = load(two_inputs())
    first = open_calibration("random", model, seed=3, random_samples=2)
    again = open_calibration("random", model, seed=3, random_samples=2)
    np.testing.assert_array_equal(first.sample(1)["x"], again.sample(1)["x"])
    assert first.is_random and first.sample(0)["x"].shape == (2, 3)


def test_random_data_looks_like_real_inputs_token_ids_over_the_vocabulary_and_padded_masks():
    """A language model calibrated on 'random' sees token ids over its whole embedding table (not
    only 0 and 1), an attention mask that mostly attends, and floats at unit scale."""
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["emb"]), helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "axis"], ["mu"]), helper.make_node("Mul", ["emb", "mu"], ["masked"]), helper.make_node("Add", ["masked", "x"], ["y"])]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [2, 16]), helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [2, 16]),
              helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16, 4])]
    inits = [numpy_helper.from_array(RNG.standard_normal((1000, 4)).astype(np.float32), "table"), numpy_helper.from_array(np.array([2], np.int64), "axis")]
    model = load(make_model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16, 4])], inits))
    data = open_calibration("random", model, seed=0, random_samples=4)
    samples = [data.sample(i) for i in range(4)]
    ids = np.concatenate([s["input_ids"].ravel() for s in samples])
    assert ids.min() >= 0 and ids.max() < 1000 and len(np.unique(ids)) > 100
    masks = np.stack([s["attention_mask"] for s in samples])
    assert set(np.unique(masks)) <= {0, 1} and 0.5 < masks.mean() < 1.0 and (masks[:3, 0, :] == 1).all()
    assert all(0.5 < np.std(s["x"]) < 2.0 for s in samples)


def test_the_pass_needs_calibration_and_rejects_bad_options():
    with pytest.raises(UsageError, match="needs calibration"):
        quantize(two_inputs(), calibration=None)
    with pytest.raises(UsageError, match="unknown quantization scheme"):
        quantize(two_inputs(), scheme="a3w2")
    with pytest.raises(UsageError, match="activation_type must be"):
        quantize(two_inputs(), activation_type="uint16")


# -- streaming statistics -----------------------------------------------------------------------------


def test_streaming_statistics_equal_whole_data_statistics_whatever_the_chunking():
    proto = two_inputs()
    model = load(proto)
    data = open_calibration("random", model, seed=0, random_samples=5)
    whole = collect(model, ["s", "out"], data, range(5), histograms=["s"], bins=64)
    chunked = collect(model, ["s", "out"], data, range(5), histograms=["s"], bins=64, memory_budget_mb=1e-6)
    assert chunked.chunks == 2
    values = np.concatenate([data.sample(i)["x"] + data.sample(i)["y"] for i in range(5)]).ravel()
    for result in (whole, chunked):
        stats = result.stats["s"]
        assert (stats.low, stats.high, stats.count) == (float(values.min()), float(values.max()), values.size)
        assert stats.histogram.sum() == values.size
    np.testing.assert_array_equal(whole.stats["s"].histogram, chunked.stats["s"].histogram)


def test_per_channel_means_for_bias_correction():
    stats = TensorStats()
    values = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32) + np.array([0, 5, -5], np.float32).reshape(1, 3, 1, 1)
    stats.update_range(values[:1], channel_axis=1)
    stats.update_range(values[1:], channel_axis=1)
    np.testing.assert_allclose(stats.channel_mean, values.mean(axis=(0, 2, 3)), rtol=1e-5)


def test_non_finite_values_are_counted_not_used():
    stats = TensorStats()
    stats.update_range(np.array([1.0, np.nan, -np.inf, 2.0, -3.0], np.float32))
    assert (stats.low, stats.high, stats.count, stats.nonfinite, stats.negative_infinite) == (-3.0, 2.0, 3, 2, 1)
    assert stats.mask_like


# -- methods ---------------------------------------------------------------------------------------------


def stats_of(values: np.ndarray, bins: int = 2048) -> TensorStats:
    stats = TensorStats()
    stats.update_range(values)
    if stats.observed and not stats.single_valued:
        stats.start_histogram(bins)
        stats.update_histogram(values)
    return stats


DEGENERATE = {
    "constant": np.full(100, 3.5, np.float32),
    "zeros": np.zeros(100, np.float32),
    "one value": np.array([-2.0], np.float32),
    "extremes": np.array([np.finfo(np.float32).max, np.finfo(np.float32).min, 0.0, 1.0], np.float32),
    "two spikes": np.array([0.0] * 50 + [1e30] * 50, np.float32),
    "nothing finite": np.array([np.nan, np.inf], np.float32),
    "empty": np.zeros(0, np.float32),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", DEGENERATE, ids=list(DEGENERATE))
@pytest.mark.parametrize("qtype", ["uint8", "int16"])
def test_no_method_aborts_on_a_degenerate_tensor(method, case, qtype):
    stats = stats_of(DEGENERATE[case])
    choice = choose_range(stats, method, QUANT_TYPES[qtype])
    assert math.isfinite(choice.low) and math.isfinite(choice.high) and choice.low <= choice.high
    if method != "minmax" and case in ("constant", "zeros", "one value", "nothing finite", "empty"):
        assert choice.method == "minmax" and choice.fallback
    scale, zero_point = activation_params(choice.low, choice.high, QUANT_TYPES[qtype])
    assert scale > 0 and math.isfinite(scale) and QUANT_TYPES[qtype].qmin <= zero_point <= QUANT_TYPES[qtype].qmax


def test_entropy_at_sixteen_bits_falls_back_and_says_why():
    choice = choose_range(stats_of(RNG.standard_normal(10000).astype(np.float32)), "entropy", QUANT_TYPES["uint16"])
    assert choice.method == "minmax" and "finer than" in choice.fallback


def test_clipping_methods_cut_outliers_that_minmax_keeps():
    values = np.concatenate([RNG.standard_normal(100_000), [80.0]]).astype(np.float32)
    stats = stats_of(values)
    minmax = choose_range(stats, "minmax", U8)
    assert minmax.high == 80.0
    for method in ("percentile", "entropy"):
        choice = choose_range(stats, method, U8, percentile=99.99)
        assert choice.fallback is None and choice.high < 10, method
    assert choose_range(stats, "percentile", U8).high > 79.9  # 99.999 % of 100 001 values keeps it
    # mse keeps a lone outlier: clipping it costs (80 - 5)², more than the coarser grid costs
    assert choose_range(stats, "mse", U8).high > 70


def test_mse_range_has_no_more_expected_error_than_minmax():
    values = RNG.laplace(size=50_000).astype(np.float32)
    stats = stats_of(values)

    def error(low, high):
        scale, zero = activation_params(low, high, U8)
        codes = np.clip(np.rint(values / scale) + zero, 0, 255)
        return float(np.square((codes - zero) * scale - values).mean())

    mse, minmax = choose_range(stats, "mse", U8), choose_range(stats, "minmax", U8)
    assert error(mse.low, mse.high) < error(minmax.low, minmax.high)


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_degenerate_model_tensors_fall_back_per_tensor_and_are_reported(method):
    proto = make_model(
        [helper.make_node("Mul", ["x", "zero"], ["zeros"]), helper.make_node("Add", ["x", "zeros"], ["y"])],
        [helper.make_tensor_value_info("x", F, [4, 4])],
        [helper.make_tensor_value_info("y", F, [4, 4])],
        [numpy_helper.from_array(np.array(0, np.float32), "zero")],
    )
    _, record = quantize(proto, calibration_method=method)
    reasons = {entry["tensor"]: entry["reason"] for entry in record.details["calibration"]["fallbacks"]}
    assert "single-valued" in reasons["zeros"]
    assert record.counters["calibration_fallbacks"] == len(reasons)


# -- scheme / target contract ------------------------------------------------------------------------------


def test_a_target_picks_the_activation_type_and_placement_for_a_scheme():
    qnn = QuantizationSupport(schemes=("a8w8", "a16w8"), activation_types=("uint8", "uint16"), per_channel_matmul=False, norm_scale_type="uint8")
    assert resolve("a16w8", qnn, calibration="data") == {
        "scheme": "a16w8", "activation_type": "uint16", "symmetric_activations": False, "per_channel_matmul": False,
        "norm_scale_type": "uint8", "calibration": "data",
    }
    signed = QuantizationSupport(schemes=("a8w8",), activation_types=("int8",), symmetric_activations=True)
    assert resolve("a8w8", signed)["activation_type"] == "int8"
    with pytest.raises(UsageError, match="does not run scheme 'w4'"):
        resolve("w4", qnn)
    with pytest.raises(UsageError, match="does not accept int8"):
        resolve("a8w8", qnn, activation_type="int8")
    assert resolve("a8w8") == {"scheme": "a8w8"}


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_clipping_methods_leave_bounded_tensors_and_decision_inputs_whole(method):
    """GELU's 1 + erf(x/√2) is bounded by construction; KL used to clip it (Whisper: 22 dB
    instead of 37). Logits feeding a Softmax decide the class; clipping them changes it."""
    proto = make_model(
        [
            helper.make_node("Div", ["x", "sqrt2"], ["scaled"]),
            helper.make_node("Erf", ["scaled"], ["erf"]),
            helper.make_node("Add", ["erf", "one"], ["one_plus"]),
            helper.make_node("Mul", ["x", "one_plus"], ["gelu2"]),
            helper.make_node("Softmax", ["gelu2"], ["y"], axis=1),
        ],
        [helper.make_tensor_value_info("x", F, [4, 64])],
        [helper.make_tensor_value_info("y", F, [4, 64])],
        [numpy_helper.from_array(np.array(np.sqrt(2), np.float32), "sqrt2"), numpy_helper.from_array(np.array(1, np.float32), "one")],
    )
    _, record = quantize(proto, calibration_method=method, random_samples=10)
    reasons = {entry["tensor"]: entry["reason"] for entry in record.details["calibration"]["fallbacks"]}
    assert "bounded by construction" in reasons["erf"] and "bounded by construction" in reasons["one_plus"]
    assert "clipping changes decisions" in reasons["gelu2"]
    assert "x" not in reasons and "scaled" not in reasons
