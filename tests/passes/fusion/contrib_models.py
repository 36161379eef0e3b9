"""Small Whisper-encoder, Whisper-decoder and Llama-decoder graphs written with onnxruntime's
contrib ops, as onnxruntime's transformers optimizer and onnxruntime-genai write them, with
static shapes (one decoding step over a fixed cache)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .graphs import IR_VERSION, Graph, weights

ORT = "com.microsoft"
HIDDEN, HEADS, FFN, VOCAB = 64, 4, 128, 64  # head size 16: onnxruntime's GQA rotary kernel needs it
HEAD = HIDDEN // HEADS
FRAMES, PAST = 16, 8


def _build(g: Graph) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, "contrib_model", g.inputs, g.outputs, g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", g.opset), helper.make_opsetid(ORT, 1)], ir_version=IR_VERSION)


def _projections(g: Graph, x: str, seed: int, count: int) -> list[str]:
    return [g.op("MatMul", x, g.const(weights((HIDDEN, HIDDEN), seed + i))) for i in range(count)]


def _norm(g: Graph, x: str, seed: int) -> str:
    return g.op("LayerNormalization", x, g.const(weights((HIDDEN,), seed, 0.1) + 1), g.const(weights((HIDDEN,), seed + 1, 0.1)), axis=-1)


def _skip_norm(g: Graph, x: str, skip: str, seed: int) -> tuple[str, str]:
    """SkipLayerNormalization: (normalised, residual sum)."""
    out, _, _, total = g.op("SkipLayerNormalization", x, skip, g.const(weights((HIDDEN,), seed, 0.1) + 1), g.const(weights((HIDDEN,), seed + 1, 0.1)),
                            g.const(weights((HIDDEN,), seed + 2, 0.1)), outputs=4, domain=ORT, epsilon=1e-5)
    return out, total


def _mlp(g: Graph, x: str, seed: int, gelu: str) -> str:
    inner = g.op("MatMul", x, g.const(weights((HIDDEN, FFN), seed)))
    activated = g.op(gelu, inner, g.const(weights((FFN,), seed + 1, 0.1)), domain=ORT)
    return g.op("MatMul", activated, g.const(weights((FFN, HIDDEN), seed + 2)))


def whisper_encoder(layers: int = 2) -> onnx.ModelProto:
    """Pre-norm encoder layers on ``[1, FRAMES, HIDDEN]`` audio features: MultiHeadAttention with
    the projection bias, SkipLayerNormalization, BiasGelu."""
    g = Graph(opset=17)
    x = g.input("audio_features", [1, FRAMES, HIDDEN])
    for layer in range(layers):
        seed = 100 * layer
        q, k, v = _projections(g, _norm(g, x, seed), seed + 10, 3)
        attended = g.op("MultiHeadAttention", q, k, v, g.const(weights((3 * HIDDEN,), seed + 20, 0.1)), domain=ORT, num_heads=HEADS)
        normed, residual = _skip_norm(g, g.op("MatMul", attended, g.const(weights((HIDDEN, HIDDEN), seed + 30))), x, seed + 40)
        x = g.op("Add", _mlp(g, normed, seed + 50, "BiasGelu"), residual)
    g.output(_norm(g, x, 999))
    return _build(g)


def whisper_decoder(layers: int = 2) -> onnx.ModelProto:
    """One decoding step: causal self attention over a ``PAST``-token cache (MultiHeadAttention
    with past/present and a padding mask), cross attention on the encoder's precomputed K/V heads,
    SkipLayerNormalization, FastGelu, tied logits."""
    g = Graph(opset=17)
    ids = g.input("input_ids", [1, 1], np.int64)
    mask = g.input("attention_mask", [1, PAST + 1], np.int32)
    table = g.const(weights((VOCAB, HIDDEN), 7))
    x = g.op("Add", g.op("Gather", table, ids), g.const(weights((1, 1, HIDDEN), 8, 0.1)))
    for layer in range(layers):
        seed = 100 * layer
        past = [g.input(f"past_{kind}_self_{layer}", [1, HEADS, PAST, HEAD]) for kind in ("key", "value")]
        cross = [g.input(f"encoder_{kind}_{layer}", [1, HEADS, FRAMES, HEAD]) for kind in ("key", "value")]
        q, k, v = _projections(g, _norm(g, x, seed), seed + 10, 3)
        attended, present_key, present_value = g.op("MultiHeadAttention", q, k, v, g.const(weights((3 * HIDDEN,), seed + 20, 0.1)), mask, "",
                                                    *past, outputs=3, domain=ORT, num_heads=HEADS, unidirectional=1)
        g.output(present_key)
        g.output(present_value)
        normed, residual = _skip_norm(g, g.op("MatMul", attended, g.const(weights((HIDDEN, HIDDEN), seed + 30))), x, seed + 40)
        (query,) = _projections(g, normed, seed + 50, 1)
        heard = g.op("MultiHeadAttention", query, *cross, domain=ORT, num_heads=HEADS)
        normed, residual = _skip_norm(g, g.op("MatMul", heard, g.const(weights((HIDDEN, HIDDEN), seed + 60))), residual, seed + 70)
        x = g.op("Add", _mlp(g, normed, seed + 80, "FastGelu"), residual)
    g.output(g.op("MatMul", _norm(g, x, 999), g.const(weights((HIDDEN, VOCAB), 9))))
    return _build(g)


def llama_decoder(layers: int = 2, kv_heads: int = 2, buffer: int = 16, prompt: bool = False) -> onnx.ModelProto:
    """One decoding step as onnxruntime-genai writes it: SimplifiedLayerNormalization,
    GroupQueryAttention with rotary over a ``buffer``-token static cache (seqlens_k and the total
    length computed from the attention mask), SkipSimplifiedLayerNormalization; with ``prompt``,
    the first prompt of ``buffer`` tokens without past. Opset 23: onnx's version converter cannot
    upgrade onnxruntime's ai.onnx SimplifiedLayerNormalization."""
    g = Graph(opset=23)
    ids = g.input("input_ids", [1, buffer if prompt else 1], np.int64)
    mask = g.input("attention_mask", [1, buffer], np.int64)
    seqlens = g.op("Cast", g.op("Sub", g.op("ReduceSum", mask, g.ints([1])), g.const(np.asarray(1, np.int64))), to=onnx.TensorProto.INT32)
    total = g.op("Cast", g.op("Gather", g.op("Shape", mask), g.const(np.asarray(1, np.int64))), to=onnx.TensorProto.INT32)
    angles = np.arange(buffer)[:, None] / 10000.0 ** (np.arange(HEAD // 2) / (HEAD // 2))
    cos, sin = g.const(np.cos(angles).astype(np.float32)), g.const(np.sin(angles).astype(np.float32))
    x = g.op("Gather", g.const(weights((VOCAB, HIDDEN), 7)), ids)
    normed = g.op("SimplifiedLayerNormalization", x, g.const(weights((HIDDEN,), 5, 0.1) + 1), axis=-1, epsilon=1e-6)
    for layer in range(layers):
        seed = 100 * layer
        kv = kv_heads * HEAD
        q = g.op("MatMul", normed, g.const(weights((HIDDEN, HIDDEN), seed + 10)))
        k, v = (g.op("MatMul", normed, g.const(weights((HIDDEN, kv), seed + 11 + i))) for i in range(2))
        past = ["", ""] if prompt else [g.input(f"past_key_values.{layer}.{kind}", [1, kv_heads, buffer, HEAD]) for kind in ("key", "value")]
        attended, present_key, present_value = g.op("GroupQueryAttention", q, k, v, *past, seqlens, total, cos, sin, outputs=3, domain=ORT,
                                                    num_heads=HEADS, kv_num_heads=kv_heads, do_rotary=1)
        g.output(present_key)
        g.output(present_value)
        out = g.op("MatMul", attended, g.const(weights((HIDDEN, HIDDEN), seed + 20)))
        normed, _, _, x = g.op("SkipSimplifiedLayerNormalization", out, x, g.const(weights((HIDDEN,), seed + 30, 0.1) + 1), outputs=4, domain=ORT,
                               epsilon=1e-6)
        gate, up = (g.op("MatMul", normed, g.const(weights((HIDDEN, FFN), seed + 40 + i))) for i in range(2))
        down = g.op("MatMul", g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up), g.const(weights((FFN, HIDDEN), seed + 50)))
        normed, _, _, x = g.op("SkipSimplifiedLayerNormalization", down, x, g.const(weights((HIDDEN,), seed + 60, 0.1) + 1), outputs=4, domain=ORT,
                               epsilon=1e-6)
    g.output(g.op("MatMul", normed, g.const(weights((HIDDEN, VOCAB), 9))))
    return _build(g)
