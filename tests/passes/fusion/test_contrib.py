"""onnxruntime contrib ops -> standard ops: exactly what onnxruntime's kernels compute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import mapc
from mapc.ir.compare import Tolerance

from .common import fuse, ops

F = TensorProto.FLOAT
#: onnxruntime's fused kernels sum in another order than the decomposition.
KERNEL = Tolerance(rtol=1e-4, atol=1e-4)


def contrib_model(node, inputs, initializers, outputs=("y",), opset=18):
    graph = helper.make_graph([node], "contrib", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, F, None) for n in outputs],
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=10)


def weights(*shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 0.5 + 1.0).astype(np.float32)


@pytest.mark.parametrize("extras", [(), ("beta",), ("beta", "bias")])
@pytest.mark.parametrize("sum_output", [False, True])
def test_skip_layer_norm_becomes_add_and_layer_norm(extras, sum_output):
    names = ["x", "skip", "gamma", "beta" if "beta" in extras else "", "bias" if "bias" in extras else ""]
    while names[-1] == "":
        names.pop()
    outputs = ["y", "", "", "sum"] if sum_output else ["y"]
    node = helper.make_node("SkipLayerNormalization", names, outputs, domain="com.microsoft", epsilon=1e-5)
    inits = {"gamma": weights(16), "beta": weights(16, seed=1), "bias": weights(16, seed=2)}
    proto = contrib_model(node, [("x", [2, 3, 16]), ("skip", [2, 3, 16])], {k: inits[k] for k in names[2:] if k},
                          outputs=("y", "sum") if sum_output else ("y",))
    model, record = fuse(proto, tolerance=KERNEL)
    assert "SkipLayerNormalization" not in ops(model) and ops(model)["LayerNormalization"] == 1
    assert record.counters["contrib-skip-layer-norm"] == 1


@pytest.mark.parametrize("opset", [18, 23])
def test_simplified_layer_norms_become_rms_norm(opset):
    skip = helper.make_node("SkipSimplifiedLayerNormalization", ["x", "skip", "gamma"], ["h"], domain="com.microsoft", epsilon=1e-6)
    norm = helper.make_node("SimplifiedLayerNormalization", ["h", "gamma"], ["y"], axis=-1, epsilon=1e-6)
    graph = helper.make_graph([skip, norm], "rms", [helper.make_tensor_value_info("x", F, [2, 3, 16]), helper.make_tensor_value_info("skip", F, [2, 3, 16])],
                              [helper.make_tensor_value_info("y", F, None)], [numpy_helper.from_array(weights(16), "gamma")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)], ir_version=10)
    model, record = fuse(proto, tolerance=KERNEL)
    assert ops(model)["RMSNormalization"] == 2 and record.counters["contrib-skip-rms-norm"] == 1


def test_verify_each_takes_a_default_domain_simplified_layer_norm_as_load_does():
    """onnxruntime-genai writes SimplifiedLayerNormalization in the default domain; load accepts it
    (onnxruntime runs it), and so must the checker --verify-each runs after every pass."""
    norm = helper.make_node("SimplifiedLayerNormalization", ["x", "gamma"], ["n"], axis=-1, epsilon=1e-5)
    graph = helper.make_graph([norm, helper.make_node("Relu", ["n"], ["y"])], "rms", [helper.make_tensor_value_info("x", F, [2, 3, 16])],
                              [helper.make_tensor_value_info("y", F, [2, 3, 16])], [numpy_helper.from_array(weights(16), "gamma")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    result = mapc.compile(proto, verify_each=True)
    assert [n.op for n in result.model.graph.nodes] == ["RMSNormalization", "Relu"]


@pytest.mark.parametrize(("op_type", "inputs", "approximate"), [
    ("BiasGelu", ["x", "b"], "none"), ("Gelu", ["x"], "none"), ("FastGelu", ["x", "b"], "tanh"), ("FastGelu", ["x"], "tanh")])
def test_contrib_gelus_become_gelu(op_type, inputs, approximate):
    node = helper.make_node(op_type, inputs, ["y"], domain="com.microsoft")
    proto = contrib_model(node, [("x", [2, 3, 16])], {"b": weights(16)} if "b" in inputs else {}, opset=20)
    model, _ = fuse(proto, tolerance=KERNEL)
    (gelu,) = [n for n in model.graph.nodes if n.op == "Gelu"]
    assert (gelu.domain or "") == "" and gelu.attrs["approximate"] == approximate


def ort_optimized_bert(tmp_path):
    """The bert fixture through onnxruntime's transformers optimizer: EmbedLayerNormalization,
    Attention (packed QKV, 1-D mask index), SkipLayerNormalization, BiasGelu."""
    from onnxruntime.transformers import optimizer

    source = Path(__file__).resolve().parents[2] / "fixtures" / "transformers" / "bert-ts-eager.onnx"
    optimized = optimizer.optimize_model(str(source), model_type="bert", num_heads=4, hidden_size=32, opt_level=0)
    path = tmp_path / "bert_contrib.onnx"
    optimized.save_model_to_file(str(path))
    return path


def test_an_onnxruntime_optimized_bert_becomes_standard_ops_and_reaches_the_npu(tmp_path):
    import mapc

    path = ort_optimized_bert(tmp_path)
    before = {(n.domain, n.op_type) for n in onnx.load(str(path)).graph.node}
    assert ("com.microsoft", "Attention") in before and ("com.microsoft", "EmbedLayerNormalization") in before
    result = mapc.compile(path, target="npu", dims={"batch_size": 1, "sequence_length": 8}, verify=True)
    assert result.verification["ok"]
    fuse_record = next(r for r in result.passes if r.name == "fuse")
    for rule in ("contrib-attention", "contrib-embed-layer-norm", "contrib-skip-layer-norm", "contrib-bias-gelu"):
        assert fuse_record.counters[rule] >= 1, rule
    coverage = result.report["coverage"]
    assert coverage["nodes_percent"] > 85
    assert not [row for row in result.report["fallback_by_reason"] if row["code"] in ("op.not-supported", "shape.static")]


@pytest.mark.parametrize("opset", [11, 18])  # below 13 the mask's Unsqueeze takes its axes as an attribute
def test_contrib_attention_with_a_raw_2d_mask(opset):
    hidden, heads = 16, 4
    rng = np.random.default_rng(0)
    node = helper.make_node("Attention", ["x", "w", "b", "mask"], ["y"], domain="com.microsoft", num_heads=heads)
    graph = helper.make_graph([node], "attention", [helper.make_tensor_value_info("x", F, [2, 5, hidden]),
                                                    helper.make_tensor_value_info("mask", TensorProto.INT32, [2, 5])],
                              [helper.make_tensor_value_info("y", F, None)],
                              [numpy_helper.from_array(rng.standard_normal((hidden, 3 * hidden)).astype(np.float32) * 0.3, "w"),
                               numpy_helper.from_array(rng.standard_normal(3 * hidden).astype(np.float32) * 0.1, "b")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)], ir_version=10)
    feeds = {"x": rng.standard_normal((2, 5, hidden)).astype(np.float32), "mask": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)}
    model, record = fuse(proto, tolerance=KERNEL, feeds=feeds)
    assert record.counters["contrib-attention"] == 1 and ("com.microsoft", "Attention") not in {(n.domain, n.op) for n in model.graph.nodes}


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "BiasGelu", "FastGelu"]),
       st.sampled_from([(2, 16), (1, 3, 8), (3, 5, 4)]), st.sampled_from([1e-12, 1e-5, 0.1]),
       st.sampled_from([1e-3, 1.0, 1e3]), st.integers(0, 1000))
def test_contrib_ops_become_standard_ops_at_any_shape_and_scale(op_type, shape, epsilon, scale, seed):
    """Whatever the shape, epsilon and input scale, the standard ops compute what onnxruntime's
    contrib kernel computes (the differential check inside ``fuse``)."""
    hidden = shape[-1]
    rng = np.random.default_rng(seed)
    if op_type.startswith("Skip"):
        node = helper.make_node(op_type, ["x", "skip", "gamma"], ["y"], domain="com.microsoft", epsilon=epsilon)
        inputs, inits = [("x", list(shape)), ("skip", list(shape))], {"gamma": weights(hidden, seed=seed)}
    else:
        node = helper.make_node(op_type, ["x", "b"], ["y"], domain="com.microsoft")
        inputs, inits = [("x", list(shape))], {"b": weights(hidden, seed=seed)}
    feeds = {name: (rng.standard_normal(dims) * scale).astype(np.float32) for name, dims in inputs}
    tolerance = Tolerance(rtol=1e-3, atol=1e-3 * scale)
    model, _ = fuse(contrib_model(node, inputs, inits, opset=23), tolerance=tolerance, feeds=feeds)
    assert not [n for n in model.graph.nodes if n.domain == "com.microsoft"]
