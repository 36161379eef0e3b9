"""Hypothesis strategy: small attention graphs with every mask family, fill and padding pattern.

Each example is one or two attention layers over graph inputs q, k, v at a drawn magnitude
(either the inputs are scaled, so the scores' range is only known from samples, or the graph
bounds them: ``Tanh`` times the magnitude, so it is proven) (``[B, H, S, D]`` and
``[B, H, T, D]`` with ``T = past + S``) sharing one mask built the way an exporter builds it
(one-minus-mask, mask-equals-zero, causal-buffer, trilu-causal, index-grid, bool-attention-mask, inverted-mask, causal-without-input, constant-mask, a sliding window, an already hoisted float mask), filled with finfo.min,
-inf, -1e9 or -1e4 (-inf only where exporters use it: in selects, never multiplied), with
random left/right/arbitrary padding (all-padding rows included) and an optional SDPA NaN guard.
The strategy also returns which query rows are fully masked (``keep`` has no True in the row):
those are the rows the comparison leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

FAMILIES = ("one-minus-mask", "mask-equals-zero", "causal-buffer", "trilu-causal", "index-grid", "bool-attention-mask", "inverted-mask", "causal-without-input", "constant-mask", "window", "float-input")
_CAUSAL = {"causal-buffer", "trilu-causal", "index-grid", "bool-attention-mask", "causal-without-input", "window"}
_SELECT_FAMILIES = {"mask-equals-zero", "causal-buffer", "index-grid", "bool-attention-mask", "causal-without-input", "constant-mask", "window"}
WINDOW = 2


@dataclass
class AttentionCase:
    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    ignore: dict[str, np.ndarray]
    family: str
    fill: float
    magnitude: float = 1.0
    bounded: bool = False

    def __repr__(self) -> str:
        shapes = {k: v.shape for k, v in self.feeds.items()}
        return f"AttentionCase({self.family}, fill={self.fill}, magnitude={self.magnitude}, bounded={self.bounded}, shapes={shapes})"


class _Nodes:
    def __init__(self, np_dtype: type) -> None:
        self.np = np_dtype
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def op(self, op: str, inputs: list[str], **attrs: object) -> str:
        self.count += 1
        name = f"{op.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def const(self, value: object, dtype: object = None) -> str:
        self.count += 1
        name = f"c{self.count}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype or self.np), name))
        return name

    def ints(self, value: object) -> str:
        return self.const(value, np.int64)

    def dim(self, tensor: str, axis: int) -> str:
        return self.op("Gather", [self.op("Shape", [tensor]), self.ints(axis)], axis=0)

    def grid(self, length: str, axis: int, start: str | None = None) -> str:
        begin = start or self.ints(0)
        end = self.op("Add", [begin, length]) if start else length
        return self.op("Unsqueeze", [self.op("Range", [begin, end, self.ints(1)]), self.ints([axis])])


#: Magnitudes of q, k and v: small scores, unit ones, ones near what -1e4 still masks exactly, and
#: scores far beyond it (where the fill rewrites must refuse).
MAGNITUDES = (1e-3, 1.0, 30.0, 1e3)


@st.composite
def attention_graphs(draw: st.DrawFn, families: tuple[str, ...] = FAMILIES, magnitudes: tuple[float, ...] = MAGNITUDES) -> AttentionCase:
    family = draw(st.sampled_from(families))
    magnitude = draw(st.sampled_from(magnitudes))
    bounded = draw(st.booleans())
    half = family != "bool-attention-mask" and draw(st.integers(0, 4)) == 0
    np_dtype = np.float16 if half else np.float32
    onnx_dtype = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    batch, heads, queries, depth = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(2, 4))
    past = draw(st.integers(0, 3)) if family in _CAUSAL and family not in ("causal-buffer", "bool-attention-mask") else 0
    keys = past + queries
    finfo_min = float(np.finfo(np_dtype).min)
    fills = [finfo_min, -1e4] + ([-1e9] if not half else []) + ([-np.inf] if family in _SELECT_FAMILIES else [])
    fill = draw(st.sampled_from(fills))
    padding = np.ones((batch, keys), np.int64)
    for row in range(batch):
        pattern = draw(st.sampled_from(["none", "left", "right", "random", "all"]))
        count = draw(st.integers(0, keys))
        if pattern == "left":
            padding[row, :count] = 0
        elif pattern == "right":
            padding[row, keys - count:] = 0
        elif pattern == "random":
            padding[row] = np.asarray(draw(st.lists(st.integers(0, 1), min_size=keys, max_size=keys)))
        elif pattern == "all":
            padding[row] = 0
    g = _Nodes(np_dtype)
    inputs = [helper.make_tensor_value_info(n, onnx_dtype, ["B", heads, s, depth]) for n, s in (("q", "S"), ("k", "T"), ("v", "T"))]
    rows, cols = np.arange(queries)[:, None] + past, np.arange(keys)[None, :]
    causal_keep = cols <= rows
    pad_keep = padding.astype(bool)[:, None, :]
    uses_padding = family not in ("causal-without-input", "constant-mask", "float-input")
    if uses_padding:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "T"]))
    keep = np.ones((batch, queries, keys), bool)
    mask_kind, mask = _mask(g, family, fill, np_dtype, onnx_dtype, queries, keys, past)
    if family in _CAUSAL:
        keep &= causal_keep[None]
    if family == "window":
        keep &= (cols > rows - WINDOW)[None]
    if uses_padding:
        keep &= pad_keep
    if family == "float-input":
        inputs.append(helper.make_tensor_value_info("additive_mask", onnx_dtype, ["B", 1, "S", "T"]))
    layers = draw(st.integers(1, 2))
    guard = draw(st.booleans())
    scale = g.const(1.0 / np.sqrt(depth))
    query, key, value, opset = "q", "k", "v", 18
    if bounded:
        query, key, value = (g.op("Mul", [g.op("Tanh", [name]), g.const(magnitude)]) for name in ("q", "k", "v"))
    for _ in range(layers):
        if family == "bool-attention-mask":
            opset = 23
            query = g.op("Attention", [query, key, value, mask], scale=float(1.0 / np.sqrt(depth)))
            continue
        scores = g.op("Mul", [g.op("MatMul", [query, g.op("Transpose", [key], perm=[0, 1, 3, 2])]), scale])
        if mask_kind == "keep":
            scores = g.op("Where", [mask, scores, g.const(fill)])
        elif mask_kind == "drop":
            scores = g.op("Where", [mask, g.const(fill), scores])
        else:
            scores = g.op("Add", [scores, mask])
        if family == "causal-buffer":  # (1 - m) * fill: a -inf fill would make 0 * -inf = NaN at kept keys
            scores = g.op("Add", [scores, _m1(g, fill if np.isfinite(fill) else finfo_min, onnx_dtype)])
        probabilities = g.op("Softmax", [scores], axis=-1)
        if guard:
            probabilities = g.op("Where", [g.op("IsNaN", [probabilities]), g.const(0.0), probabilities])
        query = g.op("MatMul", [probabilities, value])
    g.nodes.append(helper.make_node("Identity", [query], ["out"], name="out"))
    graph = helper.make_graph(g.nodes, "attention", inputs, [helper.make_tensor_value_info("out", onnx_dtype, ["B", heads, "S", depth])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    size = 1.0 if bounded else magnitude
    feeds = {n: (rng.standard_normal((batch, heads, s, depth)) * size).astype(np_dtype) for n, s in (("q", queries), ("k", keys), ("v", keys))}
    if uses_padding:
        feeds["attention_mask"] = padding
    if family == "float-input":
        feeds["additive_mask"] = np.where(rng.random((batch, 1, queries, keys)) < 0.7, 0, fill).astype(np_dtype)
        keep = feeds["additive_mask"][:, 0] == 0
    fully_masked = ~keep.any(axis=-1)  # [B, S]
    return AttentionCase(model, feeds, {"out": fully_masked[:, None, :, None]}, family, fill, magnitude, bounded)


def _m1(g: _Nodes, fill: float, onnx_dtype: int) -> str:
    as_float = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.ints([1, 2])])], to=onnx_dtype)
    return g.op("Mul", [g.op("Sub", [g.const(1.0), as_float]), g.const(fill)])


def _mask(g: _Nodes, family: str, fill: float, np_dtype: type, onnx_dtype: int, queries: int, keys: int, past: int) -> tuple[str, str]:
    """(how the mask is applied: additive/keep/drop, the mask tensor), built once and shared."""
    if family == "one-minus-mask":
        return "additive", _m1(g, fill, onnx_dtype)
    if family == "mask-equals-zero":
        equal = g.op("Equal", [g.op("Unsqueeze", ["attention_mask", g.ints([1, 2])]), g.ints(0)])
        return "drop", g.op("Cast", [equal], to=TensorProto.BOOL)
    if family == "causal-buffer":
        size = 8
        buffer = g.const(np.tril(np.ones((size, size), bool))[None, None], np.bool_)
        sliced = g.op("Slice", [buffer, g.ints([0, 0]), g.ints([queries, keys]), g.ints([2, 3])])
        return "keep", sliced
    if family == "trilu-causal":
        shape = g.op("Concat", [g.op("Unsqueeze", [g.dim("q", 2), g.ints([0])]), g.op("Unsqueeze", [g.dim("k", 2), g.ints([0])])], axis=0)
        filled = g.op("ConstantOfShape", [shape], value=numpy_helper.from_array(np.array([fill], np_dtype)))
        causal = g.op("Unsqueeze", [g.op("Trilu", [filled, g.ints(past + 1)], upper=1), g.ints([0, 1])])
        pad = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.ints([1, 2])])], to=onnx_dtype)
        masked = g.op("Equal", [g.op("Add", [causal, pad]), g.const(0.0)])
        return "additive", g.op("Where", [masked, g.const(fill), causal])
    if family == "inverted-mask":
        as_float = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.ints([1, 2])])], to=onnx_dtype)
        inverted = g.op("Sub", [g.const(1.0), as_float])
        return "additive", g.op("Where", [g.op("Cast", [inverted], to=TensorProto.BOOL), g.const(fill), inverted])
    if family == "constant-mask":
        ones = g.const(np.ones((1, 1, queries, 1), bool), np.bool_)
        expanded = g.op("Expand", [ones, g.op("Concat", [g.ints([1, 1]), g.op("Unsqueeze", [g.dim("q", 2), g.ints([0])]), g.op("Unsqueeze", [g.dim("k", 2), g.ints([0])])], axis=0)])
        return "additive", g.op("Where", [expanded, g.const(0.0), g.const(fill)])
    if family == "float-input":
        return "additive", "additive_mask"
    past_length = g.op("Sub", [g.dim("k", 2), g.dim("q", 2)])
    query_grid = g.grid(g.dim("q", 2), 1, start=past_length)
    key_grid = g.grid(g.dim("k", 2), 0)
    keep = g.op("LessOrEqual", [key_grid, query_grid])
    if family == "window":
        keep = g.op("And", [keep, g.op("Greater", [key_grid, g.op("Add", [query_grid, g.ints(-WINDOW)])])])
    if family != "causal-without-input":
        padding = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], to=TensorProto.BOOL), g.ints([1, 2])])
        keep = g.op("And", [g.op("And", [g.const(True, np.bool_), keep]), padding])
    if family == "bool-attention-mask":
        return "bool", keep
    return "additive", g.op("Where", [keep, g.const(0.0), g.const(fill)])
