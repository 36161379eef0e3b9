"""attention: every exporter spelling of scaled dot-product attention -> Attention (or mapc.Attention)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from mapc.ir import load, run
from mapc.ir.compare import Tolerance
from mapc.ir.errors import CheckFailed
from mapc.passes import PassContext
from mapc.passes.pipeline import PassManager

from .common import domains, fuse, misses, ops
from .graphs import AttentionSpec, Graph, attention_model

EXPORTER_VARIANTS = {
    "ts-eager": AttentionSpec(k_style="ts", scale="scores-mul", mask="where"),
    "ts-sdpa": AttentionSpec(k_style="ts", scale="split-sqrt", mask="where", fill="-inf", guard=True),
    "dynamo-eager": AttentionSpec(k_style="bhsd", scale="scores-mul", mask="where"),
    "dynamo-sdpa": AttentionSpec(k_style="sandwich", scale="split-sqrt", mask="where", guard=True, symbolic=True),
    "whisper-q-scaled": AttentionSpec(scale="q-proj", mask="none"),
    "llama-gqa": AttentionSpec(heads=4, kv_heads=2, mask="where", symbolic=True),
    "mqa": AttentionSpec(heads=4, kv_heads=1, mask="input"),
    "cross": AttentionSpec(kv_seq=7, mask="none"),
    "div-scale": AttentionSpec(scale="scores-div"),
    "unscaled": AttentionSpec(scale="none"),
    "where-on-scores": AttentionSpec(mask="where-scores"),
    "padding-mask": AttentionSpec(mask="padding"),
    "softmax-in-double": AttentionSpec(softmax_cast=True),
}


def fused_attention(model):
    return [n for n in model.graph.nodes if n.op == "Attention"]


@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("variant", sorted(EXPORTER_VARIANTS))
def test_exporter_variants_fuse(variant, opset):
    spec = replace(EXPORTER_VARIANTS[variant], opset=opset)
    model, record = fuse(attention_model(spec), dims={"batch": 2, "seq": 5, "kv_seq": 7})
    (node,) = fused_attention(model)
    assert (node.domain or "") == ("" if opset >= 23 else "mapc")
    assert ops(model)["Softmax"] == 0 and record.counters["attention"] == 1
    assert misses(record, "attention") == []
    scale = 1.0 / math.sqrt(spec.head_dim) if spec.scale != "none" else 1.0
    assert node.attrs["scale"] == pytest.approx(scale, rel=1e-6)


@pytest.mark.parametrize("opset", [18, 23])
def test_fp16_attention_with_a_float_softmax_sets_softmax_precision(opset):
    g = Graph(opset)
    q, k, v = (g.input(n, [1, 2, 3, 4], np.dtype(np.float16)) for n in "qkv")
    scores = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), g.const(np.float16(0.5)))
    weights = g.op("Cast", g.op("Softmax", g.op("Cast", scores, to=TensorProto.FLOAT), axis=-1), to=TensorProto.FLOAT16)
    g.output(g.op("MatMul", weights, v), np.dtype(np.float16))
    model, _ = fuse(g.build(), tolerance=Tolerance(rtol=1e-2, atol=1e-3))
    (node,) = fused_attention(model)
    assert node.attrs == {"scale": 0.5, "softmax_precision": TensorProto.FLOAT}


def test_gqa_folds_the_repeat_into_kv_heads():
    model, _ = fuse(attention_model(AttentionSpec(heads=4, kv_heads=2, opset=23)))
    (node,) = fused_attention(model)
    assert node.inputs[1].shape[1] == 2 and node.inputs[2].shape[1] == 2
    assert ops(model)["Expand"] == 0


def test_function_body_is_the_decomposition():
    model, record = fuse(attention_model(AttentionSpec(heads=4, kv_heads=2, guard=True, mask="where")))
    (function,) = [f for f in model.functions if f.name == "Attention"]
    body_ops = [n.op_type for n in function.node]
    assert {"MatMul", "Softmax", "IsNaN", "Expand", "Transpose"} <= set(body_ops)
    assert record.details["functions"] == ["Attention"]


def test_masked_and_unmasked_attention_in_one_model_use_two_overloads():
    g = Graph(18)
    q = g.input("q", [1, 2, 3, 4])
    k = g.input("k", [1, 2, 3, 4])
    v = g.input("v", [1, 2, 3, 4])
    m = g.input("m", [1, 1, 3, 3])

    def attention(masked: bool) -> str:
        scores = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), g.const(np.float32(0.5)))
        if masked:
            scores = g.op("Add", scores, m)
        return g.op("MatMul", g.op("Softmax", scores, axis=-1), v)

    g.output(g.op("Add", attention(True), attention(False)))
    model, _ = fuse(g.build())
    functions = sorted((f.name, bool(f.overload)) for f in model.functions)
    assert functions == [("Attention", False), ("Attention", True)]
    assert model.ir_version >= 10


def test_mask_broadcasting_in_the_query_axis_is_expanded_for_onnxruntime():
    model, _ = fuse(attention_model(AttentionSpec(mask="padding", opset=23, symbolic=True)), dims={"batch": 2, "seq": 5})
    (node,) = fused_attention(model)
    assert node.inputs[3].inputs[0].op == "Expand"


def test_lowest_fill_keeps_fully_masked_rows_averaged_in_onnxruntime():
    """onnxruntime's Attention reads exactly float-lowest as -inf; the rewrite halves it."""
    proto = attention_model(AttentionSpec(mask="where", opset=23))
    reference = load(proto)
    keep = np.ones((2, 1, 5, 5), dtype=bool)
    keep[0, 0, 1, :] = False  # query 1 of batch 0 sees nothing
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 5, 32)).astype(np.float32), "keep": keep}
    expected = run(reference, feeds)
    PassManager("fuse").run(reference, PassContext())
    actual = run(reference, feeds)
    assert len(fused_attention(reference)) == 1
    np.testing.assert_allclose(list(actual.values())[0], list(expected.values())[0], rtol=1e-4, atol=1e-5)


