"""Targeted tests of the attention-mask rules: one hit and one near-miss each."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import load, run, seeded_inputs
from mapc.passes import SAMPLES, PassContext
from mapc.ir.errors import UsageError
from mapc.passes.pipeline import PassManager, build_pipeline, with_pass_options
from mapc.testing import assert_pass_preserves
from tests.conftest import make_model

FMIN = float(np.finfo(np.float32).min)
B, H, S, D = 2, 2, 4, 4


def _attention(mask_nodes, mask_output, extra_inputs=(), initializers=(), outputs=("out",), extra_nodes=(), opset=18):
    """q, k, v [B,H,S,D] -> Softmax(q k^T + mask) v, with the given mask subgraph."""
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        *mask_nodes,
        helper.make_node("Add", ["scores", mask_output], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["out"]),
        *extra_nodes,
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, H, S, D]) for n in ("q", "k", "v")] + list(extra_inputs)
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    for out in outs:
        out.type.tensor_type.shape.SetInParent()
    return make_model(nodes, inputs, outs, initializers, opset=opset)


def _padding_input():
    return helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [B, S])


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((B, H, S, D)).astype(np.float32) for n in ("q", "k", "v")}
    if any(i.name == "attention_mask" for i in model.graph.input):
        feeds["attention_mask"] = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int64)
    return feeds


def _m1(fill_name="fill"):
    return [
        helper.make_node("Unsqueeze", ["attention_mask", "axes"], ["m4d"]),
        helper.make_node("Cast", ["m4d"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "mf"], ["inv"]),
        helper.make_node("Mul", ["inv", fill_name], ["additive"]),
    ]


def _m1_inits(fill=FMIN):
    return [numpy_helper.from_array(np.array([1, 2], np.int64), "axes"), numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(fill, np.float32), "fill")]


def _unit(model) -> dict[str, np.ndarray]:
    """Unit-scale inputs: compared on, and given as the user's samples the pass measures the scores on."""
    proto = model if isinstance(model, onnx.ModelProto) else model.to_proto()
    return seeded_inputs(load(proto))


def _run_pass(model, pipeline="attention-mask"):
    """Run ``pipeline`` with ``_feeds(model)`` as the user's samples."""
    loaded = load(model)
    ctx = PassContext()
    ctx.facts[SAMPLES] = [_feeds(model)]
    record = PassManager(pipeline).run(loaded, ctx)[0]
    return loaded, record


def _constant(model, name):
    return next(t for t in model.graph.tensors().values() if t.name == name)


def test_r1_replaces_a_fill_on_the_mask_path():
    model = _attention(_m1(), "additive", [_padding_input()], _m1_inits())
    rewritten, records = assert_pass_preserves(model, "attention-mask", feeds=_feeds(model), samples=[_feeds(model)])
    fills = [t.values for t in rewritten.graph.tensors().values() if hasattr(t, "values") and t.values.dtype == np.float32 and t.values.size == 1]
    assert np.float32(-1e4) in [float(v) for v in fills] and FMIN not in [float(v) for v in fills]
    assert records[0].details["attentions"][0]["rewrites"] == ["finite-fill"]


def test_r1_gives_mask_readers_a_copy_when_the_fill_is_shared():
    """The fill also feeds a graph output: that reader keeps finfo.min, the mask gets NEG."""
    extra = [helper.make_node("Mul", ["fill", "one"], ["fill_out"])]
    model = _attention(_m1(), "additive", [_padding_input()], _m1_inits(), outputs=("out", "fill_out"), extra_nodes=extra)
    rewritten, records = assert_pass_preserves(model, "attention-mask", feeds=_feeds(model), samples=[_feeds(model)])
    assert float(run(rewritten, _feeds(model))["fill_out"]) == FMIN
    assert records[0].counters["fills_replaced"] == 1
    assert not records[0].notes


def test_r1_leaves_a_fill_whose_mask_path_also_leaves_the_mask():
    """The one-minus-mask product itself is a graph output: no rewrite may change it, so a note says why."""
    model = _attention(_m1(), "additive", [_padding_input()], _m1_inits(), outputs=("out", "additive"))
    rewritten, records = assert_pass_preserves(model, "attention-mask", feeds=_feeds(model), samples=[_feeds(model)])
    codes = [n.code for n in records[0].notes]
    assert "attention-mask.fill-kept" in codes
    assert records[0].counters["fills_replaced"] == 0


