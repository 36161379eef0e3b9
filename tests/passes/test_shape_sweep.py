"""fold-constants settles shape arithmetic in one sweep: deep tf2onnx/keras2onnx chains, one round."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import load
from mapc.passes import PassContext
from mapc.passes.check_static import dynamic_tensors
from mapc.passes.pipeline import PassManager
from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model

SIMPLIFY = "fixpoint(fix-shapes,fold-constants,peephole,cleanup)"
HIDDEN = 8


def tf2onnx_chain(levels: int, opset: int = 13) -> onnx.ModelProto:
    """x[batch, seq, 8] through ``levels`` dense layers as tf2onnx writes them: flatten to
    [batch*seq, 8] with a target computed from Shape -> Cast -> Slice -> Cast -> Squeeze ->
    Unsqueeze -> Mul -> Concat, MatMul, then back to [batch, seq, 8] with the rows read by Shape
    of that MatMul's output: each level's shapes depend on the level before."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array([value], np.int64), name)
        for name, value in (("zero", 0), ("one", 1), ("two", 2), ("hidden", HIDDEN))
    ]
    nodes = []
    current = "x"
    for level in range(levels):
        p = f"l{level}_"
        inits.append(numpy_helper.from_array(rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.3, p + "w"))
        nodes += [
            helper.make_node("Shape", [current], [p + "shape"]),
            helper.make_node("Cast", [p + "shape"], [p + "shape32"], to=TensorProto.INT32),
            helper.make_node("Slice", [p + "shape32", "zero", "one", "zero"], [p + "batch32"]),
            helper.make_node("Cast", [p + "batch32"], [p + "batch64"], to=TensorProto.INT64),
            helper.make_node("Squeeze", [p + "batch64", "zero"], [p + "batch_scalar"]),
            helper.make_node("Unsqueeze", [p + "batch_scalar", "zero"], [p + "batch"]),
            helper.make_node("Slice", [p + "shape", "one", "two", "zero"], [p + "seq"]),
            helper.make_node("Mul", [p + "batch", p + "seq"], [p + "rows"]),
            helper.make_node("Concat", [p + "rows", "hidden"], [p + "flat_shape"], axis=0),
            helper.make_node("Reshape", [current, p + "flat_shape"], [p + "flat"]),
            helper.make_node("MatMul", [p + "flat", p + "w"], [p + "dense"]),
            helper.make_node("Relu", [p + "dense"], [p + "act"]),
            helper.make_node("Shape", [p + "act"], [p + "act_shape"]),
            helper.make_node("Slice", [p + "act_shape", "zero", "one", "zero"], [p + "act_rows"]),
            helper.make_node("Div", [p + "act_rows", p + "batch"], [p + "act_seq"]),
            helper.make_node("Concat", [p + "batch", p + "act_seq", "hidden"], [p + "back_shape"], axis=0),
            helper.make_node("Reshape", [p + "act", p + "back_shape"], [p + "out"]),
        ]
        current = p + "out"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        inits,
        opset=opset,
    )


def shape_ops(model) -> list[str]:
    return [n.name or n.op for n in model.graph.nodes if n.op in ("Shape", "Size")]


def test_a_40_level_chain_settles_in_the_first_round():
    rewritten, records = assert_pass_preserves(tf2onnx_chain(40), SIMPLIFY, input_shapes={"x": [2, 5, HIDDEN]})
    assert shape_ops(rewritten) == []
    assert dynamic_tensors(rewritten) == []
    assert {r.iteration for r in records} == {1, 2}  # the second round only confirms
    assert not any(r.changed for r in records if r.iteration == 2)
    fold = next(r for r in records if r.name == "fold-constants")
    assert fold.counters["shape_ops_replaced"] == 79  # all but the first, which fix-shapes replaced
    assert fold.counters["sessions"] <= 2 * 40  # one session per level of the chain, not per node


