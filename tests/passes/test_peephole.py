"""peephole: a hit and a near-miss for every rule, bitwise exactness, and random models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import mapc
from mapc.ir import load
from mapc.ir.compare import Tolerance
from mapc.passes import PassContext
from mapc.passes.pipeline import PassManager
from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model

F, I64 = TensorProto.FLOAT, TensorProto.INT64
EXACT = Tolerance(0.0, 0.0)


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def one_op(node: onnx.NodeProto, x_shape, y_shape, initializers=(), x_type=F, y_type=F, extra_inputs=()) -> onnx.ModelProto:
    """x -> Relu -> node -> Relu -> y, so the rewritten op sits between ordinary tensors."""
    node.input[0] = "r"
    return make_model(
        [helper.make_node("Relu", ["x"], ["r"]) if x_type == F else helper.make_node("Identity", ["x"], ["r"]), node,
         helper.make_node("Identity", [node.output[0]], ["y"])],
        [helper.make_tensor_value_info("x", x_type, list(x_shape)), *extra_inputs],
        [helper.make_tensor_value_info("y", y_type, list(y_shape))],
        list(initializers),
    )


def peephole(proto: onnx.ModelProto, passes: str = "peephole") -> tuple[mapc.Model, dict[str, int]]:
    model, records = assert_pass_preserves(proto, passes, tolerance=EXACT)
    return model, records[0].counters


def ops(model: mapc.Model) -> list[str]:
    return [n.op for n in model.graph.nodes]


# -- properties ---------------------------------------------------------------------------------


@given(onnx_models(families=("reshape", "transpose", "squeeze", "flatten", "slice", "concat", "elementwise", "where", "cast", "constant", "matmul", "gemm")))
def test_peephole_is_exact_on_random_models(model):
    assert_pass_preserves(model, "peephole", tolerance=EXACT)


@given(onnx_models(families=("reshape", "transpose", "squeeze", "flatten", "shape_chain", "constant", "where"), symbolic=True))
def test_the_whole_group_preserves_random_models(model):
    assert_pass_preserves(model, "fixpoint(fix-shapes,fold-constants,peephole,cleanup)", dims={"N": 3})


# -- identities -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "initializers", "in_shape", "out_shape", "removed"),
    [
        (helper.make_node("Reshape", ["x", "s"], ["o"]), [const("s", [2, -1])], [2, 3], [2, 3], True),
        (helper.make_node("Reshape", ["x", "s"], ["o"]), [const("s", [3, 2])], [2, 3], [3, 2], False),
        (helper.make_node("Expand", ["x", "s"], ["o"]), [const("s", [1, 3])], [2, 3], [2, 3], True),
        (helper.make_node("Expand", ["x", "s"], ["o"]), [const("s", [4, 2, 3])], [2, 3], [4, 2, 3], False),
        (helper.make_node("Squeeze", ["x", "ax"], ["o"]), [const("ax", np.zeros(0, np.int64))], [2, 3], [2, 3], True),
        (helper.make_node("Unsqueeze", ["x", "ax"], ["o"]), [const("ax", [0])], [2, 3], [1, 2, 3], False),
        (helper.make_node("Flatten", ["x"], ["o"], axis=1), [], [2, 3], [2, 3], True),
        (helper.make_node("Flatten", ["x"], ["o"], axis=0), [], [2, 3], [1, 6], False),
    ],
    ids=["reshape", "reshape-near-miss", "expand", "expand-near-miss", "squeeze-nothing", "unsqueeze-near-miss", "flatten", "flatten-near-miss"],
)
def test_identity_reshapes(node, initializers, in_shape, out_shape, removed):
    model, counters = peephole(one_op(node, in_shape, out_shape, initializers))
    assert (node.op_type not in ops(model)) == removed
    assert counters["identity-reshape"] == int(removed)


@pytest.mark.parametrize(("to", "removed"), [(F, True), (TensorProto.DOUBLE, False)])
def test_cast_to_the_same_type(to, removed):
    model, counters = peephole(one_op(helper.make_node("Cast", ["x"], ["o"], to=to), [2], [2], y_type=to))
    assert ("Cast" not in ops(model)) == removed and counters["identity-cast"] == int(removed)


def test_cast_between_float8_variants_is_kept():
    """float8e4m3fnuz and float8e4m3fn are different types (gs once named both the second)."""
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT8E4M3FN)
    proto = make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT8E4M3FNUZ, [2])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN, [2])], opset=21)
    model, counters = peephole(proto)
    assert ops(model) == ["Cast"] and counters["identity-cast"] == 0


def test_castlike_to_the_same_type():
    model, _ = peephole(one_op(helper.make_node("CastLike", ["x", "like"], ["o"]), [2], [2], [const("like", np.zeros(1, np.float32))]))
    assert "CastLike" not in ops(model)


@pytest.mark.parametrize(
    ("perm", "in_shape", "expected"),
    [
        ([0, 1, 2], [2, 3, 4], []),
        ([1, 0, 2], [1, 3, 4], ["Reshape"]),  # moves only a size-1 axis: a Reshape
        ([0, 2, 1, 3], [2, 1, 3, 4], ["Reshape"]),
        ([1, 0, 2], [2, 3, 4], ["Transpose"]),  # near miss: a real permutation
        ([2, 1, 0], [3, 1, 3], ["Transpose"]),
    ],
)
def test_transpose(perm, in_shape, expected):
    out_shape = [in_shape[p] for p in perm]
    model, _ = peephole(one_op(helper.make_node("Transpose", ["x"], ["o"], perm=perm), in_shape, out_shape))
    assert ops(model) == ["Relu", *expected, "Identity"]


@pytest.mark.parametrize(
    ("starts", "ends", "steps", "out", "removed"),
    [
        ([0], [2**62], [1], [4, 3], True),
        ([-4], [4], None, [4, 3], True),
        ([3], [-(2**62)], [-1], [4, 3], False),  # reverses: same shape, not the identity
        ([1], [4], [1], [3, 3], False),
    ],
    ids=["full", "full-negative-start", "reversed", "partial"],
)
def test_slice(starts, ends, steps, out, removed):
    inputs = ["x", "st", "en", "ax"] + (["sp"] if steps else [])
    inits = [const("st", starts), const("en", ends), const("ax", [0])] + ([const("sp", steps)] if steps else [])
    model, counters = peephole(one_op(helper.make_node("Slice", inputs, ["o"]), [4, 3], out, inits))
    assert ("Slice" not in ops(model)) == removed and counters["identity-slice"] == int(removed)


def test_single_input_concat():
    model, _ = peephole(one_op(helper.make_node("Concat", ["x"], ["o"], axis=0), [2, 3], [2, 3]))
    assert "Concat" not in ops(model)
    model, _ = peephole(one_op(helper.make_node("Concat", ["x", "x"], ["o"], axis=0), [2, 3], [4, 3]))
    assert "Concat" in ops(model)


@pytest.mark.parametrize(
    ("indices", "axis", "out", "expected"),
    [
        ([0, 1, 2], 1, [2, 3], []),
        ([-3, 1, -1], 1, [2, 3], []),  # negative indices count from the end
        ([[0, 1, 2]], 1, [2, 1, 3], ["Reshape"]),
        (0, 0, [3], ["Reshape"]),  # a scalar index into a size-1 axis squeezes it
        ([2, 1, 0], 1, [2, 3], ["Gather"]),
        ([0, 1], 1, [2, 2], ["Gather"]),
    ],
    ids=["in-order", "negative", "extra-axis", "scalar", "reversed", "subset"],
)
def test_gather_in_order(indices, axis, out, expected):
    in_shape = [1, 3] if np.ndim(indices) == 0 else [2, 3]
    model, _ = peephole(one_op(helper.make_node("Gather", ["x", "i"], ["o"], axis=axis), in_shape, out, [const("i", np.asarray(indices, np.int64))]))
    assert ops(model) == ["Relu", *expected, "Identity"]


def test_gathernd_in_order_as_the_dynamo_mask_writes_it():
    """GatherND(mask, Concat(batch_idx, kv_idx)) over every position, in order (npu-deployment index-grid-gathernd)."""
    grid = np.stack(np.meshgrid(np.arange(2), np.arange(5), indexing="ij"), axis=-1).reshape(2, 1, 1, 5, 2)
    model, counters = peephole(one_op(helper.make_node("GatherND", ["x", "i"], ["o"]), [2, 5], [2, 1, 1, 5], [const("i", grid)]))
    assert ops(model) == ["Relu", "Reshape", "Identity"] and counters["gathernd-in-order"] == 1


@pytest.mark.parametrize(
    ("indices", "batch_dims", "in_shape", "out", "expected"),
    [
        ([[0], [1], [2]], 0, [3, 2], [3, 2], []),
        ([[[0], [1]], [[0], [1]]], 1, [2, 2], [2, 2], []),
        ([[1], [0], [2]], 0, [3, 2], [3, 2], ["GatherND"]),
        ([[0], [1]], 0, [3, 2], [2, 2], ["GatherND"]),
        ([[[1], [0]], [[0], [1]]], 1, [2, 2], [2, 2], ["GatherND"]),
    ],
    ids=["in-order", "batch-dims", "permuted", "subset", "batch-dims-permuted"],
)
def test_gathernd(indices, batch_dims, in_shape, out, expected):
    node = helper.make_node("GatherND", ["x", "i"], ["o"], batch_dims=batch_dims)
    model, _ = peephole(one_op(node, in_shape, out, [const("i", np.asarray(indices, np.int64))]))
    assert ops(model) == ["Relu", *expected, "Identity"]


@pytest.mark.parametrize(
    ("indices", "reduction", "expected"),
    [
        ([[0], [1], [2]], "none", ["Identity"]),  # the result is the updates; data (Relu) is dead
        ([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]], "none", ["Reshape", "Identity"]),
        ([[0], [2], [1]], "none", ["Relu", "ScatterND", "Identity"]),  # covers everything, but not in order
        ([[0], [1]], "none", ["Relu", "ScatterND", "Identity"]),  # partial
        ([[0], [1], [2]], "add", ["Relu", "ScatterND", "Identity"]),  # accumulates into data
    ],
    ids=["rows", "elements", "permuted", "partial", "reduction"],
)
def test_scatternd_covering_the_whole_tensor(indices, reduction, expected):
    index = np.asarray(indices, np.int64)
    updates_shape = list(index.shape[:-1]) + [2][index.shape[-1] - 1 :]
    updates = helper.make_tensor_value_info("u", F, updates_shape)
    node = helper.make_node("ScatterND", ["x", "i", "u"], ["o"], **({"reduction": reduction} if reduction != "none" else {}))
    model, _ = peephole(one_op(node, [3, 2], [3, 2], [const("i", index)], extra_inputs=[updates]))
    assert ops(model) == expected


# -- chains -----------------------------------------------------------------------------------------


def test_reshape_like_chain_becomes_one_reshape():
    nodes = [
        helper.make_node("Unsqueeze", ["x", "ax"], ["a"]),
        helper.make_node("Flatten", ["a"], ["b"], axis=2),
        helper.make_node("Reshape", ["b", "s"], ["y"]),
    ]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [2, 3, 4])], [helper.make_tensor_value_info("y", F, [6, 4])],
                       [const("ax", [0]), const("s", [6, 4])])
    model, counters = peephole(proto)
    assert ops(model) == ["Reshape"] and model.graph.nodes[0].inputs[0].name == "x"
    assert model.graph.nodes[0].inputs[1].values.tolist() == [6, 4]


def test_unsqueeze_then_squeeze_cancels():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Unsqueeze", ["r", "ax"], ["a"]), helper.make_node("Squeeze", ["a", "ax"], ["b"]), helper.make_node("Neg", ["b"], ["y"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [2, 3])], [helper.make_tensor_value_info("y", F, [2, 3])], [const("ax", [1])])
    model, _ = peephole(proto)
    assert ops(model) == ["Relu", "Neg"]


def test_reshape_chain_near_miss_keeps_a_dynamic_reshape():
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["a"]), helper.make_node("Reshape", ["a", "s2"], ["y"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, ["n", 6])], [helper.make_tensor_value_info("y", F, ["n", 3, 2])],
                       [const("s1", [0, 2, 3]), const("s2", [0, 3, 2])])
    model, _ = peephole(proto)
    assert ops(model) == ["Reshape", "Reshape"]


def test_reshape_chain_keeps_the_inner_op_for_its_other_readers():
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["a"]), helper.make_node("Reshape", ["a", "s2"], ["y"]), helper.make_node("Neg", ["a"], ["z"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [6])], [helper.make_tensor_value_info("y", F, [3, 2]), helper.make_tensor_value_info("z", F, [2, 3])],
                       [const("s1", [2, 3]), const("s2", [3, 2])])
    model, _ = peephole(proto)
    assert ops(model) == ["Reshape", "Reshape", "Neg"] and model.graph.nodes[1].inputs[0].name == "x"


@pytest.mark.parametrize(("second", "expected"), [([1, 0, 2], []), ([0, 2, 1], ["Transpose"])])
def test_transpose_chain(second, expected):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Transpose", ["r"], ["a"], perm=[1, 0, 2]),
             helper.make_node("Transpose", ["a"], ["b"], perm=second), helper.make_node("Neg", ["b"], ["y"])]
    out = np.transpose(np.zeros((2, 3, 4)), [1, 0, 2]).transpose(second).shape
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [2, 3, 4])], [helper.make_tensor_value_info("y", F, list(out))])
    model, _ = peephole(proto)
    assert ops(model) == ["Relu", *expected, "Neg"]
    if expected:
        assert model.graph.nodes[1].attrs["perm"] == [1, 2, 0] and model.graph.nodes[1].inputs[0].name == "r"


D, H, I8, B = TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.BOOL


@pytest.mark.parametrize(
    ("start", "middle", "removed"),
    [
        (F, D, True),
        (H, F, True),
        (I8, H, True),  # every int8 is a float16 exactly
        (B, I64, True),
        (TensorProto.INT32, D, True),
        (F, H, False),  # float16 rounds float32
        (TensorProto.INT32, F, False),  # float32 rounds ints above 2**24
        (I64, D, False),
        (F, TensorProto.INT32, False),  # truncates
    ],
)
def test_cast_round_trip(start, middle, removed):
    nodes = [helper.make_node("Identity", ["x"], ["r"]), helper.make_node("Cast", ["r"], ["m"], to=middle),
             helper.make_node("Cast", ["m"], ["o"], to=start), helper.make_node("Identity", ["o"], ["y"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", start, [3])], [helper.make_tensor_value_info("y", start, [3])])
    model, counters = peephole(proto)
    assert ops(model).count("Cast") == (0 if removed else 2) and counters["cast-round-trip"] == int(removed)


def test_cast_round_trip_keeps_the_first_cast_for_its_other_readers():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Cast", ["r"], ["m"], to=D),
             helper.make_node("Cast", ["m"], ["o"], to=F), helper.make_node("Neg", ["o"], ["y"]), helper.make_node("Neg", ["m"], ["z"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [3])],
                       [helper.make_tensor_value_info("y", F, [3]), helper.make_tensor_value_info("z", D, [3])])
    model, _ = peephole(proto)
    assert ops(model) == ["Relu", "Cast", "Neg", "Neg"] and model.graph.nodes[2].inputs[0].name == "r"


# -- arithmetic ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "constant_first", "value", "removed"),
    [
        ("Mul", False, 1.0, True),
        ("Mul", True, np.ones((1, 3), np.float32), True),
        ("Div", False, 1.0, True),
        ("Add", True, 0.0, True),
        ("Sub", False, 0.0, True),
        ("Div", True, 1.0, False),  # 1 / x
        ("Sub", True, 0.0, False),  # 0 - x
        ("Mul", False, 2.0, False),
        ("Mul", False, np.ones((4, 2, 3), np.float32), False),  # broadcasting enlarges x
        ("Add", False, np.array([0.0, np.nan, 0.0], np.float32), False),
    ],
)
def test_neutral_operand(op, constant_first, value, removed):
    value = np.asarray(value, np.float32)
    out_shape = list(np.broadcast_shapes((2, 3), value.shape))
    inputs = ["k", "x"] if constant_first else ["x", "k"]
    model, counters = peephole(one_op(helper.make_node(op, inputs, ["o"]), [2, 3], out_shape, [const("k", value)]) if not constant_first else
                               make_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node(op, ["k", "r"], ["o"]), helper.make_node("Identity", ["o"], ["y"])],
                                          [helper.make_tensor_value_info("x", F, [2, 3])], [helper.make_tensor_value_info("y", F, out_shape)], [const("k", value)]))
    assert (op not in ops(model)) == removed and counters["neutral-operand"] == int(removed)


def test_neutral_operand_on_integers_and_dynamic_shapes():
    proto = make_model([helper.make_node("Add", ["x", "zero"], ["y"]), helper.make_node("Mul", ["y", "one"], ["z"])],
                       [helper.make_tensor_value_info("x", I64, ["n", 3])], [helper.make_tensor_value_info("z", I64, ["n", 3])],
                       [const("zero", np.zeros((1, 3), np.int64)), const("one", np.int64(1))])
    model, counters = peephole(proto)
    assert ops(model) == ["Mul"]  # Add removed; Mul kept: its output z would have to be the graph input x
    assert counters["neutral-operand"] == 1


def signed_zero_model(op: str, zero: float) -> onnx.ModelProto:
    nodes = [helper.make_node("Neg", ["x"], ["n"]), helper.make_node(op, ["n", "k"], ["o"]), helper.make_node("Identity", ["o"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, [4])], [helper.make_tensor_value_info("y", F, [4])], [const("k", np.float32(zero))])


@pytest.mark.parametrize(("op", "zero", "exact"), [("Add", -0.0, True), ("Add", 0.0, False), ("Sub", 0.0, True), ("Sub", -0.0, False)])
def test_signed_zeros(op, zero, exact):
    """x + (-0.0) and x - 0.0 keep every bit; x + 0.0 turns -0.0 into +0.0, removed unless signed_zeros."""
    strict = load(signed_zero_model(op, zero))
    PassManager("peephole{signed_zeros=true}").run(strict, PassContext())
    assert (op not in ops(strict)) == exact
    relaxed = load(signed_zero_model(op, zero))
    PassManager("peephole").run(relaxed, PassContext())
    assert op not in ops(relaxed)
    x = np.array([0.0, 1.5, -2.0, np.inf], np.float32)  # Neg gives -0.0 first
    before = mapc.ir.run(load(signed_zero_model(op, zero)), {"x": x})["y"]
    after = mapc.ir.run(strict, {"x": x})["y"]
    assert np.array_equal(before.view(np.uint32), after.view(np.uint32))


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (np.ones((2, 3), bool), ["Expand", "Identity"]),  # the chosen constant is broadcast; Relu is dead
        (np.zeros((1, 3), bool), ["Relu", "Identity"]),
        (np.array([True, False, True]), ["Relu", "Where", "Identity"]),
    ],
    ids=["all-true", "all-false", "mixed"],
)
def test_where_with_a_constant_condition(condition, expected):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Where", ["c", "k", "r"], ["o"]), helper.make_node("Identity", ["o"], ["y"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [2, 3])], [helper.make_tensor_value_info("y", F, [2, 3])],
                       [const("c", condition), const("k", np.float32(-1e4))])
    model, _ = peephole(proto)
    assert ops(model) == expected


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "y_shape", "expected"),
    [
        ([1, 1], [1, 5], [1, 5], "Mul"),  # QNN never finishes finalizing this one as a MatMul
        ([2, 3, 1], [1, 4], [2, 3, 4], "Mul"),
        ([2, 1, 3, 1], [5, 1, 4], [2, 5, 3, 4], "Mul"),  # batch dims broadcast as MatMul's do
        ([2, 3, 2], [2, 4], [2, 3, 4], "MatMul"),
        ([2, 3, 2], [2], [2, 3], "MatMul"),
        ([1], [1, 4], [4], "Mul"),  # rank 1: MatMul drops the vector's axis, a Reshape after the Mul too
        ([5, 1], [1], [5], "Mul"),  # QNN fails to finalize this one as an fp16 MatMul
        ([2, 3, 1], [1], [2, 3], "Mul"),
        ([1], [1], [], "Mul"),
    ],
)
def test_a_matmul_of_inner_size_one_is_a_broadcast_mul(a_shape, b_shape, y_shape, expected):
    nodes = [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "b"], ["o"]), helper.make_node("Identity", ["o"], ["y"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("a", F, a_shape), helper.make_tensor_value_info("b", F, b_shape)],
                       [helper.make_tensor_value_info("y", F, y_shape)])
    model, _ = peephole(proto)
    assert expected in ops(model) and ("MatMul" in ops(model)) == (expected == "MatMul")
    assert ("Reshape" in ops(model)) == (expected == "Mul" and min(len(a_shape), len(b_shape)) == 1)
    strict = load(proto)
    PassManager("peephole{signed_zeros=true}").run(strict, PassContext())
    assert "MatMul" in ops(strict), "the Mul may give -0.0 where MatMul gave +0.0"


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize(("alpha", "beta", "bias"), [(1.0, 1.0, None), (1.0, 1.0, [5]), (0.5, 1.0, [1, 5]), (1.0, 0.25, [3, 5]), (2.0, 3.0, [3, 1]), (0.3, 0.7, [5])])
def test_a_gemm_of_inner_size_one_is_mul_times_alpha_plus_beta_bias_bit_for_bit(trans_a, trans_b, alpha, beta, bias):
    m, n = 3, 5
    inputs = [helper.make_tensor_value_info("a", F, [1, m] if trans_a else [m, 1])]
    inits = [const("b", np.random.default_rng(1).standard_normal([n, 1] if trans_b else [1, n]).astype(np.float32))]
    if bias is not None:
        inits.append(const("c", np.random.default_rng(2).standard_normal(bias).astype(np.float32)))
    gemm = helper.make_node("Gemm", ["r", "b", *(["c"] if bias else [])], ["o"], alpha=alpha, beta=beta, transA=trans_a, transB=trans_b)
    nodes = [helper.make_node("Relu", ["a"], ["r"]), gemm, helper.make_node("Identity", ["o"], ["y"])]
    model, _ = peephole(make_model(nodes, inputs, [helper.make_tensor_value_info("y", F, [m, n])], inits))
    assert "Gemm" not in ops(model) and "Mul" in ops(model)


# -- graph outputs ---------------------------------------------------------------------------------------


def test_an_identity_between_graph_input_and_output_stays():
    proto = make_model([helper.make_node("Reshape", ["x", "s"], ["y"])], [helper.make_tensor_value_info("x", F, [2, 3])],
                       [helper.make_tensor_value_info("y", F, [2, 3])], [const("s", [2, 3])])
    model, counters = peephole(proto)
    assert ops(model) == ["Reshape"] and not any(counters.values())


def test_a_bypassed_output_keeps_its_name():
    proto = make_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "s"], ["y"])],
                       [helper.make_tensor_value_info("x", F, [2, 3])], [helper.make_tensor_value_info("y", F, [2, 3])], [const("s", [2, 3])])
    model, _ = peephole(proto)
    assert ops(model) == ["Relu"] and model.graph.outputs[0].name == "y" and model.graph.nodes[0].outputs[0].name == "y"


# -- reshape sandwiches ---------------------------------------------------------------------------------


def sandwich_model(second_reader: bool = False, constant=np.float32(0.5), closing=(8, 4)) -> onnx.ModelProto:
    """x[8,4] -> Reshape[1,8,4] -> tanh-GELU-like elementwise region -> Reshape back -> MatMul."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Reshape", ["r", "up"], ["u"]),
        helper.make_node("Pow", ["u", "three"], ["cube"]),
        helper.make_node("Mul", ["cube", "k"], ["scaled"]),
        helper.make_node("Add", ["u", "scaled"], ["inner"]),
        helper.make_node("Tanh", ["inner"], ["t"]),
        helper.make_node("Mul", ["u", "t"], ["g"]),
        helper.make_node("Reshape", ["g", "down"], ["d"]),
        helper.make_node("MatMul", ["d", "w"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", F, [closing[0], 2] if len(closing) == 2 else [*closing[:-1], 2])]
    if second_reader:
        nodes.append(helper.make_node("Neg", ["t"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", F, [1, 8, 4]))
    return make_model(nodes, [helper.make_tensor_value_info("x", F, [8, 4])], outputs,
                      [const("up", [1, 8, 4]), const("down", list(closing)), const("three", np.float32(3)), const("k", constant),
                       const("w", np.ones((closing[-1], 2), np.float32))])


def test_elementwise_ops_between_a_reshape_and_its_inverse_run_on_the_original_shape():
    model, counters = peephole(sandwich_model())
    assert ops(model) == ["Relu", "Pow", "Mul", "Add", "Tanh", "Mul", "MatMul"] and counters["reshape-sandwich"] == 1
    assert model.graph.tensors()["inner"].shape == [8, 4]


@pytest.mark.parametrize(
    "proto",
    [
        sandwich_model(second_reader=True),  # a region result is read outside
        sandwich_model(constant=np.full((1, 1, 4), 0.5, np.float32)),  # a constant that is not a single element
        sandwich_model(closing=(4, 8)),  # the closing Reshape does not restore the original shape
    ],
    ids=["read-outside", "vector-constant", "other-shape"],
)
def test_reshape_sandwich_near_misses(proto):
    model, counters = peephole(proto)
    assert ops(model).count("Reshape") == 2 and counters["reshape-sandwich"] == 0


def test_empty_concat_inputs_are_dropped():
    """Partial rotary with every dim rotated: Concat(rotated, x[..., 8:8]) is the rotated half."""
    empty = helper.make_node("Slice", ["r", "s8", "e8", "ax"], ["nothing"])
    concat = helper.make_node("Concat", ["r", "nothing"], ["o"], axis=-1)
    inits = [const("s8", [8]), const("e8", [8]), const("ax", [-1])]
    proto = one_op(concat, [2, 8], [2, 8], inits)
    proto.graph.node.insert(1, empty)
    model, counters = peephole(proto)
    assert counters["empty-concat-inputs"] == 1 and ops(model) == ["Relu", "Identity"]
    proto = one_op(helper.make_node("Concat", ["x", "nothing", "r"], ["o"], axis=1), [2, 8], [2, 16], inits)
    proto.graph.node.insert(1, empty)
    model, counters = peephole(proto)
    assert counters["empty-concat-inputs"] == 1
    concat_node = next(n for n in model.graph.nodes if n.op == "Concat")
    assert [t.name for t in concat_node.inputs] == ["r", "r"]  # one_op feeds Relu(x) as the first input


@given(st.integers(1, 3), st.integers(0, 2), st.lists(st.booleans(), min_size=1, max_size=4), st.integers(0, 10**6))
def test_empty_concat_inputs_property(rank, axis_pick, empties, seed):
    """Any mix of empty and non-empty Concat inputs: the output is unchanged, bit for bit."""
    axis = axis_pick % rank
    rng = np.random.default_rng(seed)
    base = [int(d) for d in rng.integers(1, 4, rank)]
    inputs, nodes, infos = [], [], []
    total = list(base)
    total[axis] = 0
    for index, empty in enumerate(empties):
        shape = list(base)
        shape[axis] = 0 if empty else int(rng.integers(1, 3))
        total[axis] += shape[axis]
        name = f"in{index}"
        infos.append(helper.make_tensor_value_info(name, F, shape))
        inputs.append(name)
    nodes.append(helper.make_node("Concat", inputs, ["c"], axis=axis - rank if seed % 2 else axis))
    nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    proto = make_model(nodes, infos, [helper.make_tensor_value_info("y", F, total)])
    assert_pass_preserves(proto, "peephole", tolerance=EXACT)
# -- legacy ops -----------------------------------------------------------------------------------


def image_scaler(x_type=F, opset: int = 9, **attrs) -> onnx.ModelProto:
    node = helper.make_node("ImageScaler", ["x"], ["s"], **attrs)
    model = one_op(node, [2, 3, 4, 5], [2, 3, 4, 5], x_type=x_type, y_type=x_type)
    model.opset_import[0].version = opset
    model.ir_version = 7
    return model


@pytest.mark.parametrize("x_type, attrs", [
    (F, {"scale": 0.017, "bias": [-2.1, -2.0, -1.8]}),
    (TensorProto.FLOAT16, {"scale": 0.5, "bias": [1.0, -2.0, 3.0]}),
], ids=["float", "float16"])
def test_image_scaler_becomes_mul_and_add_bit_exactly(x_type, attrs):
    model, counters = peephole(image_scaler(x_type, **attrs))
    assert counters["image-scaler"] == 1 and ops(model)[1:3] == ["Mul", "Add"]


def test_image_scaler_near_miss_when_the_input_type_is_unknown():
    proto = image_scaler(scale=2.0, bias=[0.0, 1.0, 2.0])
    # a contrib op no shape inference knows (not even onnxruntime's symbolic one)
    proto.graph.node[0].CopyFrom(helper.make_node("Inverse", ["x"], ["r"], domain="com.microsoft"))
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    model = load(proto)
    record = PassManager(["peephole"]).run(model, PassContext())[0]
    assert "ImageScaler" in ops(model)
    (near,) = record.details["rules"]["image-scaler"]["near_misses"]
    assert near["code"] == "unknown-dtype" and near["fix"] == "run fix-shapes first"


@pytest.mark.parametrize(("shape", "axis", "opset", "rewritten"), [
    ([1, 1, 4, 6], 0, 18, True),  # QNN's fp16 LogSoftmax computes this one over another axis
    ([2, 3, 1], -1, 18, True),
    ([2, 3, 4], 1, 18, False),
    ([2, 3, 1], 2, 11, True),  # below opset 13: coerced to 2-D at the axis, [6, 1]
    ([2, 1, 4], 1, 11, False),  # [2, 4]: the 4 is normalized over
])
def test_a_log_softmax_over_one_element_is_x_minus_x(shape, axis, opset, rewritten):
    node = helper.make_node("LogSoftmax", ["x"], ["y"], axis=axis)
    proto = make_model([node], [helper.make_tensor_value_info("x", F, shape)], [helper.make_tensor_value_info("y", F, shape)], opset=opset)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x.flat[:3] = [np.inf, -np.inf, np.nan]  # NaN either way
    model, records = assert_pass_preserves(proto, "peephole", tolerance=EXACT, feeds={"x": x})
    assert (ops(model) == ["Sub"]) is rewritten


@pytest.mark.parametrize(("op", "shape", "axes", "keepdims", "opset", "expected"), [
    ("ReduceMax", [1, 3, 1], [0, 1, 2], 1, 18, ["ReduceMax"]),  # QNN's quantized ReduceMax is wrong over these
    ("ReduceMin", [3, 1], [0, 1], 0, 18, ["ReduceMin", "Reshape"]),
    ("ReduceMean", [1, 3, 1], [0, 2], 1, 18, ["Identity"]),  # all reduced axes of size 1
    ("ReduceSum", [1, 3, 1], [-1], 0, 13, ["Reshape"]),
    ("ReduceProd", [2, 1, 4], [1, 2], 1, 11, ["ReduceProd"]),  # axes as an attribute
    ("ReduceMax", [2, 3, 4], [0, 2], 1, 18, ["ReduceMax"]),  # no size-1 axis: unchanged
    ("ReduceL2", [1, 3, 1], [0, 1, 2], 1, 18, ["ReduceL2"]),  # |x| over one element: not the element
])
def test_a_reduction_leaves_out_axes_of_size_one(op, shape, axes, keepdims, opset, expected):
    as_input = (op != "ReduceSum" and opset >= 18) or (op == "ReduceSum" and opset >= 13)
    node = helper.make_node(op, ["x", "axes"] if as_input else ["x"], ["r"], keepdims=keepdims, **({} if as_input else {"axes": axes}))
    initializers = [const("axes", np.array(axes, np.int64))] if as_input else []
    nodes = [helper.make_node("Relu", ["x0"], ["x"]), node, helper.make_node("Neg", ["r"], ["y"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("x0", F, shape)], [helper.make_tensor_value_info("y", F, None)], initializers, opset=opset)
    model, _ = peephole(proto)
    assert [n for n in ops(model) if n not in ("Relu", "Neg")] == [e for e in expected if e != "Identity"]
    reduce = next((n for n in model.graph.nodes if n.op == op), None)
    if reduce is not None and expected[0] == op and op != "ReduceL2" and shape != [2, 3, 4]:
        kept = reduce.inputs[1].values.tolist() if as_input else list(reduce.attrs["axes"])
        assert all(shape[a] != 1 for a in kept)


@pytest.mark.parametrize(("shapes", "expected"), [
    ([[2, 3]], []),  # Sum of one input: that input
    ([[2, 3], [2, 3]], ["Add"]),
    ([[2, 1, 4], [3, 1], [4]], ["Add", "Add"]),  # each operand broadcasts differently
    ([[4], [2, 3, 4], [1, 1, 1], [3, 4]], ["Add", "Add", "Add"]),  # the output is larger than the first operand
])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_a_sum_is_a_chain_of_adds_bit_for_bit(shapes, expected, scale):
    """Left to right, as onnxruntime's Sum adds: bitwise equal at every scale, including
    inputs that cancel and overflow to infinity (QNN's quantized Sum loses channels)."""
    names = [f"x{i}" for i in range(len(shapes))]
    out = list(np.broadcast_shapes(*shapes))
    nodes = [helper.make_node("Sum", names, ["s"]), helper.make_node("Neg", ["s"], ["y"])]
    proto = make_model(nodes, [helper.make_tensor_value_info(n, F, s) for n, s in zip(names, shapes)], [helper.make_tensor_value_info("y", F, out)])
    rng = np.random.default_rng(0)
    feeds = {n: (scale * rng.standard_normal(s)).astype(np.float32) for n, s in zip(names, shapes)}
    feeds["x0"].flat[0] = 3e38  # x0 + x1 may overflow where another order would not
    model, records = assert_pass_preserves(proto, "peephole", tolerance=EXACT, feeds=feeds)
    assert [o for o in ops(model) if o != "Neg"] == expected
    assert [n.inputs[0].name for n in model.graph.nodes if n.op == "Add"][:1] == names[:1][: len(expected)]


@given(onnx_models(families=("elementwise", "reshape", "unary"), max_ops=6))
def test_sums_in_random_models_become_adds_exactly(model):
    """A Sum of one graph input into a graph output stays (its output keeps its name)."""
    rewritten, _ = assert_pass_preserves(model, "peephole", tolerance=EXACT)
    assert all(len(n.inputs) == 1 for n in rewritten.graph.nodes if n.op == "Sum")


def test_a_sandwich_whose_inner_result_is_a_graph_output_stays():
    """Reshape -> Relu -> Reshape back, the Relu's output also a graph output: its shape is kept
    (the newest hypothesis drew it through the Sum property)."""
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["r"]), helper.make_node("Relu", ["r"], ["inner"]),
             helper.make_node("Reshape", ["inner", "back"], ["closed"]), helper.make_node("Neg", ["closed"], ["y"])]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [1, 2])],
                       [helper.make_tensor_value_info("y", F, [1, 2]), helper.make_tensor_value_info("inner", F, [2])],
                       [const("flat", np.array([2], np.int64)), const("back", np.array([1, 2], np.int64))])
    model, _ = peephole(proto)
    assert ops(model).count("Reshape") == 2
