"""A BERT encoder built with onnx.helper the way torch.onnx's TorchScript exporter writes one.

Random weights, any size (BERT-base by default: 12 layers, hidden 768, 12 heads, 110 M
parameters), dynamic ``batch_size`` and ``sequence_length``, and the exporter's shape arithmetic:
``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` for every head split and merge, position
ids sliced from a buffer by ``Shape``, the additive padding mask
``Unsqueeze -> Unsqueeze -> Cast -> Sub(1, .) -> Mul(., finfo.min)`` (npu-deployment.md one-minus-mask), and
erf GELU. Used by ``shapes_fold.py`` for a model large enough that loading, folding and saving
cost real time and memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass(frozen=True)
class BertConfig:
    layers: int = 12
    hidden: int = 768
    heads: int = 12
    intermediate: int = 3072
    vocab: int = 30522
    max_positions: int = 512
    type_vocab: int = 2


class _Graph:
    def __init__(self, seed: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"/{prefix}_{self.count}"

    def const(self, value: np.ndarray, prefix: str = "const") -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, *shape: int, prefix: str = "weight") -> str:
        return self.const((self.rng.standard_normal(shape) * 0.02).astype(np.float32), prefix)

    def op(self, op: str, inputs: list[str], **attrs: object) -> str:
        output = self.name(f"{op}_output")
        self.nodes.append(helper.make_node(op, inputs, [output], name=self.name(op), **attrs))
        return output

    def linear(self, x: str, fan_in: int, fan_out: int) -> str:
        return self.op("Add", [self.op("MatMul", [x, self.weight(fan_in, fan_out)]), self.weight(fan_out, prefix="bias")])

    def layer_norm(self, x: str, hidden: int) -> str:
        gamma = self.const(np.ones(hidden, np.float32) + self.rng.standard_normal(hidden).astype(np.float32) * 0.01, "gamma")
        beta = self.const(self.rng.standard_normal(hidden).astype(np.float32) * 0.01, "beta")
        return self.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-12)

    def batch_and_seq(self, x: str) -> tuple[str, str]:
        """Unsqueezed batch and sequence dims of ``x``, read at run time as the exporter does."""
        shape = self.op("Shape", [x])
        dims = []
        for axis in (0, 1):
            picked = self.op("Gather", [shape, self.const(np.array(axis, np.int64))], axis=0)
            dims.append(self.op("Unsqueeze", [picked, self.const(np.array([0], np.int64))]))
        return dims[0], dims[1]

    def split_heads(self, x: str, config: BertConfig, perm: list[int]) -> str:
        batch, seq = self.batch_and_seq(x)
        head_dim = config.hidden // config.heads
        target = self.op("Concat", [batch, seq, self.const(np.array([config.heads], np.int64)), self.const(np.array([head_dim], np.int64))], axis=0)
        return self.op("Transpose", [self.op("Reshape", [x, target])], perm=perm)


def build_bert(config: BertConfig = BertConfig(), seed: int = 0) -> onnx.ModelProto:
    """The BERT encoder (last_hidden_state, pooler_output) as a ModelProto with random weights."""
    g = _Graph(seed)
    hidden, head_dim = config.hidden, config.hidden // config.heads
    seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const(np.array(1, np.int64))], axis=0)
    positions = g.const(np.arange(config.max_positions, dtype=np.int64)[None], "position_ids")
    position_ids = g.op("Slice", [positions, g.const(np.array([0], np.int64)), g.op("Unsqueeze", [seq, g.const(np.array([0], np.int64))]), g.const(np.array([1], np.int64))])
    words = g.op("Gather", [g.weight(config.vocab, hidden, prefix="word_embeddings"), "input_ids"])
    types = g.op("Gather", [g.weight(config.type_vocab, hidden, prefix="token_type_embeddings"), "token_type_ids"])
    where = g.op("Gather", [g.weight(config.max_positions, hidden, prefix="position_embeddings"), position_ids])
    h = g.layer_norm(g.op("Add", [g.op("Add", [words, types]), where]), hidden)

    mask = g.op("Unsqueeze", [g.op("Unsqueeze", ["attention_mask", g.const(np.array([1], np.int64))]), g.const(np.array([2], np.int64))])
    mask = g.op("Sub", [g.const(np.array(1.0, np.float32)), g.op("Cast", [mask], to=TensorProto.FLOAT)])
    mask = g.op("Mul", [mask, g.const(np.array(np.finfo(np.float32).min, np.float32))])

    for _ in range(config.layers):
        q = g.split_heads(g.linear(h, hidden, hidden), config, [0, 2, 1, 3])
        k = g.split_heads(g.linear(h, hidden, hidden), config, [0, 2, 3, 1])
        v = g.split_heads(g.linear(h, hidden, hidden), config, [0, 2, 1, 3])
        scores = g.op("Div", [g.op("MatMul", [q, k]), g.const(np.array(np.sqrt(head_dim), np.float32))])
        probs = g.op("Softmax", [g.op("Add", [scores, mask])], axis=-1)
        context = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        batch, length = g.batch_and_seq(context)
        merged = g.op("Reshape", [context, g.op("Concat", [batch, length, g.const(np.array([hidden], np.int64))], axis=0)])
        h = g.layer_norm(g.op("Add", [g.linear(merged, hidden, hidden), h]), hidden)
        up = g.linear(h, hidden, config.intermediate)
        erf = g.op("Erf", [g.op("Div", [up, g.const(np.array(np.sqrt(2.0), np.float32))])])
        gelu = g.op("Mul", [g.op("Mul", [up, g.op("Add", [erf, g.const(np.array(1.0, np.float32))])]), g.const(np.array(0.5, np.float32))])
        h = g.layer_norm(g.op("Add", [g.linear(gelu, config.intermediate, hidden), h]), hidden)

    first = g.op("Gather", [h, g.const(np.array(0, np.int64))], axis=1)
    pooled = g.op("Tanh", [g.linear(first, hidden, hidden)])
    g.nodes.append(helper.make_node("Identity", [h], ["last_hidden_state"]))
    g.nodes.append(helper.make_node("Identity", [pooled], ["pooler_output"]))
    dims = ["batch_size", "sequence_length"]
    graph = helper.make_graph(
        g.nodes,
        "bert",
        [helper.make_tensor_value_info(name, TensorProto.INT64, dims) for name in ("input_ids", "attention_mask", "token_type_ids")],
        [
            helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch_size", "sequence_length", hidden]),
            helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, ["batch_size", hidden]),
        ],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8, producer_name="mapc synthetic_bert")
    return model


def write_bert(path: Path, config: BertConfig = BertConfig(), *, external_data: bool = False) -> Path:
    """Build and save; ``external_data`` puts the weights in ``<name>.data`` beside the model."""
    model = build_bert(config)
    if external_data:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, path)
    return path
