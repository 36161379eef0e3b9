"""canonicalize: one spelling per operation, and the attention canonical forms."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto

import mapc
from mapc.ir.compare import Tolerance
from mapc.testing import onnx_models

from .common import fuse, misses
from .graphs import AttentionSpec, Graph, attention_model

EXACT = Tolerance(0.0, 0.0)


def canonical(build, **kwargs):
    return fuse(build(), "canonicalize", **kwargs)


def single(op_type, *constants, shape=(2, 3), swap=False, opset=18, dtype=np.float32):
    g = Graph(opset)
    x = g.input("x", list(shape), np.dtype(dtype))
    operands = [x, *[g.const(np.asarray(c, dtype=dtype)) for c in constants]]
    if swap:
        operands.reverse()
    g.output(g.op(op_type, *operands), np.dtype(dtype))
    return g.build()


@pytest.mark.parametrize(
    "model, expected",
    [
        (lambda: single("Add", 2.0, swap=True), ["Add"]),
        (lambda: single("Div", 4.0), ["Mul"]),
        (lambda: single("Sub", 0.0, swap=True), ["Neg"]),
        (lambda: single("Mul", -1.0), ["Neg"]),
        (lambda: single("Pow", 2.0), ["Mul"]),
        (lambda: single("Pow", 0.5), ["Sqrt"]),
        (lambda: single("Pow", -1.0), ["Reciprocal"]),
        (lambda: single("Pow", -0.5), ["Sqrt", "Reciprocal"]),
        (lambda: single("Div", 1.0, swap=True), ["Reciprocal"]),
    ],
)
def test_arithmetic_spellings(model, expected):
    rewritten, _ = canonical(model)
    assert [n.op for n in rewritten.graph.nodes] == expected


def test_constant_moves_second():
    rewritten, _ = canonical(lambda: single("Mul", 3.0, swap=True))
    (node,) = rewritten.graph.nodes
    assert node.inputs[0].name == "x"


def test_integer_division_stays():
    rewritten, record = canonical(lambda: single("Div", 2, dtype=np.int64))
    assert [n.op for n in rewritten.graph.nodes] == ["Div"] and not record.changed


def test_a_constant_that_broadcasts_up_is_not_dropped():
    g = Graph(18)
    x = g.input("x", [3])
    g.output(g.op("Sub", g.const(np.zeros((2, 1), np.float32)), x))
    rewritten, _ = fuse(g.build(), "canonicalize")
    assert [n.op for n in rewritten.graph.nodes] == ["Sub"]


def test_neg_forms():
    g = Graph(18)
    x, y = g.input("x", [2, 3]), g.input("y", [2, 3])
    a = g.op("Add", x, g.op("Neg", y))
    b = g.op("Sub", a, g.op("Neg", x))
    g.output(g.op("Neg", g.op("Neg", b)))
    rewritten, _ = canonical(g.build)
    assert [n.op for n in rewritten.graph.nodes] == ["Sub", "Add"]


def test_noop_cast_and_reciprocal_division():
    g = Graph(18)
    x, y = g.input("x", [2, 3]), g.input("y", [2, 3])
    g.output(g.op("Mul", g.op("Cast", x, to=TensorProto.FLOAT), g.op("Reciprocal", y)))
    rewritten, _ = canonical(g.build)
    assert [n.op for n in rewritten.graph.nodes] == ["Div"]


def test_attention_scale_moves_to_the_scores():
    rewritten, record = canonical(lambda: attention_model(AttentionSpec(scale="split-sqrt", k_style="sandwich", mask="where", symbolic=True)), dims={"batch": 2, "seq": 5})
    softmax = next(n for n in rewritten.graph.nodes if n.op == "Softmax")
    add = softmax.inputs[0].inputs[0]
    scale = add.inputs[0].inputs[0]
    assert add.op == "Add" and scale.op == "Mul" and scale.inputs[0].inputs[0].op == "MatMul"
    assert float(scale.inputs[1].values) == pytest.approx(8**-0.5, rel=1e-6)
    assert record.counters["attention-scale"] == 1 and record.counters["k-transpose"] == 1
    assert record.counters["where-mask"] == 0


def test_where_mask_on_the_scores_becomes_additive():
    rewritten, record = canonical(lambda: attention_model(AttentionSpec(mask="where-scores")))
    assert record.counters["where-mask"] == 1
    softmax = next(n for n in rewritten.graph.nodes if n.op == "Softmax")
    assert softmax.inputs[0].inputs[0].op == "Add"


@given(onnx_models(discontinuous=False))
def test_canonicalize_preserves_random_models(model):
    fuse(model, "canonicalize")


@pytest.mark.parametrize("scale", ["split-sqrt", "q-proj"])
def test_attention_scale_stays_when_a_tensor_it_would_change_is_a_graph_output(scale):
    """The ONNX Attention-23 expansions expose the raw Q·Kᵀ as an output (qk_matmul_output)."""
    proto = attention_model(AttentionSpec(scale=scale, mask="none"))
    weights = {tensor.name for tensor in proto.graph.initializer}
    matmul = next(node for node in proto.graph.node if node.op_type == "MatMul" and not weights & set(node.input))
    proto.graph.output.append(onnx.helper.make_tensor_value_info(matmul.output[0], TensorProto.FLOAT, [None] * 4))
    _, record = canonical(lambda: proto)
    assert record.counters["attention-scale"] == 0


def _gqa_flattened_k_transpose(kv_heads: int = 2, rep: int = 2, seq: int = 5, dim: int = 4) -> onnx.ModelProto:
    """The dynamo exporter's SDPA with GQA: repeat_kv's [B, Hkv, rep, L, D] flattened straight to
    [B*H, L, D] before K is transposed, then the scores, softmax and V product."""
    heads = kv_heads * rep
    g = Graph(18)
    q = g.input("q", [1, heads, seq, dim])
    k = g.input("k", [1, kv_heads, seq, dim])
    v = g.input("v", [1, kv_heads, seq, dim])

    def repeat(x, flat):
        expanded = g.op("Expand", g.unsqueeze(x, [2]), g.ints([1, kv_heads, rep, seq, dim]))
        return g.op("Reshape", expanded, g.ints([heads, seq, dim] if flat else [1, heads, seq, dim]))

    kt = g.op("Reshape", g.op("Transpose", repeat(k, True), perm=[0, 2, 1]), g.ints([1, heads, dim, seq]))
    scores = g.op("Mul", g.op("MatMul", q, kt), g.const(np.float32(dim ** -0.5)))
    g.output(g.op("MatMul", g.op("Softmax", scores, axis=-1), repeat(v, False)))
    return g.build()


def test_k_transpose_regroups_a_flattened_repeat_kv():
    rewritten, record = canonical(_gqa_flattened_k_transpose)
    assert record.counters["k-transpose"] == 1
    transpose = next(n for n in rewritten.graph.nodes if n.op == "Transpose")
    assert transpose.attrs["perm"] == [0, 1, 3, 2] and transpose.inputs[0].shape == [1, 4, 5, 4]


def test_gqa_behind_a_flattened_k_transpose_fuses_on_the_unrepeated_kv():
    rewritten, _ = fuse(_gqa_flattened_k_transpose())
    attention = next(n for n in rewritten.graph.nodes if n.op == "Attention")
    assert [t.name for t in attention.inputs[1:3]] == ["k", "v"]
    assert not [n.op for n in rewritten.graph.nodes if n.op in ("Expand", "Unsqueeze")]


def flattened_softmax(op_type="Softmax", flatten_axis=2, target="shape", opset=18, dims=(2, 3, 4)):
    """Shape(x) -> Flatten(x, axis) -> op(axis=-1) -> Reshape(., target): what onnx's version
    converter writes for a Softmax over the last axis of a tensor of unknown rank."""
    g = Graph(opset)
    x = g.op("Relu", g.input("x", list(dims)))
    shape = g.op("Shape", x) if target == "shape" else g.ints(list(dims))
    rows = g.op(op_type, g.op("Flatten", x, axis=flatten_axis), axis=-1)
    g.output(g.op("Reshape", rows, shape))
    model = g.build()
    model.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info(model.graph.output[0].name, TensorProto.FLOAT, list(dims)))
    return model


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("target", ["shape", "constant"])
def test_a_flattened_last_axis_softmax_becomes_one_softmax(op_type, target):
    model, record = fuse(flattened_softmax(op_type, target=target), "canonicalize,cleanup", tolerance=None)
    assert [n.op for n in model.graph.nodes] == ["Relu", op_type]
    assert model.graph.nodes[1].attrs["axis"] == -1


def test_a_softmax_flattened_before_the_last_axis_stays():
    """Flatten at axis 1 of a 3-D tensor normalises over the last two axes together: not one axis."""
    model, _ = fuse(flattened_softmax(flatten_axis=1), "canonicalize")
    assert [n.op for n in model.graph.nodes] == ["Relu", "Shape", "Flatten", "Softmax", "Reshape"]


@settings(max_examples=60)  # each example checks every Flatten axis of its rank
@given(st.lists(st.integers(1, 4), min_size=2, max_size=5), st.sampled_from(["Softmax", "LogSoftmax", "Hardmax"]),
       st.sampled_from(["shape", "constant"]), st.booleans(), st.sampled_from([11, 13, 18]))
def test_softmax_last_axis_on_any_rank_and_opset(dims, op_type, target, negative_axis, opset):
    """Fires exactly when the Flatten is at the last axis (written positive or negative); either
    way the outputs are unchanged, bit for bit."""
    for axis in range(1, len(dims)):
        written = axis - len(dims) if negative_axis else axis
        model, record = fuse(flattened_softmax(op_type, written, target, opset, tuple(dims)), "canonicalize", tolerance=EXACT)
        assert record.counters.get("softmax-last-axis", 0) == (1 if axis == len(dims) - 1 else 0)


def test_fuse_restores_a_division_no_fusion_used():
    """Found by the random-graph fuzzer (MAPC_FUZZ_SEED=1): Div(x, 1.4554425) became
    Mul(x, 1/1.4554425), and Sin of the ×1000 sample turned that extra rounding into an error of
    1e-4. ``fuse`` leaves the Div as written when no fusion reads the Mul."""
    def build():
        g = Graph(18)
        x = g.input("x", [2, 9], np.dtype(np.float32))
        quotient = g.op("Div", x, g.const(np.asarray(1.4554425, np.float32)))
        g.output(g.op("Sin", quotient), np.dtype(np.float32))
        return g.build()

    rewritten, record = fuse(build())
    assert [n.op for n in rewritten.graph.nodes] == ["Div", "Sin"] and not record.changed
    assert rewritten.graph.nodes[0].inputs[1].values == np.float32(1.4554425)


def megatron_attention(mask: str = "constant", form: str = "sub", seq: int = 5):
    """Megatron's scores * m - 10000 * (1 - m) over a causal 0/1 mask: a constant tril, a Cast of
    a bool input, or a float input (not provably 0/1)."""
    g = Graph(18)
    q, k, v = (g.input(name, [2, 2, seq, 4]) for name in ("q", "k", "v"))
    scores = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), g.const(np.asarray(0.5, np.float32)))
    if mask == "constant":
        m = g.const(np.tril(np.ones((seq, seq), np.float32)))
    elif mask == "bool":
        m = g.op("Cast", g.input("keep", [2, 1, seq, seq], np.dtype(bool)), to=TensorProto.FLOAT)
    else:
        m = g.input("m", [2, 1, seq, seq])
    inverted = g.op("Sub", g.const(np.asarray(1.0, np.float32)), m)
    kept = g.op("Mul", scores, m)
    if form == "sub":
        masked = g.op("Sub", kept, g.op("Mul", inverted, g.const(np.asarray(10000.0, np.float32))))
    else:
        masked = g.op("Add", kept, g.op("Mul", g.const(np.asarray(-10000.0, np.float32)), inverted))
    g.output(g.op("MatMul", g.op("Softmax", masked, axis=-1), v))
    return g.build()


@pytest.mark.parametrize("mask", ["constant", "bool"])
@pytest.mark.parametrize("form", ["sub", "add"])
def test_megatrons_multiplicative_mask_becomes_a_where(mask, form):
    feeds = None
    if mask == "bool":
        rng = np.random.default_rng(0)
        feeds = {name: (rng.standard_normal((2, 2, 5, 4)) * 3).astype(np.float32) for name in ("q", "k", "v")}
        feeds["keep"] = np.tril(np.ones((5, 5), bool))[None, None].repeat(2, axis=0)
        feeds["keep"][1, 0, :, 3:] = False  # padding on the second sample
    model, record = fuse(megatron_attention(mask, form), "canonicalize", feeds=feeds)
    assert record.counters["multiplicative-mask"] == 1
    where = next(n for n in model.graph.nodes if n.op == "Where")
    assert float(where.inputs[2].values) == -10000.0


def test_a_mask_not_provably_binary_is_a_near_miss():
    model, record = fuse(megatron_attention("input"), "canonicalize")
    assert record.counters["multiplicative-mask"] == 0
    assert [m["code"] for m in misses(record, "multiplicative-mask")] == ["mask-not-binary"]


def test_megatron_attention_compiles_with_its_attention_on_the_npu():
    """The whole pipeline: fold-constants first folds 10000 * (1 - m) into one constant."""
    result = mapc.compile(megatron_attention("constant"), target="npu", verify=True, partition={"cost_model": False})
    fuse_record = next(r for r in result.passes if r.name == "fuse")
    assert fuse_record.counters["multiplicative-mask"] == 1
    assert result.verification["ok"] and result.report["coverage"]["nodes_percent"] == 100.0


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 7), st.sampled_from(["sub", "add"]), st.sampled_from([1e-3, 1.0, 30.0]), st.integers(0, 1000))
def test_the_where_equals_the_multiplicative_mask_for_any_binary_mask(seq, form, scale, seed):
    rng = np.random.default_rng(seed)
    feeds = {name: (rng.standard_normal((2, 2, seq, 4)) * scale).astype(np.float32) for name in ("q", "k", "v")}
    feeds["keep"] = rng.random((2, 1, seq, seq)) < 0.7
    feeds["keep"][..., 0] = True  # every row keeps a key, as real masks do
    _, record = fuse(megatron_attention("bool", form, seq), "canonicalize", feeds=feeds)
    assert record.counters["multiplicative-mask"] == 1
