"""decompose-attention against onnxruntime 1.31's own Attention kernel.

Random ONNX Attention nodes (opset 23): 3-D and 4-D inputs, GQA and MQA, past_key/past_value,
bool and float masks (shorter than the keys too), is_causal with query length below, equal
to and above the key length, explicit and default scale, softcap, softmax_precision. Outputs
(Y, present_key, present_value) must match onnxruntime outside fully masked query rows, where
the spec returns zeros and the decomposition a softmax over NEG-shifted scores.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from mapc.ir import load, seeded_inputs
from mapc.ir.compare import Tolerance
from mapc.passes import SAMPLES, PassContext
from mapc.passes.pipeline import PassManager
from mapc.testing import assert_pass_preserves

from .cases import TRANSFORMERS

TOLERANCE = Tolerance(rtol=1e-4, atol=1e-5)


@st.composite
def attention_nodes(draw):
    batch = draw(st.integers(1, 2))
    kv_heads = draw(st.sampled_from([1, 2]))
    q_heads = kv_heads * draw(st.sampled_from([1, 2, 3]))
    head = draw(st.sampled_from([2, 4]))
    queries = draw(st.integers(1, 4))
    new_keys = draw(st.integers(1, 5))
    past = draw(st.sampled_from([0, 0, 2, 3]))
    causal = draw(st.booleans())
    if causal and past:
        # With a cache and more new keys than queries onnxruntime 1.31 CPU itself is inconsistent
        # (offset past+new-queries when there is one query, past otherwise); the spec says past.
        # Decoders always have as many new keys as queries, where every reading agrees.
        new_keys = queries
    keys = past + new_keys
    rank = draw(st.sampled_from([3, 4]))
    mask_kind = draw(st.sampled_from(["none", "bool", "float"]))
    attrs = {"is_causal": int(causal)}
    if draw(st.booleans()):
        attrs["scale"] = draw(st.sampled_from([0.1, 0.5, 1.0]))
    if draw(st.integers(0, 3)) == 0:
        attrs["softcap"] = draw(st.sampled_from([2.0, 5.0]))
    if draw(st.integers(0, 3)) == 0:
        attrs["softmax_precision"] = TensorProto.FLOAT
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def tensor(shape):
        return (rng.standard_normal(shape) * 1.5).astype(np.float32)

    if rank == 4:
        shapes = {"q": [batch, q_heads, queries, head], "k": [batch, kv_heads, new_keys, head], "v": [batch, kv_heads, new_keys, head]}
    else:
        attrs.update(q_num_heads=q_heads, kv_num_heads=kv_heads)
        shapes = {"q": [batch, queries, q_heads * head], "k": [batch, new_keys, kv_heads * head], "v": [batch, new_keys, kv_heads * head]}
    feeds = {name: tensor(shape) for name, shape in shapes.items()}
    inputs = ["q", "k", "v", "", "", ""]
    infos = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in shapes.items()]
    mask_keys = keys
    keep = np.ones((batch, 1, queries, keys), bool)
    if mask_kind != "none":
        shape = [batch, 1, queries, mask_keys]
        allowed = rng.random(shape) < 0.75
        if mask_kind == "float":
            feeds["mask"] = np.where(allowed, rng.standard_normal(shape) * 0.5, -np.inf).astype(np.float32)
        else:
            feeds["mask"] = allowed
        keep[..., :mask_keys] &= allowed
        keep[..., mask_keys:] = False
        inputs[3] = "mask"
        infos.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT if mask_kind == "float" else TensorProto.BOOL, shape))
    if causal:
        keep &= np.arange(keys)[None, :] <= np.arange(queries)[:, None] + past
    outputs = ["y"]
    if past:
        inputs[4:6] = ["past_key", "past_value"]
        for name in ("past_key", "past_value"):
            feeds[name] = tensor([batch, kv_heads, past, head])
            infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, kv_heads, past, head]))
        outputs += ["present_key", "present_value"]
    while inputs and not inputs[-1]:
        inputs.pop()
    node = helper.make_node("Attention", inputs, outputs, **attrs)
    out_shapes = {"y": [batch, q_heads, queries, head] if rank == 4 else [batch, queries, q_heads * head],
                  "present_key": [batch, kv_heads, keys, head], "present_value": [batch, kv_heads, keys, head]}
    graph = helper.make_graph([node], "attention", infos, [helper.make_tensor_value_info(o, TensorProto.FLOAT, out_shapes[o]) for o in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)
    full = ~keep.any(axis=-1)  # [B, 1, S]
    ignore = {"y": full[:, 0, :, None] if rank == 3 else np.broadcast_to(full[..., None], (batch, q_heads, queries, 1))}
    return model, feeds, ignore


@settings(max_examples=120)
@given(attention_nodes())
def test_decomposition_matches_onnxruntime_attention(case):
    model, feeds, ignore = case
    rewritten, _ = assert_pass_preserves(model, "decompose-attention", feeds=feeds, ignore=ignore, tolerance=TOLERANCE, samples=[feeds])
    assert "Attention" not in {node.op for node in rewritten.graph.nodes}


@settings(max_examples=40)
@given(attention_nodes())
def test_decomposition_then_mask_pass_stays_equal(case):
    model, feeds, ignore = case
    assert_pass_preserves(model, "decompose-attention,attention-mask", feeds=feeds, ignore=ignore, tolerance=TOLERANCE, samples=[feeds])


@pytest.mark.parametrize("name", ["bert-dynamo23-sdpa", "gpt2-dynamo23-sdpa", "llama-dynamo23-sdpa", "vit-dynamo23-sdpa"])
def test_dynamo_opset23_exports_decompose_exactly(name):
    data = np.load(TRANSFORMERS / f"{name}.npz")
    feeds = {k[len("input:"):]: data[k] for k in data.files if k.startswith("input:")}
    model = load(TRANSFORMERS / f"{name}.onnx")
    assert_pass_preserves(model.to_proto(), "attention-mask,decompose-attention", feeds=feeds, tolerance=TOLERANCE, samples=[feeds])


def test_is_causal_with_fewer_queries_than_keys_warns_and_uses_the_spec_alignment():
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Attention", ["q", "k", "v"], ["y"], is_causal=1)], "g",
            [helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 2, 2, 4]),
             helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 2, 5, 4]),
             helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 2, 5, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 4])]),
        opset_imports=[helper.make_opsetid("", 23)], ir_version=10)
    unit = seeded_inputs(load(model))
    rewritten, records = assert_pass_preserves(model, "decompose-attention", tolerance=TOLERANCE, feeds=unit, samples=[unit])
    notes = [n for n in records[0].notes if n.code == "decompose-attention.causal-alignment"]
    assert notes and notes[0].severity == "warning"
    constant = next(t for t in rewritten.graph.tensors().values() if t.name.startswith("attention_causal_mask"))
    assert (constant.values == np.where(np.arange(5)[None] <= np.arange(2)[:, None], 0, -1e4)).all()


@pytest.mark.parametrize("dtype", [TensorProto.BOOL, TensorProto.FLOAT])
def test_a_mask_shorter_than_the_keys_is_padded_as_the_spec_says(dtype):
    """onnxruntime 1.31 rejects such masks; onnx's reference implementation pads them with
    False / -inf, and the decomposition pads with NEG."""
    from onnx.reference import ReferenceEvaluator

    from mapc.ir import run

    rng = np.random.default_rng(3)
    shapes = {"q": [1, 2, 3, 4], "k": [1, 2, 5, 4], "v": [1, 2, 5, 4], "mask": [1, 1, 3, 3]}
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items() if n != "mask"}
    allowed = np.array([[[[True, False, True], [True, True, False], [False, True, True]]]])
    feeds["mask"] = allowed if dtype == TensorProto.BOOL else np.where(allowed, 0.25, -np.inf).astype(np.float32)
    infos = [helper.make_tensor_value_info(n, dtype if n == "mask" else TensorProto.FLOAT, s) for n, s in shapes.items()]
    model = helper.make_model(
        helper.make_graph([helper.make_node("Attention", ["q", "k", "v", "mask"], ["y"])], "g", infos,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 4])]),
        opset_imports=[helper.make_opsetid("", 23)], ir_version=10)
    expected = ReferenceEvaluator(model).run(None, feeds)[0]
    decomposed = load(model)
    ctx = PassContext()
    ctx.facts[SAMPLES] = [feeds]
    PassManager("decompose-attention").run(decomposed, ctx)
    np.testing.assert_allclose(run(decomposed, feeds)["y"], expected, rtol=1e-4, atol=1e-5)


def test_unknown_head_count_is_a_note_not_a_crash():
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Attention", ["q", "k", "v"], ["y"])], "g",
            [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["b", "h", "s", 4]),
             helper.make_tensor_value_info("k", TensorProto.FLOAT, ["b", "h", "t", 4]),
             helper.make_tensor_value_info("v", TensorProto.FLOAT, ["b", "h", "t", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "h", "s", 4])]),
        opset_imports=[helper.make_opsetid("", 23)], ir_version=10)
    loaded = load(model)
    record = PassManager("decompose-attention").run(loaded)[0]
    assert not record.changed and record.notes[0].code == "decompose-attention.skipped"
