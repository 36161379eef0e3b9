"""rotary and rotary-partial: rotate-half RoPE -> RotaryEmbedding."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .common import domains, fuse, misses, ops
from .graphs import Graph, RotarySpec, rotary_model


def rotary_nodes(model):
    return [n for n in model.graph.nodes if n.op == "RotaryEmbedding"]


@pytest.mark.parametrize("opset", [18, 23])
@pytest.mark.parametrize("table", ["computed", "constant"])
def test_rotary_fuses(table, opset):
    model, record = fuse(rotary_model(RotarySpec(table=table, opset=opset)), dims={})
    (node,) = rotary_nodes(model)
    assert (node.domain or "") == ("" if opset >= 23 else "mapc")
    assert misses(record) == [] and ops(model)["Neg"] == 0


def test_batch_one_table_is_expanded_for_onnxruntime():
    model, _ = fuse(rotary_model(RotarySpec(batch=2, table_batch=1, opset=23)))
    (node,) = rotary_nodes(model)
    assert node.inputs[1].inputs[0].op == "Expand"


def test_constant_table_becomes_a_constant_half_cache():
    model, _ = fuse(rotary_model(RotarySpec(table="constant", batch=2, opset=23)))
    (node,) = rotary_nodes(model)
    assert node.inputs[1].values.shape == (2, 5, 4)


def test_partial_rotary_sets_the_rotary_dim():
    model, record = fuse(rotary_model(RotarySpec(head_dim=8, rotary_dim=4, opset=23)))
    (node,) = rotary_nodes(model)
    assert node.attrs["rotary_embedding_dim"] == 4 and record.counters["rotary-partial"] == 1


def test_table_without_repeated_halves_is_a_near_miss():
    g = Graph(23)
    q = g.op("Relu", g.input("q", [1, 2, 3, 4]))
    cos, sin = g.input("cos", [1, 1, 3, 4]), g.input("sin", [1, 1, 3, 4])
    low = g.op("Slice", q, g.ints([0]), g.ints([2]), g.ints([-1]))
    high = g.op("Slice", q, g.ints([2]), g.ints([4]), g.ints([-1]))
    turned = g.op("Concat", g.op("Neg", high), low, axis=-1)
    g.output(g.op("Add", g.op("Mul", q, cos), g.op("Mul", turned, sin)))
    model, record = fuse(g.build())
    assert {m["code"] for m in misses(record, "rotary")} == {"cache-layout"}
    assert not rotary_nodes(model)


def test_slice_bounds_computed_at_run_time_are_a_near_miss():
    g = Graph(18)
    q = g.op("Relu", g.input("q", [1, 2, 3, 4]))
    cos = g.unsqueeze(g.op("Cos", g.op("Concat", *(2 * [g.input("f", [1, 3, 2])]), axis=-1)), [1])
    half = g.unsqueeze(g.op("Div", g.op("Gather", g.op("Shape", q), g.const(np.int64(3)), axis=0), g.const(np.int64(2))), [0])
    low = g.op("Slice", q, g.ints([0]), half, g.ints([-1]))
    high = g.op("Slice", q, half, g.ints([4]), g.ints([-1]))
    turned = g.op("Concat", g.op("Neg", high), low, axis=-1)
    g.output(g.op("Add", g.op("Mul", q, cos), g.op("Mul", turned, cos)))
    _, record = fuse(g.build())
    (miss,) = misses(record, "rotary")
    assert miss["code"] == "slice-bounds" and "fold-constants" in miss["fix"]


@settings(max_examples=40)
@given(
    spec=st.builds(
        RotarySpec,
        batch=st.integers(1, 3),
        heads=st.integers(1, 3),
        seq=st.integers(1, 6),
        head_dim=st.sampled_from([4, 8, 16]),
        table=st.sampled_from(["computed", "constant"]),
        swap_operands=st.booleans(),
        opset=st.sampled_from([18, 23]),
        symbolic=st.booleans(),
    ),
    partial=st.booleans(),
)
def test_rotary_variants_fuse_and_agree(spec, partial):
    if partial and spec.head_dim > 4:
        spec = replace(spec, rotary_dim=spec.head_dim // 2)
    if spec.table == "constant":
        spec = replace(spec, symbolic=False)
    model, record = fuse(rotary_model(spec), dims={"batch": spec.batch, "seq": spec.seq})
    assert domains(model)[("" if spec.opset >= 23 else "mapc", "RotaryEmbedding")] == 1, misses(record)
