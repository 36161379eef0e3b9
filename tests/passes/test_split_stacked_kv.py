"""split-stacked-kv: legacy GPT-2's stacked [2, B, H, S, D] cache as separate rank-4 keys and values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc import compile
from mapc.cli import main
from mapc.ir import load
from mapc.testing import assert_pass_preserves
from tests.conftest import make_model

HEADS, HEAD_DIM = 2, 4


def _axes(name: str, opset: int, inputs: list[str], nodes: list, initializers: list) -> tuple[list[str], dict]:
    """Inputs and attributes of a Squeeze/Unsqueeze of axis 0 at ``opset``."""
    if opset >= 13:
        initializers.append(numpy_helper.from_array(np.array([0], np.int64), f"{name}_axes"))
        return [*inputs, f"{name}_axes"], {}
    return inputs, {"axes": [0]}


def _take_halves(form: str, opset: int, nodes: list, initializers: list) -> tuple[str, str]:
    """Nodes reading the key and value halves of input ``past`` the way ``form`` exports do."""
    if form == "gather":
        initializers += [numpy_helper.from_array(np.array(0, np.int64), "i0"), numpy_helper.from_array(np.array(1, np.int64), "i1")]
        nodes += [helper.make_node("Gather", ["past", "i0"], ["pk"], axis=0), helper.make_node("Gather", ["past", "i1"], ["pv"], axis=0)]
        return "pk", "pv"
    if form == "split":
        if opset >= 13:
            initializers.append(numpy_helper.from_array(np.array([1, 1], np.int64), "sizes"))
            nodes.append(helper.make_node("Split", ["past", "sizes"], ["k5", "v5"], axis=0))
        else:
            nodes.append(helper.make_node("Split", ["past"], ["k5", "v5"], axis=0, split=[1, 1]))
    else:  # slice
        for half, (start, end) in (("k5", (0, 1)), ("v5", (1, 2 ** 31))):
            initializers += [numpy_helper.from_array(np.array([start], np.int64), f"{half}_s"),
                             numpy_helper.from_array(np.array([end], np.int64), f"{half}_e"),
                             numpy_helper.from_array(np.array([0], np.int64), f"{half}_a")]
            nodes.append(helper.make_node("Slice", ["past", f"{half}_s", f"{half}_e", f"{half}_a"], [half]))
    for half, out in (("k5", "pk"), ("v5", "pv")):
        inputs, attrs = _axes(f"sq_{half}", opset, [half], nodes, initializers)
        nodes.append(helper.make_node("Squeeze", inputs, [out], **attrs))
    return "pk", "pv"


def legacy_attention(form: str = "gather", opset: int = 17, seed: int = 0):
    """One GPT-2-style attention layer with a stacked cache ``past`` -> ``present``, and ``out``."""
    rng = np.random.default_rng(seed)
    hidden = HEADS * HEAD_DIM
    nodes: list = []
    initializers = [numpy_helper.from_array(rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.3, name)
                    for name in ("wq", "wk", "wv")]
    initializers.append(numpy_helper.from_array(np.array([0, 0, HEADS, HEAD_DIM], np.int64), "heads"))
    for name in ("q", "k", "v"):
        nodes += [helper.make_node("MatMul", ["x", f"w{name}"], [f"{name}_flat"]),
                  helper.make_node("Reshape", [f"{name}_flat", "heads"], [f"{name}_bshd"]),
                  helper.make_node("Transpose", [f"{name}_bshd"], [f"{name}_h"], perm=[0, 2, 1, 3])]
    past_key, past_value = _take_halves(form, opset, nodes, initializers)
    nodes += [helper.make_node("Concat", [past_key, "k_h"], ["k_all"], axis=-2),
              helper.make_node("Concat", [past_value, "v_h"], ["v_all"], axis=-2),
              helper.make_node("Transpose", ["k_all"], ["k_t"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["q_h", "k_t"], ["scores"]),
              helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
              helper.make_node("MatMul", ["probs", "v_all"], ["out"])]
    for half in ("k_all", "v_all"):
        inputs, attrs = _axes(f"un_{half}", opset, [half], nodes, initializers)
        nodes.append(helper.make_node("Unsqueeze", inputs, [f"{half}5"], **attrs))
    nodes.append(helper.make_node("Concat", ["k_all5", "v_all5"], ["present"], axis=0))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", hidden]),
              helper.make_tensor_value_info("past", TensorProto.FLOAT, [2, "batch", HEADS, "past_seq", HEAD_DIM])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", HEADS, "seq", HEAD_DIM]),
               helper.make_tensor_value_info("present", TensorProto.FLOAT, [2, "batch", HEADS, "total", HEAD_DIM])]
    return make_model(nodes, inputs, outputs, initializers, opset=opset)


def _feeds(batch: int, seq: int, past: int, scale: float, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": (rng.standard_normal((batch, seq, HEADS * HEAD_DIM)) * scale).astype(np.float32),
            "past": (rng.standard_normal((2, batch, HEADS, past, HEAD_DIM)) * scale).astype(np.float32)}


@pytest.mark.parametrize("opset", [11, 17])
@pytest.mark.parametrize("form", ["gather", "split", "slice"])
def test_each_exporter_form_becomes_rank_4_keys_and_values(form, opset):
    model, records = assert_pass_preserves(legacy_attention(form, opset), ["split-stacked-kv"], feeds=_feeds(2, 3, 5, 1.0))
    assert records[0].counters == {"inputs_split": 1, "outputs_split": 1}
    graph = model.graph
    assert [t.name for t in graph.inputs] == ["x", "past.key", "past.value"]
    assert [t.name for t in graph.outputs] == ["out", "present.key", "present.value"]
    assert all(len(t.shape) == 4 for t in [*graph.inputs[1:], *graph.outputs[1:]])


def test_after_the_default_pipeline_no_rank_5_tensor_is_left():
    result = compile(legacy_attention("split", 17), split_stacked_kv=True, input_shapes={"x": [1, 3, 8], "past": [2, 1, 2, 5, 4]},
                     verify=True)
    assert result.verification["ok"]
    ranks = {len(t.shape) for t in result.model.graph.tensors().values() if t.shape is not None}
    assert max(ranks) == 4
    assert not {"Gather", "Split", "Slice", "Squeeze", "Unsqueeze"} & {n.op for n in result.model.graph.nodes}


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["gather", "split", "slice"]), st.sampled_from([11, 13, 17]), st.integers(1, 3), st.integers(1, 4),
       st.integers(0, 6), st.sampled_from([1e-2, 1.0, 30.0]), st.integers(0, 1000))
def test_outputs_are_the_halves_of_the_stacked_outputs(form, opset, batch, seq, past, scale, seed):
    feeds = _feeds(batch, seq, past, scale, seed)
    reference = load(legacy_attention(form, opset, seed))
    model, _ = assert_pass_preserves(legacy_attention(form, opset, seed), ["split-stacked-kv"], feeds=feeds)
    from mapc.ir import run
    expected, actual = run(reference, feeds), run(model, {"x": feeds["x"], "past.key": feeds["past"][0], "past.value": feeds["past"][1]})
    np.testing.assert_array_equal(actual["present.key"], expected["present"][0])
    np.testing.assert_array_equal(actual["present.value"], expected["present"][1])
    np.testing.assert_array_equal(actual["out"], expected["out"])


def test_a_reader_of_the_whole_stack_keeps_the_input_stacked_with_a_note():
    proto = legacy_attention("gather", 17)
    proto.graph.node.append(helper.make_node("ReduceSum", ["past"], ["total_sum"], keepdims=0))
    proto.graph.output.append(helper.make_tensor_value_info("total_sum", TensorProto.FLOAT, []))
    model, records = assert_pass_preserves(proto, ["split-stacked-kv"], feeds=_feeds(1, 2, 3, 1.0))
    assert records[0].counters["inputs_split"] == 0 and "past" in [t.name for t in model.graph.inputs]
    assert [note.code for note in records[0].notes] == ["split-stacked-kv.input-kept"]
    assert "ReduceSum" in records[0].notes[0].message


def test_only_the_named_tensors_are_split():
    _, records = assert_pass_preserves(legacy_attention(), [("split-stacked-kv", {"tensors": ["present"]})], feeds=_feeds(1, 2, 3, 1.0))
    assert records[0].counters == {"inputs_split": 0, "outputs_split": 1}


def test_the_cli_flag_splits_and_verifies(tmp_path):
    source = tmp_path / "gpt2_legacy.onnx"
    source.write_bytes(legacy_attention().SerializeToString())
    before = source.read_bytes()
    output = tmp_path / "out.onnx"
    assert main(["compile", str(source), "--split-stacked-kv", "--verify", "-o", str(output), "-q"]) == 0
    assert source.read_bytes() == before
    assert [t.name for t in load(output).graph.inputs] == ["x", "past.key", "past.value"]