def test_r1_leaves_a_bias_table_with_many_values_alone():
    bias = (-np.abs(np.arange(S)[None, :] - np.arange(S)[:, None]) * 40.0).astype(np.float32)[None, None]
    nodes = [*_m1(), helper.make_node("Add", ["bias", "additive"], ["mask"])]
    model = _attention(nodes, "mask", [_padding_input()], [*_m1_inits(), numpy_helper.from_array(bias, "bias")])
    rewritten, record = _run_pass(model, "attention-mask{precision=int8}")
    np.testing.assert_array_equal(_constant(rewritten, "bias").values, bias)  # -120 < NEG=-20, yet not a fill
    assert record.counters["fills_replaced"] == 1


def test_r2_where_on_scores_becomes_an_additive_mask():
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Where", ["keep", "scores", "fill"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["out"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, H, S, D]) for n in ("q", "k", "v")]
    inputs.append(helper.make_tensor_value_info("keep", TensorProto.BOOL, [B, 1, S, S]))
    model = make_model(nodes, inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, H, S, D])],
                       [numpy_helper.from_array(np.array(FMIN, np.float32), "fill")])
    feeds = {**_feeds(model), "keep": np.tril(np.ones((S, S), bool))[None, None].repeat(B, 0)}
    rewritten, records = assert_pass_preserves(model, "attention-mask", feeds=feeds, samples=[feeds])
    ops = [n.op for n in rewritten.graph.nodes]
    assert "Where" not in ops and ops.count("Add") == 1
    assert records[0].details["attentions"][0]["rewrites"] == ["bool-to-additive"]


def test_r4_removes_an_all_zero_mask_but_not_a_real_one():
    zeros = [numpy_helper.from_array(np.zeros((1, 1, S, S), np.float32), "zeros")]
    model = _attention([], "zeros", initializers=zeros)
    rewritten, records = assert_pass_preserves(model, "attention-mask", feeds=_unit(model), samples=[_unit(model)])
    assert [n.op for n in rewritten.graph.nodes].count("Add") == 0
    real = [numpy_helper.from_array(np.triu(np.full((S, S), FMIN, np.float32), 1)[None, None], "causal")]
    causal = _attention([], "causal", initializers=real)
    rewritten, _ = assert_pass_preserves(causal, "attention-mask", feeds=_unit(causal), samples=[_unit(causal)])
    assert [n.op for n in rewritten.graph.nodes].count("Add") == 1
    assert _constant(rewritten, next(t.name for t in rewritten.graph.tensors().values() if t.name.startswith("attention_mask_fill"))).values.min() == -1e4


def test_r4_drops_an_all_true_attention_mask_input():
    nodes = [helper.make_node("Expand", ["ones", "shape"], ["mask"]), helper.make_node("Attention", ["q", "k", "v", "mask"], ["out"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, H, S, D]) for n in ("q", "k", "v")]
    inits = [numpy_helper.from_array(np.ones((1, 1, S, 1), bool), "ones"), numpy_helper.from_array(np.array([B, 1, S, S], np.int64), "shape")]
    model = make_model(nodes, inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, H, S, D])], inits, opset=23)
    rewritten, records = assert_pass_preserves(model, "attention-mask", feeds=_unit(model), samples=[_unit(model)])
    attention = next(n for n in rewritten.graph.nodes if n.op == "Attention")
    assert len(attention.inputs) == 3
    assert records[0].details["attentions"][0]["families"] == ["bool-attention-mask", "constant-mask"]


