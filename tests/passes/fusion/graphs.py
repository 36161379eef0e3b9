"""Exporter-shaped test graphs for the fusion rules, built with onnx.helper.

Each ``*_model`` function takes a spec dataclass and returns a ModelProto reproducing what the
torch.onnx exporters write (TorchScript and dynamo, eager and SDPA attention): SDPA's split
sqrt(scale) on Q and Kᵀ, the IsNaN guard after Softmax, Where-based masks, repeat_kv's
Unsqueeze/Expand/Reshape for GQA, rotate-half with Slice/Neg/Concat, ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
import onnx.shape_inference
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10
F32 = np.dtype(np.float32)


class Graph:
    """Accumulates nodes and initializers; ``op`` returns the output name."""

    def __init__(self, opset: int = 18) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.count = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def input(self, name: str, shape: list[int | str], dtype: np.dtype = F32) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape))
        return name

    def const(self, value: object, dtype: object = None, prefix: str = "c") -> str:
        array = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values: list[int]) -> str:
        return self.const(np.asarray(values, dtype=np.int64), prefix="shape")

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs: object) -> str | list[str]:
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.fresh(op_type + "_n"), **attrs))
        return names[0] if outputs == 1 else names

    def reduce_mean(self, x: str, axes: list[int]) -> str:
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.ints(axes), keepdims=1)
        return self.op("ReduceMean", x, axes=axes, keepdims=1)

    def unsqueeze(self, x: str, axes: list[int]) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", x, self.ints(axes))
        return self.op("Unsqueeze", x, axes=axes)

    def split(self, x: str, sizes: list[int], axis: int) -> list[str]:
        """Split into ``sizes`` along ``axis``: sizes as an input from opset 13, an attribute before."""
        if self.opset >= 13:
            return self.op("Split", x, self.ints(sizes), outputs=len(sizes), axis=axis)  # type: ignore[return-value]
        return self.op("Split", x, outputs=len(sizes), axis=axis, split=sizes)  # type: ignore[return-value]

    def output(self, name: str, dtype: np.dtype = F32) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), None))

    def build(self) -> onnx.ModelProto:
        """The model, its outputs typed by onnx's shape inference."""
        graph = helper.make_graph(self.nodes, "fusion_test", self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=IR_VERSION)
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        types = {info.name: info.type for info in [*inferred.graph.value_info, *inferred.graph.output]}
        for output in model.graph.output:
            if output.name in types and types[output.name].tensor_type.HasField("shape"):
                output.type.CopyFrom(types[output.name])
        return model