def test_unprovable_head_count_is_a_near_miss_with_a_fix():
    g = Graph(18)
    x = g.input("x", ["batch", "seq", 32])

    def split_heads(t: str) -> str:  # TorchScript's view(b, s, -1, d): dims read at run time
        shape = g.op("Shape", t)
        dims = [g.unsqueeze(g.op("Gather", shape, g.const(np.int64(axis)), axis=0), [0]) for axis in (0, 1)]
        return g.op("Reshape", t, g.op("Concat", *dims, g.ints([-1]), g.ints([8]), axis=0))

    q = g.op("Transpose", split_heads(x), perm=[0, 2, 1, 3])
    k = g.op("Transpose", split_heads(g.op("Relu", x)), perm=[0, 2, 3, 1])
    scores = g.op("Mul", g.op("MatMul", q, k), g.const(np.float32(0.25)))
    g.output(g.op("MatMul", g.op("Softmax", scores, axis=-1), q))
    model, record = fuse(g.build())
    (miss,) = misses(record, "attention")
    assert miss["code"] in ("heads-unproven", "batch-unproven") and "fix-shapes" in miss["fix"]
    assert ops(model)["Softmax"] == 1


def test_scale_after_the_mask_is_a_structural_near_miss():
    g = Graph(18)
    q, k, v = (g.input(n, [1, 2, 3, 4]) for n in "qkv")
    masked = g.op("Add", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), g.input("m", [1, 1, 3, 3]))
    scores = g.op("Mul", masked, g.const(np.float32(0.5)))
    g.output(g.op("MatMul", g.op("Softmax", scores, axis=-1), v))
    _, record = fuse(g.build())
    (miss,) = misses(record, "attention")
    assert miss["code"] == "structure"


def test_attention_weights_read_elsewhere_are_a_near_miss():
    g = Graph(18)
    q, k, v = (g.input(n, [1, 2, 3, 4]) for n in "qkv")
    weights = g.op("Softmax", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), axis=-1)
    g.output(g.op("MatMul", weights, v))
    g.output(weights)
    model, record = fuse(g.build())
    assert [m["code"] for m in misses(record, "attention")] == ["shared-intermediate"]
    assert ops(model)["Softmax"] == 1


def test_strict_fusion_turns_a_near_miss_into_an_error():
    g = Graph(18)
    q, k, v = (g.input(n, [1, 2, 3, 4]) for n in "qkv")
    weights = g.op("Softmax", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), axis=-1)
    g.output(g.op("MatMul", weights, v))
    g.output(weights)
    with pytest.raises(CheckFailed, match="shared-intermediate"):
        PassManager("fuse{strict=true}").run(load(g.build()), PassContext())


