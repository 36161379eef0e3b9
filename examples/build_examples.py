"""Build the example models shipped in examples/ (onnx.helper + numpy only, random weights).

    python examples/build_examples.py        # rewrites examples/cnn.onnx and examples/transformer.onnx

* ``cnn.onnx``: a small image classifier laid out like a ResNet stem and block: Conv+BatchNorm
  +Relu, MaxPool, a residual block, GlobalAveragePool, Flatten, Gemm, Softmax. Input
  ``image`` is ``[batch, 3, 32, 32]`` with a symbolic batch.
* ``transformer.onnx``: a 2-layer BERT-style encoder written the way the TorchScript exporter
  writes one: embedding Gather + position embeddings, decomposed LayerNorm (ReduceMean, Sub, Pow,
  Sqrt, Div), attention with head split/merge through Shape->Gather->Unsqueeze->Concat->Reshape,
  scores scaled by Div(sqrt(head_dim)), an additive mask built from ``attention_mask`` as
  ``(1 - mask) * finfo(float32).min``, Softmax, exact (erf) GELU. Inputs ``input_ids`` and
  ``attention_mask`` are ``[batch, sequence]`` with symbolic dims.

The output is deterministic (fixed seeds), so rerunning the script reproduces the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
OPSET = 17
IR_VERSION = 8


class Graph:
    """Collects nodes and initializers with short unique names."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, *shape: int, scale: float = 0.1, prefix: str = "w") -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), prefix)

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attributes: object) -> str | list[str]:
        names = [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.name(op_type), **attributes))
        return names[0] if outputs == 1 else names


def build_cnn() -> onnx.ModelProto:
    g = Graph(seed=1)

    def conv_bn_relu(x: str, c_in: int, c_out: int, stride: int, relu: bool = True) -> str:
        y = g.op("Conv", [x, g.weight(c_out, c_in, 3, 3)], kernel_shape=[3, 3], strides=[stride, stride], pads=[1, 1, 1, 1])
        bn = [g.const(1 + 0.1 * g.rng.standard_normal(c_out).astype(np.float32)), g.weight(c_out), g.weight(c_out),
              g.const(np.abs(1 + 0.1 * g.rng.standard_normal(c_out)).astype(np.float32))]
        y = g.op("BatchNormalization", [y, *bn], epsilon=1e-5)
        return g.op("Relu", [y]) if relu else y

    x = conv_bn_relu("image", 3, 16, stride=2)
    x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    branch = conv_bn_relu(x, 16, 16, stride=1)
    branch = conv_bn_relu(branch, 16, 16, stride=1, relu=False)
    x = g.op("Relu", [g.op("Add", [x, branch])])
    x = conv_bn_relu(x, 16, 32, stride=2)
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    logits = g.op("Gemm", [x, g.weight(10, 32), g.weight(10)], transB=1)
    g.nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], name="softmax_out", axis=-1))
    graph = helper.make_graph(
        g.nodes, "small_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        g.initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION, producer_name="mapc-examples")


def build_transformer(layers: int = 2, hidden: int = 32, heads: int = 4, vocab: int = 64, max_positions: int = 64) -> onnx.ModelProto:
    g = Graph(seed=2)
    head_dim = hidden // heads
    ids_shape = g.op("Shape", ["input_ids"])
    batch = g.op("Unsqueeze", [g.op("Gather", [ids_shape, g.const(np.array(0, np.int64))], axis=0), g.const(np.array([0], np.int64))])
    seq = g.op("Unsqueeze", [g.op("Gather", [ids_shape, g.const(np.array(1, np.int64))], axis=0), g.const(np.array([0], np.int64))])

    def layer_norm(x: str) -> str:
        mean = g.op("ReduceMean", [x], axes=[-1])
        centred = g.op("Sub", [x, mean])
        variance = g.op("ReduceMean", [g.op("Pow", [centred, g.const(np.array(2.0, np.float32))])], axes=[-1])
        std = g.op("Sqrt", [g.op("Add", [variance, g.const(np.array(1e-12, np.float32))])])
        return g.op("Add", [g.op("Mul", [g.op("Div", [centred, std]), g.const(np.ones(hidden, np.float32))]), g.weight(hidden)])

    def linear(x: str, n_in: int, n_out: int) -> str:
        return g.op("Add", [g.op("MatMul", [x, g.weight(n_in, n_out)]), g.weight(n_out)])

    def split_heads(x: str) -> str:
        shape = g.op("Concat", [batch, seq, g.const(np.array([heads, head_dim], np.int64))], axis=0)
        return g.op("Transpose", [g.op("Reshape", [x, shape])], perm=[0, 2, 1, 3])

    positions = g.op("Unsqueeze", [g.op("Range", [g.const(np.array(0, np.int64)), g.op("Squeeze", [seq, g.const(np.array([0], np.int64))]), g.const(np.array(1, np.int64))]), g.const(np.array([0], np.int64))])
    x = g.op("Add", [g.op("Gather", [g.weight(vocab, hidden, scale=0.5), "input_ids"], axis=0), g.op("Gather", [g.weight(max_positions, hidden, scale=0.5), positions], axis=0)])
    x = layer_norm(x)

    # Additive mask exactly as transformers 4.x builds it: (1 - mask[:, None, None, :]) * finfo.min
    mask = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.const(np.array([1, 2], np.int64))])], to=TensorProto.FLOAT)
    additive_mask = g.op("Mul", [g.op("Sub", [g.const(np.array(1.0, np.float32)), mask]), g.const(np.array(np.finfo(np.float32).min, np.float32))])

    for _ in range(layers):
        q, k, v = (split_heads(linear(x, hidden, hidden)) for _ in range(3))
        scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
        scores = g.op("Add", [g.op("Div", [scores, g.const(np.array(np.sqrt(head_dim), np.float32))]), additive_mask])
        context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        merged_shape = g.op("Concat", [batch, seq, g.const(np.array([hidden], np.int64))], axis=0)
        context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), merged_shape])
        x = layer_norm(g.op("Add", [x, linear(context, hidden, hidden)]))
        h = linear(x, hidden, 4 * hidden)
        gelu = g.op("Mul", [g.op("Mul", [h, g.op("Add", [g.op("Erf", [g.op("Div", [h, g.const(np.array(np.sqrt(2.0), np.float32))])]), g.const(np.array(1.0, np.float32))])]), g.const(np.array(0.5, np.float32))])
        x = layer_norm(g.op("Add", [x, linear(gelu, 4 * hidden, hidden)]))

    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))
    graph = helper.make_graph(
        g.nodes, "small_transformer",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])],
        g.initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION, producer_name="mapc-examples")


def main() -> None:
    for name, model in (("cnn.onnx", build_cnn()), ("transformer.onnx", build_transformer())):
        onnx.checker.check_model(model, full_check=True)
        path = HERE / name
        path.write_bytes(model.SerializeToString(deterministic=True))
        print(f"wrote {path} ({path.stat().st_size} bytes, {len(model.graph.node)} nodes)")


if __name__ == "__main__":
    main()