def weights(shape: tuple[int, ...], seed: int, scale: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def commuted(graph: Graph, op_type: str, a: str, b: str, swap: bool) -> str:
    return graph.op(op_type, *((b, a) if swap else (a, b)))


# -- attention ------------------------------------------------------------------------------------------


@dataclass
class AttentionSpec:
    batch: int = 2
    seq: int = 5
    kv_seq: int | None = None
    heads: int = 4
    kv_heads: int | None = None
    head_dim: int = 8
    symbolic: bool = False
    #: scores-mul | scores-div | split-sqrt | q-proj | none
    scale: str = "scores-mul"
    scale_value: float | None = None
    #: bhsd (Transpose(K, [0,1,3,2])) | ts (Transpose(K_bshd, [0,2,3,1])) | sandwich (dynamo SDPA)
    k_style: str = "bhsd"
    #: none | input (additive float input) | where (Where(bool, 0, fill) -> Add) | where-scores
    #: (Where(bool, scores, fill)) | padding (additive [B,1,1,L], broadcast in the query axis)
    mask: str = "input"
    fill: Literal["lowest", "-inf"] = "lowest"
    guard: bool = False
    softmax_cast: bool = False
    swap_operands: bool = False
    opset: int = 18

    @property
    def kv(self) -> int:
        return self.kv_heads or self.heads

    @property
    def length(self) -> int:
        return self.kv_seq or self.seq


def attention_model(spec: AttentionSpec) -> onnx.ModelProto:
    """Hidden states -> Q/K/V projections -> head split -> scaled dot-product attention -> merge."""
    g = Graph(spec.opset)
    hidden = spec.heads * spec.head_dim
    kv_hidden = spec.kv * spec.head_dim
    b_dim = "batch" if spec.symbolic else spec.batch
    s_dim = "seq" if spec.symbolic else spec.seq
    l_dim = ("kv_seq" if spec.symbolic else spec.length) if spec.kv_seq else s_dim
    x = g.input("x", [b_dim, s_dim, hidden])
    memory = g.input("memory", [b_dim, l_dim, hidden]) if spec.kv_seq else x
    scale = spec.scale_value if spec.scale_value is not None else 1.0 / math.sqrt(spec.head_dim)

    q = g.op("MatMul", x, g.const(weights((hidden, hidden), 1)))
    if spec.scale == "q-proj":
        q = g.op("Mul", q, g.const(np.float32(scale)))
    k = g.op("MatMul", memory, g.const(weights((hidden, kv_hidden), 2)))
    v = g.op("MatMul", memory, g.const(weights((hidden, kv_hidden), 3)))

    def split(t: str, heads: int) -> str:
        return g.op("Reshape", t, g.ints([0, 0, heads, spec.head_dim]))

    q4 = g.op("Transpose", split(q, spec.heads), perm=[0, 2, 1, 3])
    v4 = g.op("Transpose", split(v, spec.kv), perm=[0, 2, 1, 3])
    if spec.k_style == "ts" and spec.kv == spec.heads:
        kt = g.op("Transpose", split(k, spec.kv), perm=[0, 2, 3, 1])
    else:
        k4 = g.op("Transpose", split(k, spec.kv), perm=[0, 2, 1, 3])
        if spec.kv != spec.heads:
            k4, v4 = _repeat_kv(g, k4, spec), _repeat_kv(g, v4, spec)
        if spec.k_style == "sandwich":
            kt = _k_sandwich(g, k4, spec)
        else:
            kt = g.op("Transpose", k4, perm=[0, 1, 3, 2])
    if spec.scale == "split-sqrt":
        root = g.const(np.float32(math.sqrt(scale)))
        q4, kt = g.op("Mul", q4, root), g.op("Mul", kt, root)
    scores = g.op("MatMul", q4, kt)
    if spec.scale == "scores-mul":
        scores = commuted(g, "Mul", scores, g.const(np.float32(scale)), spec.swap_operands)
    elif spec.scale == "scores-div":
        scores = g.op("Div", scores, g.const(np.float32(1.0 / scale)))
    scores = _mask(g, scores, spec, b_dim, s_dim, l_dim)
    if spec.softmax_cast:
        scores = g.op("Cast", scores, to=TensorProto.DOUBLE)
    probabilities = g.op("Softmax", scores, axis=-1)
    if spec.softmax_cast:
        probabilities = g.op("Cast", probabilities, to=TensorProto.FLOAT)
    if spec.guard:
        probabilities = g.op("Where", g.op("IsNaN", probabilities), g.const(np.float32(0.0)), probabilities)
    context = g.op("MatMul", probabilities, v4)
    merged = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), g.ints([0, 0, hidden]))
    g.output(g.op("MatMul", merged, g.const(weights((hidden, hidden), 4))))
    return g.build()


def _fill(spec: AttentionSpec) -> np.float32:
    return np.float32(-np.inf) if spec.fill == "-inf" else np.finfo(np.float32).min


def _mask(g: Graph, scores: str, spec: AttentionSpec, b_dim: object, s_dim: object, l_dim: object) -> str:
    if spec.mask == "none":
        return scores
    if spec.mask == "input":
        return commuted(g, "Add", scores, g.input("mask", [b_dim, 1, s_dim, l_dim]), spec.swap_operands)
    if spec.mask == "padding":
        return g.op("Add", scores, g.input("mask", [b_dim, 1, 1, l_dim]))
    keep = g.input("keep", [b_dim, 1, s_dim, l_dim], np.dtype(bool))
    if spec.mask == "where":
        additive = g.op("Where", keep, g.const(np.float32(0.0)), g.const(_fill(spec)))
        return commuted(g, "Add", scores, additive, spec.swap_operands)
    if spec.mask == "where-scores":
        return g.op("Where", keep, scores, g.const(_fill(spec)))
    raise ValueError(spec.mask)


