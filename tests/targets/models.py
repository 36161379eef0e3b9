"""Static example models for the target tests, built from code with random weights.

* :func:`static_cnn`: a small image classifier (Conv + BatchNorm + Relu stem, a residual block,
  pooling, Gemm, Softmax) big enough that offloading it pays on the ``npu`` target.
* :func:`static_transformer`: a 2-layer encoder written with the standard fused ops a fusion
  pass produces (LayerNormalization, Gelu, MatMul attention with constant reshapes), with the
  embedding lookup (int64 token ids) that stays on the CPU.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, *shape: int, scale: float = 0.1) -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), "w")

    def op(self, op_type: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(op_type), **attrs))
        return out


def static_cnn(batch: int = 1, size: int = 64) -> onnx.ModelProto:
    g = _Builder(seed=11)

    def conv_bn_relu(x: str, c_in: int, c_out: int, stride: int, relu: bool = True) -> str:
        y = g.op("Conv", [x, g.weight(c_out, c_in, 3, 3)], kernel_shape=[3, 3], strides=[stride, stride], pads=[1, 1, 1, 1])
        stats = [g.const(1 + 0.1 * g.rng.standard_normal(c_out).astype(np.float32)), g.weight(c_out), g.weight(c_out),
                 g.const(np.abs(1 + 0.1 * g.rng.standard_normal(c_out)).astype(np.float32))]
        y = g.op("BatchNormalization", [y, *stats], epsilon=1e-5)
        return g.op("Relu", [y]) if relu else y

    x = conv_bn_relu("image", 3, 32, stride=2)
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    branch = conv_bn_relu(conv_bn_relu(x, 32, 32, stride=1), 32, 32, stride=1, relu=False)
    x = g.op("Relu", [g.op("Add", [x, branch])])
    x = conv_bn_relu(x, 32, 64, stride=2)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    logits = g.op("Gemm", [x, g.weight(10, 64), g.weight(10)], transB=1)
    g.nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], name="softmax", axis=-1))
    graph = helper.make_graph(
        g.nodes, "static_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, 10])],
        g.initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)


def static_transformer(sequence: int = 32, hidden: int = 64, heads: int = 4, layers: int = 2, vocab: int = 100) -> onnx.ModelProto:
    g = _Builder(seed=12)
    head = hidden // heads

    def linear(x: str, n_in: int, n_out: int) -> str:
        return g.op("Add", [g.op("MatMul", [x, g.weight(n_in, n_out)]), g.weight(n_out)])

    def layer_norm(x: str) -> str:
        return g.op("LayerNormalization", [x, g.const(np.ones(hidden, np.float32)), g.weight(hidden)], axis=-1, epsilon=1e-5)

    def heads_first(x: str) -> str:
        shaped = g.op("Reshape", [x, g.const(np.array([1, sequence, heads, head], np.int64))])
        return g.op("Transpose", [shaped], perm=[0, 2, 1, 3])

    x = g.op("Gather", [g.weight(vocab, hidden, scale=0.5), "input_ids"], axis=0)
    x = layer_norm(g.op("Add", [x, g.weight(1, sequence, hidden, scale=0.5)]))
    for _ in range(layers):
        q, k, v = (heads_first(linear(x, hidden, hidden)) for _ in range(3))
        scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]), g.const(np.array(1 / np.sqrt(head), np.float32))])
        context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        merged = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), g.const(np.array([1, sequence, hidden], np.int64))])
        x = layer_norm(g.op("Add", [x, linear(merged, hidden, hidden)]))
        x = layer_norm(g.op("Add", [x, linear(g.op("Gelu", [linear(x, hidden, 4 * hidden)]), 4 * hidden, hidden)]))
    g.nodes.append(helper.make_node("Identity", [x], ["hidden_states"], name="output"))
    graph = helper.make_graph(
        g.nodes, "static_transformer",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, sequence])],
        [helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, [1, sequence, hidden])],
        g.initializers,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=IR_VERSION)
