"""Shapes through onnxruntime's contrib ops when its symbolic inference cannot size every tensor."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import infer_shapes, load


def _model():
    """SkipLayerNormalization (onnxruntime's inference sizes it, onnx's does not), then Inverse
    (neither does): onnxruntime's inference stops incomplete at the Inverse."""
    nodes = [
        helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma"], ["normed"], domain="com.microsoft"),
        helper.make_node("Reshape", ["normed", "square"], ["matrix"]),
        helper.make_node("Inverse", ["matrix"], ["y"], domain="com.microsoft"),
    ]
    graph = helper.make_graph(
        nodes, "incomplete",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 4]), helper.make_tensor_value_info("skip", TensorProto.FLOAT, ["batch", 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones(4, np.float32), "gamma"), numpy_helper.from_array(np.array([-1, 4, 4], np.int64), "square")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)], ir_version=10)


def test_incomplete_contrib_inference_still_sizes_what_it_can_and_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = load(_model())
    assert infer_shapes(model)
    tensors = model.graph.tensors()
    assert tensors["normed"].shape == ["batch", 4, 4]  # onnx alone leaves it unknown
    assert tensors["y"].shape is None  # nobody knows Inverse: not guessed
    assert list(tmp_path.iterdir()) == []  # onnxruntime's infer_shapes would write sym_shape_infer_temp.onnx here


def test_a_prompt_only_group_query_attention_does_not_stop_inference():
    """onnxruntime's inference cannot size the presents of a GroupQueryAttention without past (their
    length is a run-time value); the rest of the graph is still sized through it."""
    nodes = [
        helper.make_node("GroupQueryAttention", ["q", "k", "v", "", "", "seqlens", "total"], ["attended", "present_key", "present_value"],
                         domain="com.microsoft", num_heads=4, kv_num_heads=2),
        helper.make_node("SkipLayerNormalization", ["attended", "q", "gamma"], ["y"], domain="com.microsoft"),
    ]
    graph = helper.make_graph(
        nodes, "prompt",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["batch", 5, 64]), helper.make_tensor_value_info("k", TensorProto.FLOAT, ["batch", 5, 32]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, ["batch", 5, 32]), helper.make_tensor_value_info("seqlens", TensorProto.INT32, ["batch"]),
         helper.make_tensor_value_info("total", TensorProto.INT32, [])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "present_key", "present_value")],
        [numpy_helper.from_array(np.ones(64, np.float32), "gamma")],
    )
    model = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)], ir_version=10))
    assert infer_shapes(model)
    tensors = model.graph.tensors()
    assert tensors["attended"].shape == ["batch", 5, 64] and tensors["y"].shape == ["batch", 5, 64]


def test_a_default_domain_simplified_layer_norm_is_sized_without_any_contrib_node():
    """onnxruntime registers SimplifiedLayerNormalization in the ai.onnx domain and its optimizer
    writes it there; onnx has no schema for it, so onnxruntime's inference runs for it too, even
    in a graph without any com.microsoft node."""
    nodes = [
        helper.make_node("SimplifiedLayerNormalization", ["x", "gamma"], ["normed"], axis=-1, epsilon=1e-6),
        helper.make_node("Relu", ["normed"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "rms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones(8, np.float32), "gamma")],
    )
    model = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10))
    assert infer_shapes(model)
    tensors = model.graph.tensors()
    assert tensors["normed"].shape == ["batch", 3, 8] and tensors["y"].shape == ["batch", 3, 8]
    assert tensors["y"].dtype == np.float32