def _repeat_kv(g: Graph, t: str, spec: AttentionSpec) -> str:
    """HuggingFace's repeat_kv as exported: Unsqueeze(2) -> Expand -> Reshape, shapes from Shape ops."""
    times = spec.heads // spec.kv
    shape = g.op("Shape", t)
    batch = g.op("Slice", shape, g.ints([0]), g.ints([1]))
    rest = g.op("Slice", shape, g.ints([2]), g.ints([4]))
    grown = g.op("Expand", g.unsqueeze(t, [2]), g.op("Concat", batch, g.ints([spec.kv, times]), rest, axis=0))
    return g.op("Reshape", grown, g.op("Concat", batch, g.ints([spec.heads]), rest, axis=0))


def _k_sandwich(g: Graph, k4: str, spec: AttentionSpec) -> str:
    """dynamo's SDPA: Kᵀ as Reshape([B*H, L, D]) -> Transpose(0,2,1) -> Reshape([B, H, D, L])."""
    shape = g.op("Shape", k4)
    batch_heads = g.op("Slice", shape, g.ints([0]), g.ints([2]))
    seq_dim = g.op("Slice", shape, g.ints([2]), g.ints([4]))
    merged = g.op("Reshape", k4, g.op("Concat", g.ints([-1]), seq_dim, axis=0))
    flipped = g.op("Transpose", merged, perm=[0, 2, 1])
    length = g.op("Slice", shape, g.ints([2]), g.ints([3]))
    return g.op("Reshape", flipped, g.op("Concat", batch_heads, g.ints([spec.head_dim]), length, axis=0))


# -- a whole encoder layer, as keras2onnx/tf2onnx write it at opset 11/12 ---------------------------


@dataclass
class EncoderSpec:
    batch: int = 2
    seq: int = 6
    heads: int = 2
    head_dim: int = 8
    opset: int = 11
    layers: int = 1
    #: tf2onnx/keras2onnx style: symbolic batch and sequence, every Reshape target computed from
    #: Shape -> Cast(int32) -> Slice -> Cast(int64) -> Squeeze -> Unsqueeze -> Concat
    computed_shapes: bool = False


