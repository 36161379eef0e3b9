"""gelu and gelu-tanh: exact and tanh-approximate GELU in any association -> Gelu."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .common import domains, fuse, misses, ops
from .graphs import GeluSpec, Graph, gelu_model


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("opset", [18, 20])
def test_gelu_fuses(approximate, opset):
    model, record = fuse(gelu_model(GeluSpec(approximate=approximate, opset=opset)))
    (node,) = [n for n in model.graph.nodes if n.op == "Gelu"]
    assert node.attrs["approximate"] == approximate and (node.domain or "") == ("" if opset >= 20 else "mapc")
    assert set(ops(model)) == {"MatMul", "Gelu"}

def test_megatrons_factored_tanh_gelu_fuses():
    model, record = fuse(gelu_model(GeluSpec(approximate="tanh", factored=True, opset=20)))
    (node,) = [n for n in model.graph.nodes if n.op == "Gelu"]
    assert node.attrs["approximate"] == "tanh" and record.counters["gelu-tanh-factored"] == 1


def test_a_wrong_constant_is_a_near_miss_naming_it():
    g = Graph(18)
    x = g.input("x", [2, 4])
    core = g.op("Erf", g.op("Mul", x, g.const(np.float32(0.8))))
    g.output(g.op("Mul", g.op("Mul", x, g.const(np.float32(0.5))), g.op("Add", core, g.const(np.float32(1.0)))))
    model, record = fuse(g.build())
    (miss,) = misses(record, "gelu")
    assert miss["code"] == "structure" and "0.707106781" in miss["message"]
    assert "Gelu" not in ops(model)

def test_quick_gelu_is_not_gelu():
    g = Graph(18)
    x = g.input("x", [2, 4])
    g.output(g.op("Mul", x, g.op("Sigmoid", g.op("Mul", x, g.const(np.float32(1.702))))))
    model, record = fuse(g.build())
    assert "Gelu" not in ops(model) and misses(record) == []

@settings(max_examples=60)
@given(
    spec=st.builds(
        GeluSpec,
        shape=st.sampled_from([(3, 8), (2, 5, 8)]),
        approximate=st.sampled_from(["none", "tanh"]),
        association=st.sampled_from(["half-first", "half-last", "inner"]),
        divide=st.booleans(),
        cube=st.sampled_from(["pow", "mul"]),
        swap_operands=st.booleans(),
        opset=st.sampled_from([11, 13, 18, 20]),
        factored=st.booleans(),
    )
)
def test_gelu_variants_fuse_and_agree(spec):
    model, record = fuse(gelu_model(spec))
    assert domains(model)[("" if spec.opset >= 20 else "mapc", "Gelu")] == 1, misses(record)
    assert sum(ops(model).values()) == 2
