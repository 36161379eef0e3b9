"""quantize: the per-channel axis of every weighted op, biases on the right scales, 4-bit blocks.

Each weight has output channels whose magnitudes differ by up to 1000×: quantized on the
right axis every channel keeps int8 precision (error at most half a step of its own scale);
on a wrong axis the small channels would be crushed to zero.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import Runner, UsageError
from tests.conftest import make_model
from tests.passes.quantize.support import dequantize_of, quantize, structure_problems

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def spread(shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Random weights whose slices along ``axis`` have magnitudes 1, 10, 100, 1000, 1, ..."""
    values = RNG.standard_normal(shape).astype(np.float32)
    scales = (10.0 ** (np.arange(shape[axis]) % 4)).astype(np.float32)
    view = [1] * len(shape)
    view[axis] = -1
    return values * scales.reshape(view) / 1000


def const(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def single_op(op: str, x_shape, y_shape, weight, bias=None, **attrs):
    inputs = ["x", "w"] + (["b"] if bias is not None else [])
    initializers = [const("w", weight)] + ([const("b", bias)] if bias is not None else [])
    return make_model(
        [helper.make_node(op, inputs, ["y"], **attrs)],
        [helper.make_tensor_value_info("x", F, x_shape)],
        [helper.make_tensor_value_info("y", F, y_shape)],
        initializers,
    )


def dequantized(found: dict) -> np.ndarray:
    codes = found["codes"].astype(np.int64)
    axis = found["axis"]
    scale, zero = found["scale"], found["zero_point"] if found["zero_point"] is not None else np.zeros_like(found["scale"])
    if found["block_size"]:
        block = found["block_size"]
        scale = np.repeat(scale, block, axis=axis).take(range(codes.shape[axis]), axis=axis)
        zero = np.repeat(zero, block, axis=axis).take(range(codes.shape[axis]), axis=axis)
        return (codes - zero.astype(np.int64)) * scale
    view = [1] * codes.ndim
    view[axis] = -1
    return (codes - zero.astype(np.int64).reshape(view)) * scale.reshape(view)


def assert_channels_keep_precision(weight: np.ndarray, found: dict, output_axis: int) -> None:
    restored = dequantized(found)
    moved_w = np.moveaxis(weight, output_axis, 0).reshape(weight.shape[output_axis], -1)
    moved_r = np.moveaxis(restored, output_axis, 0).reshape(weight.shape[output_axis], -1)
    for channel, (w, r) in enumerate(zip(moved_w, moved_r)):
        step = np.abs(w).max() / 127
        assert np.abs(w - r).max() <= 0.5 * step * 1.001 + 1e-12, f"output channel {channel} lost precision"


CASES = [
    # op, x shape, y shape, weight shape, output-channel axis, expected DQ axis, attributes
    ("Conv", [1, 4, 5, 5], [1, 8, 3, 3], (8, 4, 3, 3), 0, 0, {}),
    ("Conv", [1, 4, 5, 5], [1, 6, 3, 3], (6, 2, 3, 3), 0, 0, {"group": 2}),
    ("Conv", [1, 4, 5, 5], [1, 4, 3, 3], (4, 1, 3, 3), 0, 0, {"group": 4}),
    ("ConvTranspose", [1, 4, 3, 3], [1, 6, 5, 5], (4, 6, 3, 3), 1, 1, {}),
    ("ConvTranspose", [1, 4, 3, 3], [1, 6, 5, 5], (4, 3, 3, 3), 1, 1, {"group": 2}),
    ("ConvTranspose", [1, 4, 3, 3], [1, 4, 5, 5], (4, 1, 3, 3), 0, 0, {"group": 4}),
    ("Gemm", [3, 5], [3, 6], (5, 6), 1, 1, {}),
    ("Gemm", [3, 5], [3, 6], (6, 5), 0, 0, {"transB": 1}),
    ("MatMul", [3, 5], [3, 6], (5, 6), 1, 1, {}),
    ("MatMul", [2, 3, 5], [2, 3, 6], (2, 5, 6), 2, 2, {}),
]


@pytest.mark.parametrize("op, x_shape, y_shape, w_shape, output_axis, dq_axis, attrs", CASES, ids=[f"{c[0]}{c[6] or ''}{list(c[3])}" for c in CASES])
def test_weight_axis_is_the_output_channel_axis(op, x_shape, y_shape, w_shape, output_axis, dq_axis, attrs):
    weight = spread(w_shape, output_axis)
    channels = y_shape[1] if op.startswith("Conv") else y_shape[-1]
    bias = RNG.standard_normal(channels).astype(np.float32) * 0.1 if op != "MatMul" else None
    proto = single_op(op, x_shape, y_shape, weight, bias, **attrs)
    model, record = quantize(proto)
    assert not structure_problems(model.to_proto())
    [found] = dequantize_of(model, op, 1)
    assert found["axis"] == dq_axis
    assert found["codes"].dtype == np.int8 and found["zero_point"] is not None and not found["zero_point"].any()
    assert_channels_keep_precision(weight, found, dq_axis)
    if bias is not None:
        [bias_found] = dequantize_of(model, op, 2)
        assert bias_found["codes"].dtype == np.int32 and not bias_found["zero_point"].any()
        node = bias_found["node"]
        activation_scale = float(node.inputs[0].inputs[0].inputs[1].values)
        group = attrs.get("group", 1)
        if op == "ConvTranspose" and dq_axis == 1:
            expected = np.tile(found["scale"], group)
        elif op == "ConvTranspose":
            expected = np.repeat(found["scale"], w_shape[1])
        else:
            expected = found["scale"]
        np.testing.assert_allclose(bias_found["scale"], (activation_scale * expected.astype(np.float64)).astype(np.float32), rtol=1e-6)
    Runner(model).run({"x": RNG.standard_normal(x_shape).astype(np.float32)})


def test_matmul_weights_can_be_per_tensor_for_targets_without_per_channel_matmul():
    weight = spread((5, 6), 1)
    model, _ = quantize(single_op("MatMul", [3, 5], [3, 6], weight), per_channel_matmul=False)
    [found] = dequantize_of(model, "MatMul")
    assert found["scale"].shape == () and found["axis"] is None


def test_a_one_dimensional_matmul_weight_is_per_tensor():
    model, _ = quantize(single_op("MatMul", [3, 5], [3], RNG.standard_normal(5)))
    [found] = dequantize_of(model, "MatMul")
    assert found["scale"].shape == ()


def test_all_zero_channels_get_a_positive_scale():
    weight = spread((6, 4, 1, 1), 0)
    weight[2] = 0
    model, _ = quantize(single_op("Conv", [1, 4, 3, 3], [1, 6, 3, 3], weight))
    [found] = dequantize_of(model, "Conv")
    assert (found["scale"] > 0).all() and not found["codes"][2].any()


@pytest.mark.parametrize("op, w_shape, attrs, block_axis", [
    ("MatMul", (96, 8), {}, 0),
    ("MatMul", (2, 64, 8), {}, 1),
    ("Gemm", (96, 8), {}, 0),
    ("Gemm", (8, 96), {"transB": 1}, 1),
])
def test_four_bit_weights_are_blocked_along_the_input_dim(op, w_shape, attrs, block_axis):
    k = w_shape[block_axis]
    x_shape = [2, 3, k] if len(w_shape) == 3 else [3, k]
    y_shape = [2, 3, 8] if len(w_shape) == 3 else [3, 8]
    weight = RNG.standard_normal(w_shape).astype(np.float32)
    model, record = quantize(single_op(op, x_shape, y_shape, weight, **attrs), scheme="w4", block_size=32)
    assert model.opset >= 21
    assert not structure_problems(model.to_proto())
    [found] = dequantize_of(model, op)
    assert found["block_size"] == 32 and found["axis"] == block_axis
    assert found["scale"].shape[block_axis] == -(-k // 32)
    restored = dequantized(found)
    blocks = np.moveaxis(weight, block_axis, 0).reshape(-(-k // 32), 32, -1)
    step = np.abs(blocks).max(axis=1) / 7
    assert np.abs(restored - weight).max() <= step.max() * 1.01
    Runner(model).run({"x": RNG.standard_normal(x_shape).astype(np.float32)})


def test_four_bit_scale_search_beats_round_to_nearest():
    weight = RNG.standard_t(df=3, size=(128, 16)).astype(np.float32)  # heavy tails: max-based scales waste levels
    proto = single_op("MatMul", [3, 128], [3, 16], weight)
    errors = {}
    for steps in (0, 20):
        model, _ = quantize(proto, scheme="w4", scale_search=steps)
        [found] = dequantize_of(model, "MatMul")
        errors[steps] = float(np.square(dequantized(found) - weight).sum())
    assert errors[20] < errors[0] * 0.95


@pytest.mark.parametrize("int4_ops", [["MatMul", "Gemm"], ["MatMul"], ["Gemm"]])
def test_only_the_int4_ops_get_4_bit_blocks_and_the_others_int8_per_channel(int4_ops):
    weight = spread((64, 6), 1)
    for op in ("MatMul", "Gemm"):
        model, _ = quantize(single_op(op, [3, 64], [3, 6], weight), scheme="a16w4", calibration="random", int4_ops=int4_ops)
        [found] = dequantize_of(model, op)
        if op in int4_ops:
            assert found["codes"].dtype.name == "int4" and found["block_size"] == 32
        else:
            assert found["codes"].dtype == np.int8 and found["axis"] == 1 and found["scale"].shape == (6,)
        assert not structure_problems(model.to_proto())


def test_int4_ops_other_than_matmul_and_gemm_are_refused():
    with pytest.raises(UsageError, match="int4_ops: Conv cannot take int4 blocks"):
        quantize(single_op("MatMul", [3, 64], [3, 6], spread((64, 6), 1)), scheme="a16w4", calibration="random", int4_ops=["Conv"])