def test_r5_splits_a_constant_causal_part_and_respects_the_size_limit():
    causal = np.tril(np.ones((S, S), bool))[None, None]
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["pad_bool"], to=TensorProto.BOOL),
        helper.make_node("Unsqueeze", ["pad_bool", "axes"], ["pad"]),
        helper.make_node("And", ["causal", "pad"], ["keep"]),
        helper.make_node("Where", ["keep", "zero", "fill"], ["mask"]),
    ]
    inits = [numpy_helper.from_array(causal, "causal"), numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"), numpy_helper.from_array(np.array(FMIN, np.float32), "fill")]
    model = _attention(nodes, "mask", [_padding_input()], inits)
    rewritten, records = assert_pass_preserves(model, "attention-mask", feeds=_feeds(model), samples=[_feeds(model)])
    assert records[0].counters["causal_parts_split"] == 1
    folded = [t for t in rewritten.graph.tensors().values() if t.name.startswith("attention_mask_constant")]
    assert folded and set(np.unique(folded[0].values)) == {0.0, -1e4}
    assert "And" not in [n.op for n in rewritten.graph.nodes]
    small = f"attention-mask{{max_constant_mb={S * S * 4 / 2**20 / 2}}}"
    rewritten, records = assert_pass_preserves(model, small, feeds=_feeds(model), samples=[_feeds(model)])
    assert records[0].counters.get("causal_parts_split", 0) == 0
    assert records[0].counters["constants_too_large_kept_computed"] >= 1


def test_r3_guard_is_kept_when_the_mask_stays_non_finite():
    """The masked scores' mask is also a graph output, so its -inf fill must stay."""
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Mul", ["raw", "one"], ["mask"]),
        helper.make_node("Add", ["scores", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("IsNaN", ["p"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "p"], ["safe"]),
        helper.make_node("MatMul", ["safe", "v"], ["out"]),
        helper.make_node("Identity", ["mask"], ["raw_out"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, H, S, D]) for n in ("q", "k", "v")]
    raw = np.triu(np.full((S, S), -np.inf, np.float32), 1)[None, None]
    model = make_model(nodes, inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, H, S, D]), helper.make_tensor_value_info("raw_out", TensorProto.FLOAT, [1, 1, S, S])],
                       [numpy_helper.from_array(raw, "raw"), numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                        numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    rewritten, records = assert_pass_preserves(model, "attention-mask", feeds=_unit(model), samples=[_unit(model)])
    assert "IsNaN" in [n.op for n in rewritten.graph.nodes]
    assert {"attention-mask.fill-kept", "attention-mask.guard-kept"} <= {n.code for n in records[0].notes}


def test_a_softmax_that_is_not_attention_is_left_alone():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"]), helper.make_node("Add", ["logits", "bias"], ["b"]), helper.make_node("Softmax", ["b"], ["y"], axis=-1)]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                       [numpy_helper.from_array(np.ones((4, 3), np.float32), "w"), numpy_helper.from_array(np.full(3, FMIN, np.float32), "bias")])
    rewritten, records = assert_pass_preserves(model, "attention-mask", feeds=_unit(model), samples=[_unit(model)])
    assert not records[0].changed and records[0].details["attentions"] == []


def test_an_unfamiliar_mask_is_a_note_naming_the_attention():
    nodes = [helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT), helper.make_node("Unsqueeze", ["mf", "axes"], ["m4"]),
             helper.make_node("Log", ["m4"], ["mask"])]
    model = _attention(nodes, "mask", [_padding_input()], [numpy_helper.from_array(np.array([1, 2], np.int64), "axes")])
    _, record = _run_pass(model)
    notes = [n for n in record.notes if n.code == "attention-mask.unrecognised"]
    assert notes and notes[0].node == "" or notes[0].node.endswith("Softmax") or notes[0].node


@pytest.mark.parametrize("options", ["{mask_value=5}", "{mask_value=inf}", "{precision=int4}", "{mask_value=-1e5}"])
def test_bad_options_are_usage_errors(options):
    model = _attention(_m1(), "additive", [_padding_input()], _m1_inits())
    with pytest.raises(UsageError):
        PassManager(f"attention-mask{options}").run(load(model))


def test_pass_options_override_the_pipeline_and_name_missing_passes():
    steps = with_pass_options(build_pipeline("cleanup,fixpoint(attention-mask{mask_value=-20})"), {"attention-mask": {"mask_value": -50}})
    assert steps[1].steps[0].options.mask_value == -50
    with pytest.raises(UsageError, match="decompose-attention"):
        with_pass_options(build_pipeline("cleanup"), {"decompose-attention": {"mask_value": -50}})


def _fused_attention_with_mask(mask: np.ndarray) -> onnx.ModelProto:
    """fuse's output below opset 23: a mapc::Attention function call whose mask is ``mask``."""
    from tests.passes.fusion.graphs import AttentionSpec, attention_model

    proto = attention_model(AttentionSpec(mask="input", opset=18))
    mask_input = next(value for value in proto.graph.input if value.name != "x")
    proto.graph.input.remove(mask_input)
    proto.graph.initializer.append(numpy_helper.from_array(mask.astype(np.float32), mask_input.name))
    return proto


@pytest.mark.parametrize("masked", [False, True])
def test_fused_mapc_attention_functions_are_attentions_too(masked):
    """Below opset 23, fuse writes Attention as mapc::Attention; its mask is rewritten the same
    way, and a trivial one is removed without breaking the function's body."""
    mask = np.zeros((2, 4, 5, 5))
    if masked:
        mask[:, :, :, -2:] = np.finfo(np.float32).min
    fused = _fused_attention_with_mask(mask)
    model, records = assert_pass_preserves(fused, "fuse,attention-mask", feeds=_unit(fused), samples=[_unit(fused)])
    attention = next(node for node in model.graph.nodes if node.op == "Attention")
    assert attention.domain == "mapc"
    outcome = records[-1].details["attentions"][0]
    assert outcome["kind"] == "attention-op"
    if masked:
        assert "finite-fill" in outcome["rewrites"]
    else:
        assert "trivial-mask-removed" in outcome["rewrites"]
        assert attention.inputs[3].shape == () and not np.any(attention.inputs[3].values)