def test_one_fold_after_fixing_the_inputs_leaves_no_shape_op_and_no_dynamic_tensor():
    model = load(tf2onnx_chain(12))
    PassManager("fix-shapes,fold-constants").run(model, PassContext(input_shapes={"x": [3, 4, HIDDEN]}))
    assert shape_ops(model) == []
    assert dynamic_tensors(model) == []
    assert model.graph.tensors()["l11_out"].shape == [3, 4, HIDDEN]


def test_a_model_static_from_the_start_settles_without_fix_shapes():
    proto = tf2onnx_chain(10)
    proto.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, HIDDEN]))
    rewritten, records = assert_pass_preserves(proto, "fold-constants")
    assert shape_ops(rewritten) == []
    assert dynamic_tensors(rewritten) == []


def test_unfixed_dims_keep_their_shape_arithmetic():
    """Without shapes, Shape of a dynamic tensor stays: nothing is baked into a constant."""
    rewritten, records = assert_pass_preserves(tf2onnx_chain(3), "fold-constants")
    assert len(shape_ops(rewritten)) == 6
    assert records[0].counters["shape_ops_replaced"] == 0


def test_a_large_result_is_left_to_the_guarded_fold():
    """ConstantOfShape of a computed shape whose result exceeds what the sweep holds: the sweep
    leaves it, and the size-guarded fold decides (here: folds it, it is below max_size_mb)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["ones"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("Add", ["x", "ones"], ["y"]),
    ]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 512])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 512])])
    rewritten, records = assert_pass_preserves(proto, "fold-constants{duplicate_kb=1}")
    assert [n.op for n in rewritten.graph.nodes] == ["Add"]
    assert records[0].counters["shape_ops_replaced"] == 1


def test_a_node_onnxruntime_cannot_evaluate_stays_with_its_readers():
    """A Cast onnxruntime refuses (string to int64 of a non-number) stops the sweep there only."""
    nodes = [
        helper.make_node("Cast", ["word"], ["number"], to=TensorProto.INT64),
        helper.make_node("Add", ["number", "one"], ["bumped"]),
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Reshape", ["x", "flat"], ["y"]),
        helper.make_node("Add", ["s", "bumped"], ["z"]),
    ]
    inits = [
        helper.make_tensor("word", TensorProto.STRING, [1], [b"not a number"]),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
    ]
    proto = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6]), helper.make_tensor_value_info("z", TensorProto.INT64, [2])], inits)
    model = load(proto)
    record = PassManager("fold-constants").run(model, PassContext())[0]
    assert sorted(n.op for n in model.graph.nodes) == ["Add", "Add", "Cast", "Reshape"]
    assert record.counters["eval_failed"] == 1 and record.counters["shape_ops_replaced"] == 1
    assert [n.code for n in record.notes] == ["fold-constants.eval-failed"]


# -- properties ---------------------------------------------------------------------------------

SHAPE_FAMILIES = ("shape_chain", "reshape", "squeeze", "flatten", "concat", "slice", "elementwise", "constant")


@settings(max_examples=60)  # each example runs the passes three times on a 14-op model
@given(onnx_models(families=SHAPE_FAMILIES, max_ops=14, symbolic=True), st.sampled_from([1, 3]))
def test_one_round_settles_random_shape_arithmetic(model, n):
    """fix-shapes then fold-constants once: no Shape/Size and no dynamic tensor left, outputs
    unchanged, and a second run finds nothing more (assert_pass_preserves's idempotence)."""
    rewritten, _ = assert_pass_preserves(model, "fix-shapes,fold-constants", dims={"N": n})
    assert shape_ops(rewritten) == []
    assert dynamic_tensors(rewritten) == []


@settings(max_examples=60)
@given(onnx_models(families=SHAPE_FAMILIES, max_ops=14, symbolic=False))
def test_one_fold_settles_random_static_models(model):
    rewritten, _ = assert_pass_preserves(model, "fold-constants")
    assert shape_ops(rewritten) == []
    assert not [n for n in rewritten.graph.nodes if all(isinstance(t, gs.Constant) for t in n.inputs) and n.inputs and n.op != "Identity"]
