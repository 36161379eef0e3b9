"""onnxruntime contrib ops -> standard ops: exactly what onnxruntime's kernels compute."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

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


@pytest.mark.parametrize(("op_type", "inputs", "approximate"), [
    ("BiasGelu", ["x", "b"], "none"), ("Gelu", ["x"], "none"), ("FastGelu", ["x", "b"], "tanh"), ("FastGelu", ["x"], "tanh")])
def test_contrib_gelus_become_gelu(op_type, inputs, approximate):
    node = helper.make_node(op_type, inputs, ["y"], domain="com.microsoft")
    proto = contrib_model(node, [("x", [2, 3, 16])], {"b": weights(16)} if "b" in inputs else {}, opset=20)
    model, _ = fuse(proto, tolerance=KERNEL)
    (gelu,) = [n for n in model.graph.nodes if n.op == "Gelu"]
    assert (gelu.domain or "") == "" and gelu.attrs["approximate"] == approximate
