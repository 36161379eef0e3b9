"""LayerNormalization below opset 17 (onnxruntime's op): loaded as mapc.LayerNormalization with
its decomposition, computing what onnxruntime's kernel computes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import MAPC_DOMAIN, infer_shapes, load, save
from tests.conftest import make_model


def legacy_layer_norm(opset: int, dtype, axis: int, bias: bool, extra_outputs: bool = False) -> onnx.ModelProto:
    element = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    rng = np.random.default_rng(0)
    shape = [2, 3, 8]
    normalized = shape[axis:]
    inits = [numpy_helper.from_array(rng.standard_normal(normalized).astype(dtype), "scale")]
    inputs = ["x", "scale"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(normalized).astype(dtype), "bias"))
        inputs.append("bias")
    outputs = ["y", "mean", "inv_std"] if extra_outputs else ["y"]
    node = helper.make_node("LayerNormalization", inputs, outputs, axis=axis, epsilon=1e-3)
    return make_model(
        [node, helper.make_node("Relu", ["y"], ["z"])],
        [helper.make_tensor_value_info("x", element, ["batch", 3, 8])],
        [helper.make_tensor_value_info("z", element, ["batch", 3, 8])],
        inits,
        opset=opset,
    )


@pytest.mark.parametrize("opset, dtype", [(12, np.float32), (13, np.float32), (16, np.float32), (16, np.float16)])
@pytest.mark.parametrize("axis", [-1, -2, 1])
@pytest.mark.parametrize("bias", [True, False])
def test_loaded_layer_norm_computes_what_onnxruntime_does(tmp_path, opset, dtype, axis, bias):
    proto = legacy_layer_norm(opset, dtype, axis, bias)
    model = load(proto)
    (node,) = [n for n in model.graph.nodes if n.op == "LayerNormalization"]
    assert node.domain == MAPC_DOMAIN and node.attrs["axis"] == (axis - 3 if axis >= 0 else axis)  # rank 3
    assert [n.op for n in load(proto).graph.nodes] == (["LayerNormalization", "Relu"] if bias else ["Sub", "LayerNormalization", "Relu"])
    path = save(model, tmp_path / "loaded.onnx")
    reference = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    loaded = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for scale in (1e-2, 1.0, 300.0):
        x = (rng.standard_normal((4, 3, 8)) * scale + scale).astype(dtype)
        expected, got = reference.run(None, {"x": x})[0], loaded.run(None, {"x": x})[0]
        tolerance = {"rtol": 1e-4, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-2, "atol": 1e-3}
        np.testing.assert_allclose(got, expected, **tolerance)


def test_shapes_are_inferred_through_it():
    model = load(legacy_layer_norm(13, np.float32, -1, True))
    assert infer_shapes(model, forget_existing=True)
    assert model.graph.tensors()["y"].shape == ["batch", 3, 8]


def test_read_mean_or_inv_std_outputs_keep_onnxruntimes_op_and_unread_ones_are_dropped():
    proto = legacy_layer_norm(13, np.float32, -1, True, extra_outputs=True)
    proto.graph.output.append(helper.make_tensor_value_info("mean", TensorProto.FLOAT, None))
    kept = load(proto).graph.nodes[0]
    assert (kept.op, kept.domain or "", [t.name for t in kept.outputs]) == ("LayerNormalization", "", ["y", "mean", "inv_std"])
    unread = legacy_layer_norm(13, np.float32, -1, True, extra_outputs=True)
    assert [t.name for t in load(unread).graph.nodes[0].outputs] == ["y"]
