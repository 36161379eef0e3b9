"""fold-constants: every op family it must fold, batching and failures, guards, weights left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import given
from onnx import TensorProto, helper, numpy_helper

import mapc
from mapc.ir import is_lazy, load
from mapc.passes import PassContext
from mapc.passes.pipeline import PassManager
from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def island(nodes, result: str, initializers, result_type=F, result_shape=(2, 3)) -> onnx.ModelProto:
    """A constant subgraph computing ``result``, added to graph input x (so it must stay exact)."""
    cast = [helper.make_node("Cast", [result], ["as_float"], to=F)] if result_type != F else []
    operand = "as_float" if cast else result
    return make_model(
        [*nodes, *cast, helper.make_node("Add", ["x", operand], ["y"])],
        [helper.make_tensor_value_info("x", F, list(result_shape))],
        [helper.make_tensor_value_info("y", F, list(result_shape))],
        initializers,
    )


def fold(proto: onnx.ModelProto, passes: str = "fold-constants", exact: bool = True) -> tuple[mapc.Model, dict[str, int], list]:
    """Fold and check; ``exact``: outputs must be bitwise equal (folding evaluates the same ops)."""
    tolerance = mapc.ir.compare.Tolerance(0.0, 0.0) if exact else None
    model, records = assert_pass_preserves(proto, passes, tolerance=tolerance)
    return model, records[0].counters, records[0].notes


def ops(model: mapc.Model) -> list[str]:
    return [n.op for n in model.graph.nodes]


# -- properties ---------------------------------------------------------------------------------


@given(onnx_models(families=("constant", "shape_chain", "elementwise", "reshape", "cast", "where", "concat", "slice", "squeeze", "split")))
def test_fold_preserves_random_models(model):
    assert_pass_preserves(model, "fold-constants")


@given(onnx_models(families=("constant", "shape_chain", "elementwise", "unary", "where"), symbolic=False))
def test_fold_leaves_no_all_constant_node(model):
    rewritten, _ = assert_pass_preserves(model, "fold-constants,cleanup")  # cleanup: dead constant branches
    outputs = {t.name for t in rewritten.graph.outputs}
    for node in rewritten.graph.nodes:
        reads = [t for t in node.inputs if not t.is_empty()]
        if node.op == "Identity" and node.outputs[0].name in outputs:
            continue  # a constant graph output is Identity(initializer), which keeps its name
        assert not reads or not all(isinstance(t, gs.Constant) for t in reads), node


# -- every op family ------------------------------------------------------------------------------

CASES = {
    "Range": ([helper.make_node("Range", ["start", "limit", "delta"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["c"])],
              [const("start", np.float32(0)), const("limit", np.float32(3)), const("delta", np.float32(0.5)), const("shape", np.array([2, 3]))], F),
    "ConstantOfShape": ([helper.make_node("ConstantOfShape", ["shape"], ["c"], value=helper.make_tensor("v", F, [1], [2.5]))], [const("shape", np.array([2, 3]))], F),
    "Expand": ([helper.make_node("Expand", ["row", "shape"], ["c"])], [const("row", np.arange(3, dtype=np.float32)), const("shape", np.array([2, 3]))], F),
    "Trilu": ([helper.make_node("Trilu", ["m"], ["c"], upper=1)], [const("m", np.arange(6, dtype=np.float32).reshape(2, 3))], F),
    "Where": ([helper.make_node("Where", ["cond", "a", "b"], ["c"])], [const("cond", np.array([[True, False, True]])), const("a", np.ones((2, 3), np.float32)), const("b", np.float32(-3.4e38))], F),
    "comparisons": ([helper.make_node("LessOrEqual", ["i", "j"], ["le"]), helper.make_node("Greater", ["i", "j"], ["gt"]), helper.make_node("Equal", ["le", "gt"], ["c"])],
                    [const("i", np.arange(3).reshape(1, 3)), const("j", np.arange(2).reshape(2, 1))], B),
    "boolean": ([helper.make_node("And", ["p", "q"], ["a"]), helper.make_node("Or", ["a", "q"], ["o"]), helper.make_node("Xor", ["o", "p"], ["x1"]), helper.make_node("Not", ["x1"], ["c"])],
                [const("p", np.array([[True, False, True], [False, False, True]])), const("q", np.array([True, True, False]))], B),
    "Gather": ([helper.make_node("Gather", ["table", "idx"], ["c"], axis=0)], [const("table", np.arange(12, dtype=np.float32).reshape(4, 3)), const("idx", np.array([3, 1]))], F),
    "GatherND": ([helper.make_node("GatherND", ["table", "idx"], ["c"])], [const("table", np.arange(12, dtype=np.float32).reshape(4, 3)), const("idx", np.array([[2], [0]]))], F),
    "ScatterND": ([helper.make_node("ScatterND", ["data", "idx", "upd"], ["c"])],
                  [const("data", np.zeros((2, 3), np.float32)), const("idx", np.array([[1, 2], [0, 0]])), const("upd", np.array([5.0, 7.0], np.float32))], F),
    "Cast": ([helper.make_node("Cast", ["i"], ["c"], to=F)], [const("i", np.arange(6).reshape(2, 3))], F),
    "Shape of a constant": ([helper.make_node("Shape", ["w"], ["s"]), helper.make_node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", F, [1], [1.0]))],
                            [const("w", np.zeros((2, 3), np.float32))], F),
    "Constant node": ([helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.full((2, 3), 4.0, np.float32)))], [], F),
    "Constant value_floats": ([helper.make_node("Constant", [], ["k"], value_floats=[1.0, 2.0, 3.0]), helper.make_node("Expand", ["k", "shape"], ["c"])], [const("shape", np.array([2, 3]))], F),
    "If with constant inputs": (
        [helper.make_node("If", ["flag"], ["c"],
                          then_branch=helper.make_graph([helper.make_node("Add", ["a", "a"], ["t"])], "then", [], [helper.make_tensor_value_info("t", F, [2, 3])]),
                          else_branch=helper.make_graph([helper.make_node("Neg", ["a"], ["e"])], "else", [], [helper.make_tensor_value_info("e", F, [2, 3])]))],
        [const("flag", np.array(True)), const("a", np.ones((2, 3), np.float32))], F),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_folds(case):
    nodes, initializers, result_type = CASES[case]
    model, counters, _ = fold(island(nodes, "c", initializers, result_type))
    assert ops(model) == ["Add"]
    assert counters["nodes_folded"] == len(nodes) + (result_type != F)


def test_shape_of_a_static_variable_is_answered_from_its_shape():
    proto = make_model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Shape", ["r"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, [2, 3])],
    )
    model, counters, _ = fold(proto, "fold-constants,cleanup")  # cleanup removes the Relu nobody reads now
    assert ops(model) == ["Reshape"] and counters["shape_ops_replaced"] == 1 and counters["sessions"] == 0


def test_a_whole_constant_subgraph_becomes_one_initializer_named_like_its_result():
    nodes = [
        helper.make_node("Range", ["zero", "n", "one"], ["row"]),
        helper.make_node("Unsqueeze", ["row", "ax0"], ["q"]),
        helper.make_node("Unsqueeze", ["row", "ax1"], ["k"]),
        helper.make_node("LessOrEqual", ["q", "k"], ["causal"]),
        helper.make_node("Where", ["causal", "zero_f", "min_f"], ["mask"]),
    ]
    inits = [const("zero", np.int64(0)), const("n", np.int64(3)), const("one", np.int64(1)), const("ax0", [0]), const("ax1", [1]),
             const("zero_f", np.float32(0)), const("min_f", np.float32(np.finfo(np.float32).min))]
    proto = island(nodes, "mask", inits, result_shape=(3, 3))
    model, counters, _ = fold(proto)
    (add,) = model.graph.nodes
    assert add.inputs[1].name == "mask" and isinstance(add.inputs[1], gs.Constant)
    assert counters["nodes_folded"] == 5 and counters["constants_created"] == 1 and counters["sessions"] == 1


def test_many_constant_subgraphs_share_one_session():
    nodes, inits, terms = [], [], []
    for index in range(20):
        nodes.append(helper.make_node("Neg", [f"w{index}"], [f"n{index}"]))
        inits.append(const(f"w{index}", np.full((2, 3), index, np.float32)))
        terms.append(f"n{index}")
    nodes.append(helper.make_node("Sum", ["x", *terms], ["y"]))
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [2, 3])], [helper.make_tensor_value_info("y", F, [2, 3])], inits)
    model, counters, _ = fold(proto)
    assert counters["nodes_folded"] == 20 and counters["sessions"] == 1


def test_a_folded_graph_output_keeps_its_name():
    proto = make_model(
        [helper.make_node("Neg", ["w"], ["out"]), helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, [2]), helper.make_tensor_value_info("out", F, [2])],
        [const("w", np.ones(2, np.float32))],
    )
    model, _, _ = fold(proto)
    assert [t.name for t in model.graph.outputs] == ["y", "out"]
    assert sorted(ops(model)) == ["Identity", "Relu"]


# -- what is never folded -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "initializers"),
    [
        (helper.make_node("RandomNormalLike", ["w"], ["c"]), [const("w", np.zeros((2, 3), np.float32))]),
        (helper.make_node("DequantizeLinear", ["q", "scale"], ["c"]), [const("q", np.ones((2, 3), np.int8)), const("scale", np.float32(0.5))]),
    ],
    ids=["random", "dequantize"],
)
def test_never_folded(node, initializers):
    proto = island([node], "c", initializers)
    model = load(proto)
    PassManager("fold-constants").run(model, PassContext())
    assert node.op_type in ops(model)


# -- failures: bisect and carry on -----------------------------------------------------------------


def failing_model() -> onnx.ModelProto:
    """Three independent constant chains; the middle one holds a Gather onnxruntime refuses
    (index out of range), fed by a foldable Neg and feeding a Relu."""
    nodes = [
        helper.make_node("Neg", ["a"], ["a1"]),
        helper.make_node("Neg", ["b"], ["b1"]),
        helper.make_node("Gather", ["b1", "bad"], ["b2"], axis=0, name="bad_gather"),
        helper.make_node("Relu", ["b2"], ["b3"]),
        helper.make_node("Neg", ["c"], ["c1"]),
        helper.make_node("Sum", ["x", "a1", "c1"], ["y"]),
        helper.make_node("Identity", ["b3"], ["z"]),
    ]
    inits = [const("a", np.ones(3, np.float32)), const("b", np.ones(3, np.float32)), const("bad", np.array([7])), const("c", np.ones(3, np.float32))]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, [3])],
        [helper.make_tensor_value_info("y", F, [3]), helper.make_tensor_value_info("z", F, [1])],
        inits,
    )


def test_a_node_onnxruntime_cannot_evaluate_stays_and_the_rest_folds():
    model = load(failing_model())
    ctx = PassContext()
    (record,) = PassManager("fold-constants").run(model, ctx)
    assert ops(model) == ["Gather", "Relu", "Sum", "Identity"]
    gather = model.graph.nodes[0]
    assert isinstance(gather.inputs[0], gs.Constant) and gather.inputs[0].values.tolist() == [-1, -1, -1]  # b1 folded
    (note,) = record.notes
    assert note.code == "fold-constants.eval-failed" and note.node == "bad_gather" and note.severity == "warning"
    assert record.counters["eval_failed"] == 1 and record.counters["nodes_folded"] == 3
    (again,) = PassManager("fold-constants").run(model, ctx)
    assert not again.changed and again.counters["sessions"] == 0 and not again.notes  # not retried in the same compile


# -- size guard and weights -------------------------------------------------------------------------


def big_expand(mb: int) -> onnx.ModelProto:
    rows = mb * (1 << 20) // 4 // 256
    nodes = [helper.make_node("Expand", ["row", "shape"], ["big"]), helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0), helper.make_node("Add", ["x", "s"], ["y"])]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, [256])],
        [helper.make_tensor_value_info("y", F, [256])],
        [const("row", np.ones(256, np.float32)), const("shape", np.array([rows, 256]))],
    )


def test_a_large_intermediate_inside_a_subgraph_is_not_materialised():
    model = load(big_expand(32))
    (record,) = PassManager("fold-constants").run(model, PassContext())
    assert ops(model) == ["Expand", "ReduceSum", "Add"]  # Expand's 32 MB result is above the guard
    assert record.counters["kept_too_large"] == 1 and record.notes[0].code == "fold-constants.too-large"


def test_the_size_guard_is_an_option():
    model = load(big_expand(32))
    PassManager("fold-constants{max_size_mb=64}").run(model, PassContext())
    assert ops(model) == ["Add"]


def weight_model(weight_elements: int, shared: bool) -> onnx.ModelProto:
    w = np.arange(weight_elements, dtype=np.float32).reshape(-1, 4)
    nodes = [helper.make_node("Transpose", ["w"], ["wt"]), helper.make_node("MatMul", ["x", "wt"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", F, [1, w.shape[0]])]
    if shared:
        nodes.append(helper.make_node("MatMul", ["x2", "w"], ["y2"]))
        outputs.append(helper.make_tensor_value_info("y2", F, [1, 4]))
    inputs = [helper.make_tensor_value_info("x", F, [1, 4]), helper.make_tensor_value_info("x2", F, [1, w.shape[0]])][: 1 + shared]
    return make_model(nodes, inputs, outputs, [const("w", w)])


def test_a_weight_transposed_once_is_replaced_even_above_the_size_guard():
    model = load(weight_model(4 * (1 << 20) + 4, shared=False))  # 16 MB + 16 bytes
    (record,) = PassManager("fold-constants").run(model, PassContext())
    assert ops(model) == ["MatMul"] and record.counters["nodes_folded"] == 1


def test_a_shared_weight_is_not_duplicated():
    model = load(weight_model(1 << 16, shared=True))  # 256 KB, read by Transpose and MatMul
    (record,) = PassManager("fold-constants").run(model, PassContext())
    assert ops(model) == ["Transpose", "MatMul", "MatMul"]
    assert record.counters["kept_shared_weight"] == 1 and record.notes[0].code == "fold-constants.shared-weight"


def test_a_small_shared_weight_may_be_duplicated():
    model, counters, _ = fold(weight_model(64, shared=True), exact=False)  # MatMul may round differently on a constant B
    assert ops(model) == ["MatMul", "MatMul"]
    w = model.graph.tensors()["w"].values
    assert np.array_equal(model.graph.tensors()["wt"].values, w.T)


def test_weights_are_not_read_unless_a_foldable_node_consumes_them(tmp_path):
    big = np.arange(1 << 16, dtype=np.float32).reshape(-1, 16)
    nodes = [
        helper.make_node("Shape", ["w"], ["s"]),
        helper.make_node("Transpose", ["w"], ["w_t"]),
        helper.make_node("MatMul", ["x", "w_t"], ["m"]),
        helper.make_node("Gather", ["s", "zero"], ["rows"]),
        helper.make_node("Unsqueeze", ["rows", "ax"], ["rows1"]),
        helper.make_node("Concat", ["one", "rows1"], ["s2"], axis=0),
        helper.make_node("Reshape", ["m", "s2"], ["y"]),
        helper.make_node("MatMul", ["x", "other_t"], ["y2"]),
    ]
    other = np.ones((16, 5), np.float32)
    proto = make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, [1, 16])],
        [helper.make_tensor_value_info("y", F, [1, big.shape[0]]), helper.make_tensor_value_info("y2", F, [1, 5])],
        [const("w", big), const("other_t", other), const("zero", np.int64(0)), const("ax", [0]), const("one", [1])],
    )
    onnx.save_model(proto, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="m.data", size_threshold=1024)
    model = load(tmp_path / "m.onnx")
    PassManager("fold-constants").run(model, PassContext())
    tensors = model.graph.tensors()
    assert is_lazy(tensors["other_t"])  # read by a MatMul only: never loaded
    assert ops(model) == ["MatMul", "Reshape", "MatMul"]  # Shape(w) answered from w's shape; Transpose(w) replaced w


# -- If with a constant condition ----------------------------------------------------------------


@pytest.mark.parametrize(("flag", "expected"), [(True, ["Relu", "Add"]), (False, ["Neg", "Add"])])
def test_an_if_with_a_constant_condition_becomes_its_branch(flag, expected):
    """The branch reads x from the outer scope, so only the If can be inlined, not evaluated."""
    then_branch = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", F, [3])])
    else_branch = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "else", [], [helper.make_tensor_value_info("y", F, [3])])
    nodes = [helper.make_node("If", ["flag"], ["branch"], then_branch=then_branch, else_branch=else_branch, name="if"),
             helper.make_node("Add", ["branch", "x"], ["y"])]  # "y" is also a name inside the else branch
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [3])], [helper.make_tensor_value_info("y", F, [3])], [const("flag", np.array(flag))])
    model, counters, _ = fold(proto)
    assert ops(model) == expected and counters["ifs_inlined"] == 1
    assert model.graph.outputs[0].name == "y"
    x = model.graph.inputs[0]
    assert [n.op for n in x.outputs] == expected, "the branch not taken must not still read x"


def test_an_if_with_a_computed_condition_stays():
    branch = lambda op: helper.make_graph([helper.make_node(op, ["x"], ["o"])], op, [], [helper.make_tensor_value_info("o", F, [3])])  # noqa: E731
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=branch("Relu"), else_branch=branch("Neg"))]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", F, [3])], [helper.make_tensor_value_info("y", F, [3])], [const("zero", np.float32(0))])
    model, counters, _ = fold(proto)
    assert "If" in ops(model) and counters["ifs_inlined"] == 0


# -- custom domains ------------------------------------------------------------------------------------


def test_onnxruntime_contrib_ops_fold_and_unknown_domains_are_left_alone():
    """Load refuses a domain nobody defines; one that appears later (a target's lowering writes
    nodes of its own domain) is never evaluated."""
    nodes = [
        helper.make_node("Gelu", ["w"], ["g"], domain="com.microsoft"),
        helper.make_node("Neg", ["w"], ["f"], name="frob"),
        helper.make_node("Add", ["g", "f"], ["y"]),
    ]
    proto = make_model(nodes, [], [helper.make_tensor_value_info("y", F, [3])], [const("w", np.array([-1.0, 0.0, 2.0], np.float32))])
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    model = load(proto)
    frob = next(n for n in model.graph.nodes if n.name == "frob")
    frob.op, frob.domain = "Frobnicate", "my.ops"
    model.opset_imports["my.ops"] = 1
    (record,) = PassManager("fold-constants").run(model, PassContext())
    assert ops(model) == ["Frobnicate", "Add"] and not record.notes
    gelu = model.graph.tensors()["g"].values
    assert np.allclose(gelu, [-0.15865526, 0.0, 1.9544997])