def test_functions_disabled_below_opset_23_is_a_near_miss():
    _, record = fuse(attention_model(AttentionSpec()), [("fuse", {"functions": False})])
    assert [m["code"] for m in misses(record, "attention")] == ["opset"]
    assert "--target-opset 23" in misses(record, "attention")[0]["fix"]


@settings(max_examples=40)
@given(
    spec=st.builds(
        AttentionSpec,
        batch=st.integers(1, 2),
        seq=st.integers(1, 6),
        kv_seq=st.one_of(st.none(), st.integers(1, 6)),
        heads=st.sampled_from([2, 4]),
        kv_heads=st.sampled_from([None, 1, 2]),
        head_dim=st.sampled_from([4, 8]),
        symbolic=st.booleans(),
        scale=st.sampled_from(["scores-mul", "scores-div", "split-sqrt", "q-proj", "none"]),
        scale_value=st.one_of(st.none(), st.floats(0.05, 2.0)),
        k_style=st.sampled_from(["bhsd", "ts", "sandwich"]),
        mask=st.sampled_from(["none", "input", "where", "where-scores", "padding"]),
        fill=st.sampled_from(["lowest", "-inf"]),
        guard=st.booleans(),
        swap_operands=st.booleans(),
        opset=st.sampled_from([18, 23]),
    )
)
def test_attention_variants_fuse_and_agree(spec):
    """-inf fills come with SDPA's NaN guard: without it a fully masked row is NaN originally and
    zeros fused (the op's specified behaviour; see docs/passes/fusion.md)."""
    if spec.mask == "where-scores" and spec.kv_seq:
        spec = replace(spec, kv_seq=None)
    if spec.fill == "-inf":
        spec = replace(spec, guard=True)
    model, record = fuse(attention_model(spec), dims={"batch": spec.batch, "seq": spec.seq, "kv_seq": spec.length})
    assert len(fused_attention(model)) == 1, misses(record)
    assert domains(model)[("" if spec.opset >= 23 else "mapc", "Attention")] == 1


def _attention23_on_repeated_kv(kv_heads: int = 2, rep: int = 2, seq: int = 5, dim: int = 4):
    """The dynamo exporter's opset-23 GQA: Attention(Q, repeat_kv(K), repeat_kv(V), mask)."""
    from onnx import helper

    heads = kv_heads * rep
    g = Graph(23)
    q = g.input("q", [1, heads, seq, dim])
    k = g.input("k", [1, kv_heads, seq, dim])
    v = g.input("v", [1, kv_heads, seq, dim])
    mask = g.input("mask", [1, 1, seq, seq])

    def repeat(x):
        expanded = g.op("Expand", g.unsqueeze(x, [2]), g.ints([1, kv_heads, rep, seq, dim]))
        return g.op("Reshape", expanded, g.ints([1, heads, seq, dim]))

    g.nodes.append(helper.make_node("Attention", [q, repeat(k), repeat(v), mask], ["y"], scale=dim ** -0.5))
    g.outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    return g.build()


def test_attention23_reads_the_unrepeated_kv():
    model, record = fuse(_attention23_on_repeated_kv())
    attention = next(n for n in model.graph.nodes if n.op == "Attention")
    assert [t.name for t in attention.inputs[:3]] == ["q", "k", "v"]
    assert not [n.op for n in model.graph.nodes if n.op in ("Expand", "Unsqueeze", "Reshape")]
    assert record.counters["attention-unrepeat-kv"] == 1


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.sampled_from([2, 4, 8]))
def test_attention23_on_any_repeat_reads_the_unrepeated_kv(kv_heads, rep, seq, dim):
    """Any GQA geometry: the same outputs (the differential check in ``fuse``) on the unrepeated K/V."""
    model, record = fuse(_attention23_on_repeated_kv(kv_heads=kv_heads, rep=rep, seq=seq, dim=dim))
    attention = next(n for n in model.graph.nodes if n.op == "Attention")
    assert [t.name for t in attention.inputs[1:3]] == ["k", "v"] and record.counters["attention-unrepeat-kv"] == 1
