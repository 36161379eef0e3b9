"""norm-input-second: an Add that reads a LayerNorm's input first reads it second."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import Runner, load
from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model

F = TensorProto.FLOAT


def block(add_inputs, shape=(2, 5, 8), other_shape=None, second_norm=False):
    """x -> LayerNorm -> Tanh (u); Add over ``add_inputs`` (names among x, u, w)."""
    channels = shape[-1]
    inits = [numpy_helper.from_array(np.linspace(0.5, 1.5, channels, dtype=np.float32), "gamma"),
             numpy_helper.from_array(np.linspace(-0.2, 0.2, channels, dtype=np.float32), "beta")]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1), helper.make_node("Tanh", ["ln"], ["u"]),
             helper.make_node("Add", add_inputs, ["y"])]
    if second_norm:
        nodes.append(helper.make_node("LayerNormalization", ["w", "gamma", "beta"], ["ln2"], axis=-1))
    inputs = [helper.make_tensor_value_info("x", F, list(shape)), helper.make_tensor_value_info("w", F, list(other_shape or shape))]
    outputs = [helper.make_tensor_value_info("y", F, None), helper.make_tensor_value_info("ln", F, list(shape))]
    if second_norm:
        outputs.append(helper.make_tensor_value_info("ln2", F, None))
    return make_model(nodes, inputs, outputs, inits)


def swapped(proto):
    model, records = assert_pass_preserves(proto, ["norm-input-second"])
    rng = np.random.default_rng(0)
    feeds = {i.name: (3 * rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim])).astype(np.float32) for i in proto.graph.input}
    before, after = Runner(load(proto)).run(feeds), Runner(model).run(feeds)
    assert all(np.array_equal(before[name], after[name]) for name in before)
    [add] = [n for n in model.graph.nodes if n.op == "Add"]
    return [t.name for t in add.inputs], records[0].counters["adds_swapped"]


def test_the_residual_add_of_a_pre_ln_block_reads_the_normalized_tensor_second():
    assert swapped(block(["x", "u"])) == (["u", "x"], 1)


def test_an_add_that_already_reads_it_second_or_not_at_all_is_left_alone():
    assert swapped(block(["u", "x"])) == (["u", "x"], 0)
    assert swapped(block(["u", "w"])) == (["u", "w"], 0)


def test_an_add_of_two_normalized_tensors_is_left_alone():
    assert swapped(block(["x", "w"], second_norm=True)) == (["x", "w"], 0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.booleans(), st.sampled_from(["full", "last", "scalar", "wider"]), st.booleans())
def test_swapping_keeps_every_output_bit_for_bit(rank, channels, normalized_first, broadcast, second_norm):
    """Whatever the broadcast between the two operands, the swapped Add computes the same."""
    shape = tuple([2, 3, 4][:rank - 1]) + (channels,)
    other = {"full": shape, "last": (channels,), "scalar": (1,), "wider": (2,) + shape}[broadcast]
    proto = block(["x", "w"] if normalized_first else ["w", "x"], shape, other, second_norm and other[-1] == channels and broadcast != "scalar")
    names, count = swapped(proto)
    expected_count = int(normalized_first and not (second_norm and other[-1] == channels and broadcast != "scalar"))
    assert count == expected_count
    assert set(names) == {"x", "w"}


@given(onnx_models(families=("elementwise", "unary", "matmul", "reshape")))
def test_random_graphs_keep_their_outputs(proto):
    assert_pass_preserves(proto, ["norm-input-second"])


def test_an_rms_norm_input_counts_too():
    gamma = numpy_helper.from_array(np.linspace(0.5, 1.5, 8, dtype=np.float32), "gamma")
    nodes = [helper.make_node("RMSNormalization", ["x", "gamma"], ["n"], axis=-1), helper.make_node("Tanh", ["n"], ["u"]),
             helper.make_node("Add", ["x", "u"], ["y"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [2, 5, 8])], [helper.make_tensor_value_info("y", F, [2, 5, 8])], [gamma], opset=23)
    assert swapped(proto) == (["u", "x"], 1)
