"""canonicalize: one spelling per operation, and the attention canonical forms."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given
from onnx import TensorProto

from mapc.testing import onnx_models

from .common import fuse
from .graphs import AttentionSpec, Graph, attention_model


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