def encoder_model(spec: EncoderSpec) -> onnx.ModelProto:
    """BERT layers at an old opset: packed QKV MatMul and Split (sizes as an attribute below
    13), head split by Reshape/Transpose, scaled scores plus an additive padding mask built from
    an int64 attention mask (Unsqueeze with attribute axes), Softmax over the last axis, LayerNorm
    as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div with scale and bias, and an Erf GELU."""
    g = Graph(spec.opset)
    hidden = spec.heads * spec.head_dim
    batch, seq = ("batch", "seq") if spec.computed_shapes else (spec.batch, spec.seq)
    x = g.input("x", [batch, seq, hidden])
    mask = g.input("attention_mask", [batch, seq], np.dtype(np.int64))

    def layer_norm(t: str, seed: int) -> str:
        centered = g.op("Sub", t, g.reduce_mean(t, [-1]))
        variance = g.op("Add", g.reduce_mean(g.op("Pow", centered, g.const(np.float32(2.0))), [-1]), g.const(np.float32(1e-12)))
        normalized = g.op("Div", centered, g.op("Sqrt", variance))
        return g.op("Add", g.op("Mul", normalized, g.const(1.0 + weights((hidden,), seed))), g.const(weights((hidden,), seed + 1)))

    def dense(t: str, fan_in: int, width: int, seed: int) -> str:
        return g.op("Add", g.op("MatMul", t, g.const(weights((fan_in, width), seed))), g.const(weights((width,), seed + 1)))

    def dim(t: str, axis: int) -> str:
        """tf2onnx's lookup of one dim of ``t`` as a [1] int64 tensor."""
        narrow = g.op("Cast", g.op("Shape", t), to=TensorProto.INT32)
        picked = g.op("Cast", g.op("Slice", narrow, g.ints([axis]), g.ints([axis + 1]), g.ints([0])), to=TensorProto.INT64)
        squeezed = g.op("Squeeze", picked, g.ints([0])) if spec.opset >= 13 else g.op("Squeeze", picked, axes=[0])
        return g.unsqueeze(squeezed, [0])

    def target(t: str, tail: list[int]) -> str:
        if not spec.computed_shapes:
            return g.ints([spec.batch, spec.seq, *tail])
        return g.op("Concat", dim(t, 0), dim(t, 1), g.ints(tail), axis=0)

    padding = g.op("Cast", g.unsqueeze(g.unsqueeze(mask, [1]), [2]), to=TensorProto.FLOAT)
    additive = g.op("Mul", g.op("Sub", g.const(np.float32(1.0)), padding), g.const(np.float32(-10000.0)))
    hidden_states = x
    for layer in range(spec.layers):
        seed = 100 * layer
        qkv = g.op("MatMul", hidden_states, g.const(weights((hidden, 3 * hidden), seed + 21)))
        q, k, v = g.split(qkv, [hidden] * 3, axis=-1)
        heads = target(qkv, [spec.heads, spec.head_dim])
        q4 = g.op("Transpose", g.op("Reshape", q, heads), perm=[0, 2, 1, 3])
        kt = g.op("Transpose", g.op("Reshape", k, heads), perm=[0, 2, 3, 1])
        v4 = g.op("Transpose", g.op("Reshape", v, heads), perm=[0, 2, 1, 3])
        scores = g.op("Mul", g.op("MatMul", q4, kt), g.const(np.float32(1 / math.sqrt(spec.head_dim))))
        probabilities = g.op("Softmax", g.op("Add", scores, additive), axis=3)
        context = g.op("Transpose", g.op("MatMul", probabilities, v4), perm=[0, 2, 1, 3])
        merged = g.op("Reshape", context, target(context, [hidden]))
        attended = layer_norm(g.op("Add", dense(merged, hidden, hidden, seed + 23), hidden_states), seed + 25)
        up = dense(attended, hidden, 2 * hidden, seed + 27)
        gelu = g.op("Mul", g.op("Mul", up, g.op("Add", g.op("Erf", g.op("Div", up, g.const(np.float32(math.sqrt(2.0))))), g.const(np.float32(1.0)))), g.const(np.float32(0.5)))
        hidden_states = layer_norm(g.op("Add", dense(gelu, 2 * hidden, hidden, seed + 29), attended), seed + 31)
    g.output(hidden_states)
    return g.build()


def cnn_model(opset: int = 11) -> onnx.ModelProto:
    """A small CNN at an old opset: Pad -> Conv -> BatchNormalization -> Relu, Conv with bias Add,
    GlobalAveragePool, Flatten, Gemm, Softmax(axis=1) over the classes of a 2-D tensor."""
    g = Graph(opset)
    x = g.input("x", [2, 3, 8, 8])
    pads = [0, 0, 1, 1, 0, 0, 1, 1]
    padded = g.op("Pad", x, g.ints(pads), g.const(np.float32(0.0))) if opset >= 11 else g.op("Pad", x, pads=pads)
    y = g.op("Conv", padded, g.const(weights((4, 3, 3, 3), 41)), kernel_shape=[3, 3])
    params = [1 + weights((4,), 42), weights((4,), 43), weights((4,), 44), 0.5 + np.abs(weights((4,), 45))]
    y = g.op("Relu", g.op("BatchNormalization", y, *[g.const(p) for p in params], epsilon=1e-3))
    y = g.op("Add", g.op("Conv", y, g.const(weights((6, 4, 1, 1), 46)), kernel_shape=[1, 1]), g.const(weights((6, 1, 1), 47)))
    pooled = g.op("Flatten", g.op("GlobalAveragePool", g.op("Relu", y)), axis=1)
    logits = g.op("Gemm", pooled, g.const(weights((6, 5), 48)), g.const(weights((5,), 49)))
    g.output(g.op("Softmax", logits, axis=1))
    return g.build()


