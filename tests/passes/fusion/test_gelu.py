"""gelu and gelu-tanh: exact and tanh-approximate GELU in any association -> Gelu."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mapc

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


def fast_gelu_as_onnxruntime_writes_it(opset: int, cubic: float = 0.044714998453855515) -> onnx.ModelProto:
    """The tanh GELU of onnxruntime's FastGelu fusion test model (testdata/transform/fusion/fast_gelu.py,
    with bias): a = x + bias; a·0.5 · (1 + tanh((a·0.7978...) · (1 + a·(a·0.0447...)))),
    its constants the float32 values it stores."""
    g = Graph(opset)
    a = g.op("Add", g.input("x", ["batch", "seqlen", 64]), g.const((0.01 * np.arange(64)).astype(np.float32)))
    polynomial = g.op("Add", g.op("Mul", a, g.op("Mul", a, g.const(np.float32(cubic)))), g.const(np.float32(1.0)))
    core = g.op("Tanh", g.op("Mul", g.op("Mul", a, g.const(np.float32(0.7978845834732056))), polynomial))
    g.output(g.op("Mul", g.op("Mul", a, g.const(np.float32(0.5))), g.op("Add", core, g.const(np.float32(1.0)))))
    return g.build()


@pytest.mark.parametrize("opset", [11, 20])
def test_onnxruntimes_fast_gelu_spelling_fuses(opset):
    model, record = fuse(fast_gelu_as_onnxruntime_writes_it(opset))
    assert domains(model) == {("", "Add"): 1, ("" if opset >= 20 else "mapc", "Gelu"): 1}
    assert record.counters["gelu-tanh-factored"] == 1 and misses(record) == []


def test_onnxruntimes_opset_10_fast_gelu_fuses_after_the_opset_upgrade():
    result = mapc.compile(fast_gelu_as_onnxruntime_writes_it(10), target_opset=20, strict_fusion=True, verify=True)
    assert result.verification["ok"] and ops(result.model) == {"Add": 1, "Gelu": 1}


def test_a_wrong_constant_inside_the_factored_square_is_a_near_miss_naming_it():
    model, record = fuse(fast_gelu_as_onnxruntime_writes_it(20, cubic=0.05))
    assert "Gelu" not in ops(model)
    assert [(m["code"], "0.044715" in m["message"]) for m in misses(record, "gelu-tanh-factored")] == [("structure", True)]


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
        constant_inside=st.booleans(),
    )
)
def test_gelu_variants_fuse_and_agree(spec):
    model, record = fuse(gelu_model(spec))
    assert domains(model)[("" if spec.opset >= 20 else "mapc", "Gelu")] == 1, misses(record)
    assert sum(ops(model).values()) == 2
