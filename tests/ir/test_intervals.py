"""Interval analysis (mapc.ir.value_bound): sound bounds from weights, normalisations and squashing ops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import infer_shapes, load, run, value_bound
from tests.conftest import make_model

D = 8


def _bound_of(model, name):
    loaded = load(model)
    infer_shapes(loaded)
    return value_bound(loaded.graph.tensors()[name])


def _layer_norm_projection(weight: np.ndarray, gamma: float = 1.0):
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["n"], axis=-1), helper.make_node("MatMul", ["n", "w"], ["y"])]
    inits = [numpy_helper.from_array(np.full(D, gamma, np.float32), "g"), numpy_helper.from_array(np.zeros(D, np.float32), "b"),
             numpy_helper.from_array(weight.astype(np.float32), "w")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, D])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, weight.shape[1]])], inits)


def test_a_layernorm_bounds_a_projection_by_cauchy_schwarz_whatever_the_input():
    weight = np.random.default_rng(0).standard_normal((D, 4))
    model = _layer_norm_projection(weight)
    bound = _bound_of(model, "y")
    reach = np.sqrt(D) * np.sqrt((weight**2).sum(axis=0)).max()
    assert bound is not None and bound.hi <= reach + 1e-6 and bound.lo >= -reach - 1e-6
    for scale in (1e-3, 1.0, 1e6):
        x = (np.random.default_rng(1).standard_normal((2, 3, D)) * scale).astype(np.float32)
        y = run(model, {"x": x})["y"]
        assert bound.lo - 1e-4 <= y.min() and y.max() <= bound.hi + 1e-4


def test_a_graph_input_reaching_the_scores_has_no_bound():
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), helper.make_node("MatMul", ["q", "kt"], ["s"])]
    model = make_model(nodes, [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, D]) for n in ("q", "k")],
                       [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 3, 3])])
    assert _bound_of(model, "s") is None


def test_an_embedding_table_and_a_softmax_weighted_sum_are_bounded_by_their_values():
    table = np.linspace(-3, 5, 10 * D).reshape(10, D).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("Softmax", ["e"], ["p"], axis=-1),
             helper.make_node("Transpose", ["p"], ["pt"], perm=[0, 1]), helper.make_node("MatMul", ["p", "table_t"], ["mixed"])]
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(table[:D].T.copy(), "table_t")]
    model = make_model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
                       [helper.make_tensor_value_info("mixed", TensorProto.FLOAT, [4, D])], inits)
    embedded = _bound_of(model, "e")
    assert (embedded.lo, embedded.hi) == (-3.0, 5.0)
    probabilities = _bound_of(model, "p")
    assert (probabilities.lo, probabilities.hi) == (0.0, 1.0)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["Add", "Sub", "Mul", "Div", "Relu", "Tanh", "Neg", "Max", "Where"]), st.floats(0.01, 100.0), st.integers(0, 2**16))
def test_elementwise_bounds_hold_on_random_values(op, scale, seed):
    """Inputs bounded by Tanh·scale; the op's output stays inside the computed bound."""
    rng = np.random.default_rng(seed)
    signs = np.ones((3, D)) if op == "Div" else rng.choice([-1, 1], (3, D))  # a divisor's interval must exclude 0
    second = (rng.uniform(0.5, 2.0, (3, D)) * signs).astype(np.float32)
    nodes = [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Mul", ["t", "scale"], ["a"])]
    if op in ("Relu", "Tanh", "Neg"):
        nodes.append(helper.make_node(op, ["a"], ["y"]))
    elif op == "Where":
        nodes.append(helper.make_node("Where", ["c", "a", "other"], ["y"]))
    else:
        nodes.append(helper.make_node(op, ["a", "other"], ["y"]))
    inits = [numpy_helper.from_array(np.array(scale, np.float32), "scale"), numpy_helper.from_array(second, "other"),
             numpy_helper.from_array(rng.random((3, D)) < 0.5, "c")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, D])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, D])], inits)
    bound = _bound_of(model, "y")
    y = run(model, {"x": (rng.standard_normal((3, D)) * 10).astype(np.float32)})["y"]
    slack = 1e-5 * max(1.0, bound.magnitude)
    assert bound.lo - slack <= y.min() and y.max() <= bound.hi + slack


def test_a_quantize_dequantize_pair_bounds_any_input():
    """QuantizeLinear saturates: DQ(Q(x)) lies in (int8 range - zero point) * scale whatever x is."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "s"), numpy_helper.from_array(np.array(3, np.int8), "z")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], inits)
    bound = _bound_of(model, "y")
    assert (bound.lo, bound.hi) == ((-128 - 3) * 0.5, (127 - 3) * 0.5)
    y = run(model, {"x": np.array([-1e9, -1.0, 2.0, 1e9], np.float32)})["y"]
    assert bound.lo <= y.min() and y.max() <= bound.hi


def test_a_norm_written_out_is_bounded_by_sqrt_of_its_length():
    """x / sqrt(mean(x^2) + eps) (RMSNorm as exporters write it, and LayerNorm's centred form)."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]), helper.make_node("Sub", ["x", "mu"], ["c"]),
             helper.make_node("Pow", ["c", "two"], ["sq"]), helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["c", "sd"], ["layer_norm"]),
             helper.make_node("Pow", ["x", "two"], ["xsq"]), helper.make_node("ReduceMean", ["xsq"], ["ms"], axes=[-1]),
             helper.make_node("Add", ["ms", "eps"], ["mse"]), helper.make_node("Sqrt", ["mse"], ["rms"]),
             helper.make_node("Reciprocal", ["rms"], ["inv"]), helper.make_node("Mul", ["x", "inv"], ["rms_norm"])]
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"), numpy_helper.from_array(np.array(1e-6, np.float32), "eps")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, D])],
                       [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3, D]) for n in ("layer_norm", "rms_norm")], inits, opset=17)
    x = np.array([[1e6] + [0.0] * (D - 1), np.linspace(-1e-3, 1e-3, D), np.arange(D) * 1e4], np.float32)
    values = run(model, {"x": x})
    for name in ("layer_norm", "rms_norm"):
        bound = _bound_of(model, name)
        assert bound is not None and bound.hi == pytest.approx(np.sqrt(D)) and bound.lo == pytest.approx(-np.sqrt(D))
        assert np.abs(values[name]).max() <= np.sqrt(D) + 1e-4


def test_nan_guarded_softmax_weights_still_make_a_bounded_combination():
    nodes = [helper.make_node("Softmax", ["s"], ["p"], axis=-1), helper.make_node("IsNaN", ["p"], ["nan"]),
             helper.make_node("Where", ["nan", "zero", "p"], ["guarded"]), helper.make_node("MatMul", ["guarded", "table"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.linspace(2, 5, 4 * D).reshape(4, D).astype(np.float32), "table")]
    model = make_model(nodes, [helper.make_tensor_value_info("s", TensorProto.FLOAT, [3, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, D])], inits)
    bound = _bound_of(model, "y")
    assert (bound.lo, bound.hi) == (0.0, 5.0)  # a row of zeros gives 0, below the table's 2