# -- normalisation, GELU, rotary -----------------------------------------------------------------------


@dataclass
class NormSpec:
    shape: tuple[int, ...] = (2, 5, 16)
    axes: int = 1
    epsilon: float = 1e-5
    affine: bool = True
    bias: bool = True
    #: how 1/std is applied: div | reciprocal | pow (Pow(v, -0.5))
    inverse: str = "div"
    #: how squares are written: mul | pow
    square: str = "pow"
    swap_operands: bool = False
    #: False | True (x = Cast(h) to fp32, the result cast back to fp16) | "centered" (centred in
    #: fp16, Cast to fp32 before the variance, the result cast back)
    cast_sandwich: bool | str = False
    #: LayerNorm written as tf2onnx/keras2onnx do: f = scale / std; x * f + (bias - mean * f)
    batch_norm_form: bool = False
    opset: int = 18


def layer_norm_model(spec: NormSpec) -> onnx.ModelProto:
    if spec.batch_norm_form:
        return _tf_layer_norm_model(spec)
    return _norm_model(spec, rms=False)


def _tf_layer_norm_model(spec: NormSpec) -> onnx.ModelProto:
    g = Graph(spec.opset)
    x = g.input("x", list(spec.shape))
    axes = list(range(-spec.axes, 0))
    normalized_shape = spec.shape[len(spec.shape) - spec.axes :]
    mean = g.reduce_mean(x, axes)
    centered = g.op("Sub", x, mean)
    square = g.op("Pow", centered, g.const(np.float32(2.0))) if spec.square == "pow" else g.op("Mul", centered, centered)
    variance = commuted(g, "Add", g.reduce_mean(square, axes), g.const(np.float32(spec.epsilon)), spec.swap_operands)
    inverse = g.op("Pow", variance, g.const(np.float32(-0.5))) if spec.inverse == "pow" else g.op("Reciprocal", g.op("Sqrt", variance))
    factor = commuted(g, "Mul", inverse, g.const((1.0 + weights(normalized_shape, 5)).astype(F32)), spec.swap_operands)
    shift = g.op("Sub", g.const(weights(normalized_shape, 6).astype(F32)), commuted(g, "Mul", mean, factor, spec.swap_operands))
    g.output(commuted(g, "Add", commuted(g, "Mul", x, factor, spec.swap_operands), shift, spec.swap_operands))
    return g.build()


def rms_norm_model(spec: NormSpec) -> onnx.ModelProto:
    return _norm_model(spec, rms=True)


def _norm_model(spec: NormSpec, rms: bool) -> onnx.ModelProto:
    g = Graph(spec.opset)
    dtype = np.dtype(np.float16) if spec.cast_sandwich else F32
    h = g.input("x", list(spec.shape), dtype)
    x = g.op("Cast", h, to=TensorProto.FLOAT) if spec.cast_sandwich is True else h
    axes = list(range(-spec.axes, 0))
    normalized_shape = spec.shape[len(spec.shape) - spec.axes :]
    if rms:
        centered = x
    else:
        centered = g.op("Sub", x, g.reduce_mean(x, axes))
        if spec.cast_sandwich == "centered":
            centered = g.op("Cast", centered, to=TensorProto.FLOAT)
    square = g.op("Pow", centered, g.const(np.float32(2.0))) if spec.square == "pow" else g.op("Mul", centered, centered)
    variance = commuted(g, "Add", g.reduce_mean(square, axes), g.const(np.float32(spec.epsilon)), spec.swap_operands)
    if spec.inverse == "pow":
        normalized = g.op("Mul", centered, g.op("Pow", variance, g.const(np.float32(-0.5))))
    else:
        std = g.op("Sqrt", variance)
        if spec.inverse == "reciprocal":
            normalized = commuted(g, "Mul", centered, g.op("Reciprocal", std), spec.swap_operands)
        else:
            normalized = g.op("Div", centered, std)
    if spec.cast_sandwich:
        normalized = g.op("Cast", normalized, to=TensorProto.FLOAT16)
    result = normalized
    if spec.affine:
        scale = g.const((1.0 + weights(normalized_shape, 5)).astype(dtype))
        result = commuted(g, "Mul", result, scale, spec.swap_operands)
        if spec.bias and not rms:
            result = commuted(g, "Add", result, g.const(weights(normalized_shape, 6).astype(dtype)), spec.swap_operands)
    g.output(result, dtype)
    return g.build()


@dataclass
class GeluSpec:
    shape: tuple[int, ...] = (2, 5, 8)
    approximate: str = "none"
    #: order of the outer product: half-first | half-last | inner
    association: str = "half-last"
    divide: bool = True
    cube: str = "pow"
    swap_operands: bool = False
    opset: int = 18
    #: tanh only: Megatron's √(2/π)·x·(1 + 0.044715·x²) instead of √(2/π)·(x + 0.044715·x³)
    factored: bool = False
    #: tanh with cube "mul" only: 0.044715 multiplied last ((x·x)·0.044715), or innermost
    #: (x·(x·0.044715), as onnxruntime's FastGelu fusion and its fast_gelu.py test model write it)
    constant_inside: bool = False


def gelu_model(spec: GeluSpec) -> onnx.ModelProto:
    g = Graph(spec.opset)
    x = g.op("MatMul", g.input("x", list(spec.shape)), g.const(weights((spec.shape[-1], spec.shape[-1]), 7, 1.0)))
    if spec.approximate == "tanh" and spec.factored:
        factor = commuted(g, "Add", _cubic_term(g, x, 2, spec), g.const(np.float32(1.0)), spec.swap_operands)
        scaled = commuted(g, "Mul", g.const(np.float32(math.sqrt(2 / math.pi))), x, spec.swap_operands)
        core = g.op("Tanh", g.op("Mul", scaled, factor))
    elif spec.approximate == "tanh":
        inner = g.op("Add", x, _cubic_term(g, x, 3, spec))
        core = g.op("Tanh", commuted(g, "Mul", inner, g.const(np.float32(math.sqrt(2 / math.pi))), spec.swap_operands))
    elif spec.divide:
        core = g.op("Erf", g.op("Div", x, g.const(np.float32(math.sqrt(2.0)))))
    else:
        core = g.op("Erf", g.op("Mul", x, g.const(np.float32(math.sqrt(0.5)))))
    one_plus = commuted(g, "Add", core, g.const(np.float32(1.0)), spec.swap_operands)
    half = g.const(np.float32(0.5))
    if spec.association == "half-first":
        result = g.op("Mul", commuted(g, "Mul", x, half, spec.swap_operands), one_plus)
    elif spec.association == "inner":
        result = g.op("Mul", x, commuted(g, "Mul", one_plus, half, spec.swap_operands))
    else:
        result = commuted(g, "Mul", g.op("Mul", x, one_plus), half, spec.swap_operands)
    g.output(result)
    return g.build()


def _cubic_term(g: Graph, x: str, power: int, spec: GeluSpec) -> str:
    """0.044715·x^power: Pow(x, power)·c, (x·x[·x])·c, or with ``constant_inside`` x·(x[·(x)]·c)."""
    c = g.const(np.float32(0.044715))
    if spec.cube == "pow":
        return commuted(g, "Mul", g.op("Pow", x, g.const(np.float32(power))), c, spec.swap_operands)
    if spec.constant_inside:
        term = commuted(g, "Mul", x, c, spec.swap_operands)
        for _ in range(power - 1):
            term = commuted(g, "Mul", x, term, spec.swap_operands)
        return term
    term = g.op("Mul", x, x)
    for _ in range(power - 2):
        term = g.op("Mul", term, x)
    return commuted(g, "Mul", term, c, spec.swap_operands)


@dataclass
class RotarySpec:
    batch: int = 2
    heads: int = 4
    seq: int = 5
    head_dim: int = 8
    rotary_dim: int | None = None
    #: computed (Cos(Concat(f, f)) from positions) | constant (a folded table)
    table: str = "computed"
    table_batch: int = 1
    swap_operands: bool = False
    opset: int = 18
    symbolic: bool = False


def rotary_model(spec: RotarySpec) -> onnx.ModelProto:
    """q [B, H, S, D] -> q * cos + rotate_half(q) * sin, HuggingFace style."""
    g = Graph(spec.opset)
    b_dim = "batch" if spec.symbolic else spec.batch
    s_dim = "seq" if spec.symbolic else spec.seq
    q = g.op("Mul", g.input("q", [b_dim, spec.heads, s_dim, spec.head_dim]), g.const(np.float32(1.0)))
    width = spec.rotary_dim or spec.head_dim
    inv_freq = (1.0 / (10000 ** (np.arange(0, width, 2) / width))).astype(np.float32)
    if spec.table == "constant":
        positions = np.arange(spec.seq, dtype=np.float32)
        freqs = np.outer(positions, inv_freq)
        emb = np.concatenate([freqs, freqs], -1)[None, None]
        cos, sin = g.const(np.cos(emb).astype(np.float32)), g.const(np.sin(emb).astype(np.float32))
    else:
        positions = g.op("Cast", g.input("positions", [spec.table_batch, s_dim], np.dtype(np.int64)), to=TensorProto.FLOAT)
        freqs = g.op("Mul", g.unsqueeze(positions, [-1]), g.const(inv_freq))
        emb = g.op("Concat", freqs, freqs, axis=-1)
        cos = g.unsqueeze(g.op("Cos", emb), [1])
        sin = g.unsqueeze(g.op("Sin", emb), [1])
    rotated = q if spec.rotary_dim is None else g.op("Slice", q, g.ints([0]), g.ints([width]), g.ints([-1]))
    half = width // 2
    low = g.op("Slice", rotated, g.ints([0]), g.ints([half]), g.ints([-1]), g.ints([1]))
    high = g.op("Slice", rotated, g.ints([half]), g.ints([np.iinfo(np.int64).max]), g.ints([-1]), g.ints([1]))
    turned = g.op("Concat", g.op("Neg", high), low, axis=-1)
    result = g.op("Add", commuted(g, "Mul", rotated, cos, spec.swap_operands), commuted(g, "Mul", turned, sin, spec.swap_operands))
    if spec.rotary_dim is not None:
        kept = g.op("Slice", q, g.ints([width]), g.ints([spec.head_dim]), g.ints([-1]))
        result = g.op("Concat", result, kept, axis=-1)
    g.output(result)
    return g.build()


@dataclass
class ConvSpec:
    channels: int = 3
    out_channels: int = 4
    group: int = 1
    transpose: bool = False
    bias: bool = True
    add: str = "none"
    batch_norm: bool = True
    spatial: tuple[int, ...] = (6, 6)
    extra: dict = field(default_factory=dict)


def conv_model(spec: ConvSpec) -> onnx.ModelProto:
    g = Graph(18)
    x = g.input("x", [2, spec.channels, *spec.spatial])
    kernel = [3] * len(spec.spatial)
    if spec.transpose:
        weight = weights((spec.channels, spec.out_channels // spec.group, *kernel), 11)
    else:
        weight = weights((spec.out_channels, spec.channels // spec.group, *kernel), 11)
    inputs = [x, g.const(weight)]
    if spec.bias:
        inputs.append(g.const(weights((spec.out_channels,), 12)))
    y = g.op("ConvTranspose" if spec.transpose else "Conv", *inputs, group=spec.group, kernel_shape=kernel, **spec.extra)
    if spec.add == "channel":
        y = g.op("Add", y, g.const(weights((spec.out_channels,) + (1,) * len(spec.spatial), 13)))
    elif spec.add == "scalar":
        y = g.op("Add", g.const(np.float32(0.25)), y)
    if spec.batch_norm:
        c = spec.out_channels
        params = [1 + weights((c,), 14), weights((c,), 15), weights((c,), 16), 0.5 + np.abs(weights((c,), 17))]
        y = g.op("BatchNormalization", y, *[g.const(p) for p in params], epsilon=1e-3)
    g.output(g.op("Relu", y))
    return g.build()
