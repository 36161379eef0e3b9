"""fix-shapes (and check-static): binding dims, re-inferring, replacing Shape/Size, leftovers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import mapc
from mapc.ir import is_static, load
from mapc.ir.errors import CheckFailed, UsageError
from mapc.passes import PassContext
from mapc.passes.pipeline import PassManager
from mapc.testing import assert_pass_preserves, onnx_models
from tests.conftest import make_model

F, I64 = TensorProto.FLOAT, TensorProto.INT64
SIMPLIFY = "fixpoint(fix-shapes,fold-constants,peephole,cleanup)"


def fix(proto: onnx.ModelProto, passes: str = "fix-shapes", **shape_options) -> tuple[mapc.Model, list]:
    model = load(proto)
    ctx = PassContext(dims=shape_options.get("dims", {}), input_shapes=shape_options.get("input_shapes", {}))
    return model, PassManager(passes).run(model, ctx)


def shape_of(model: mapc.Model, name: str):
    return model.graph.tensors()[name].shape


def head_split_model() -> onnx.ModelProto:
    """x[batch, seq, 8] -> Reshape to [batch, seq, 2, 4] with the target built from Shape, as the
    TorchScript exporter writes a head split; the output dim is the exporter's auto name."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Unsqueeze", ["seq", "axes0"], ["seq1"]),
        helper.make_node("Concat", ["batch1", "seq1", "heads"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([0], np.int64), "axes0"),
        numpy_helper.from_array(np.array([2, 4], np.int64), "heads"),
    ]
    proto = make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, ["batch_size", "sequence_length", 8])],
        [helper.make_tensor_value_info("y", F, ["batch_size", "Reshapey_dim_1", 2, 4])],
        inits,
    )
    proto.graph.value_info.append(helper.make_tensor_value_info("target", I64, ["stale_dim"]))
    return proto


# -- properties ---------------------------------------------------------------------------------


@given(onnx_models(symbolic=True), st.sampled_from([1, 2, 3]))
def test_fix_shapes_preserves_random_models(model, n):
    assert_pass_preserves(model, "fix-shapes", dims={"N": n})


@given(onnx_models(families=("shape_chain", "reshape", "concat", "squeeze", "flatten", "elementwise", "constant", "slice"), symbolic=True), st.sampled_from([1, 3]))
def test_simplify_group_leaves_a_static_graph(model, n):
    """With every symbolic dim fixed, the pass group leaves no Shape/Size and no dynamic tensor."""
    rewritten, _ = assert_pass_preserves(model, SIMPLIFY + ",check-static{require=true}", dims={"N": n})
    assert not [node.op for node in rewritten.graph.nodes if node.op in ("Shape", "Size")]
    assert all(is_static(t.shape) for t in [*rewritten.graph.inputs, *rewritten.graph.outputs])


# -- binding dims -------------------------------------------------------------------------------


def test_dims_fix_inputs_outputs_and_intermediates():
    model, records = fix(head_split_model(), dims={"batch_size": 1, "sequence_length": 5})
    assert shape_of(model, "x") == [1, 5, 8]
    assert shape_of(model, "y") == [1, 5, 2, 4]  # the auto-named output dim comes from inference
    assert records[0].details["dims"] == {"batch_size": 1, "sequence_length": 5}
    assert records[0].counters["inputs_fixed"] == 1 and records[0].counters["outputs_fixed"] == 1


def test_stale_value_info_is_replaced():
    model, _ = fix(head_split_model(), dims={"batch_size": 1, "sequence_length": 5})
    assert shape_of(model, "target") == [4]


def test_shape_ops_become_constants_named_like_their_outputs():
    model, records = fix(head_split_model(), dims={"batch_size": 1, "sequence_length": 5})
    assert "Shape" not in [n.op for n in model.graph.nodes]
    assert isinstance(model.graph.tensors()["shape"], mapc.ir.gs_compat.gs.Constant)
    assert model.graph.tensors()["shape"].values.tolist() == [1, 5, 8]
    assert records[0].counters["shape_ops_replaced"] == 1


def test_whole_pipeline_folds_the_head_split_to_a_constant_reshape():
    rewritten, _ = assert_pass_preserves(head_split_model(), SIMPLIFY, dims={"batch_size": 1, "sequence_length": 5})
    assert [n.op for n in rewritten.graph.nodes] == ["Reshape"]
    assert rewritten.graph.nodes[0].inputs[1].values.tolist() == [1, 5, 2, 4]


def test_input_shape_fixes_symbols_shared_with_other_inputs():
    proto = make_model(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        [helper.make_tensor_value_info("a", F, ["batch", "seq"]), helper.make_tensor_value_info("b", F, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", F, ["batch", "seq"])],
    )
    model, records = fix(proto, input_shapes={"a": [2, 7]})
    assert shape_of(model, "b") == [2, 7] and shape_of(model, "y") == [2, 7]
    assert records[0].details["dims"] == {"batch": 2, "seq": 7}


def kv_cache_model(mask_dim: str = "past_sequence_length + sequence_length") -> onnx.ModelProto:
    """An optimum-style decoder step: the mask covers past and new tokens; present = past ++ new."""
    nodes = [
        helper.make_node("Concat", ["past_key", "key"], ["present"], axis=2),
        helper.make_node("ReduceSum", ["mask"], ["mask_sum"], keepdims=0),
    ]
    return make_model(
        nodes,
        [
            helper.make_tensor_value_info("key", F, ["batch_size", 2, "sequence_length", 4]),
            helper.make_tensor_value_info("past_key", F, ["batch_size", 2, "past_sequence_length", 4]),
            helper.make_tensor_value_info("mask", I64, ["batch_size", mask_dim]),
        ],
        [
            helper.make_tensor_value_info("present", F, ["batch_size", 2, "past_sequence_length + sequence_length", 4]),
            helper.make_tensor_value_info("mask_sum", I64, []),
        ],
    )


def test_expression_dims_are_evaluated():
    model, _ = fix(kv_cache_model(), dims={"batch_size": 1, "sequence_length": 8, "past_sequence_length": 16})
    assert shape_of(model, "mask") == [1, 24]
    assert shape_of(model, "present") == [1, 2, 24, 4]


def test_an_expression_dim_solves_for_its_one_unknown_symbol():
    model, records = fix(kv_cache_model(), input_shapes={"key": [1, 2, 8, 4], "mask": [1, 24]})
    assert records[0].details["dims"]["past_sequence_length"] == 16
    assert shape_of(model, "past_key") == [1, 2, 16, 4]


def test_kv_cache_model_keeps_its_outputs_for_the_fixed_shapes():
    assert_pass_preserves(kv_cache_model(), "fix-shapes", dims={"batch_size": 1, "sequence_length": 3, "past_sequence_length": 5})


# -- bad requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_shapes": {"nope": [1, 2]}}, "'nope' is not an input of the model (inputs: key, past_key, mask)"),
        ({"input_shapes": {"key": [1, 2, 8]}}, "has 4 dims"),
        ({"input_shapes": {"key": [1, 3, 8, 4]}}, "contradicts the model: dim 1 of 'key' is 2"),
        ({"input_shapes": {"key": [1, 2, 8, 4], "past_key": [2, 2, 8, 4]}}, "dim 'batch_size' is 2 in input past_key[0] but 1 from input key[0]"),
        ({"dims": {"sequence_length": 8}, "input_shapes": {"key": [1, 2, 9, 4]}}, "from --dim sequence_length=8"),
        ({"dims": {"batch_size": -1}}, "not a dim size"),
        ({"input_shapes": {"key": [1, 2, "x", 4]}}, "'x' is not a whole number"),
        ({"dims": {"batch_size": 1, "sequence_length": 2, "past_sequence_length": 3}, "input_shapes": {"mask": [1, 6]}}, "is 6 in input mask[1] but 5"),
    ],
)
def test_contradictory_or_malformed_requests_are_usage_errors(options, message):
    with pytest.raises(UsageError) as error:
        fix(kv_cache_model(), **options)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_initializer_is_not_an_input():
    proto = make_model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2]), helper.make_tensor_value_info("w", F, [2])],
        [helper.make_tensor_value_info("y", F, [2])],
        [numpy_helper.from_array(np.ones(2, np.float32), "w")],
    )
    with pytest.raises(UsageError, match=r"'w' is not an input of the model \(inputs: x\)"):
        fix(proto, input_shapes={"w": [2]})


def test_compile_rejects_a_dim_name_the_model_does_not_have():
    with pytest.raises(UsageError, match=r"--dim batch: no input or output dim is named 'batch' \(named dims: .*batch_size"):
        mapc.compile(kv_cache_model().SerializeToString(), dims={"batch": 1})


def test_without_shapes_or_dims_nothing_changes():
    model, records = fix(head_split_model())
    assert not records[0].changed and records[0].notes[0].code == "fix-shapes.nothing"
    assert shape_of(model, "x") == ["batch_size", "sequence_length", 8]


# -- Shape and Size ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [({}, [3, 4, 5]), ({"start": 1}, [4, 5]), ({"start": -2, "end": -1}, [4]), ({"end": 10}, [3, 4, 5]), ({"start": 2, "end": 1}, [])],
)
def test_shape_with_start_and_end(attrs, expected):
    proto = make_model(
        [helper.make_node("Shape", ["x"], ["s"], **attrs), helper.make_node("Cast", ["s"], ["y"], to=F)],
        [helper.make_tensor_value_info("x", F, ["n", 4, 5])],
        [helper.make_tensor_value_info("y", F, [None])],
    )
    model, _ = assert_pass_preserves(proto, "fix-shapes", dims={"n": 3})
    assert model.graph.tensors()["s"].values.tolist() == expected


def test_shape_reading_only_static_dims_is_replaced_while_others_stay_dynamic():
    proto = make_model(
        [helper.make_node("Shape", ["x"], ["s"], start=1), helper.make_node("Shape", ["x"], ["t"]), helper.make_node("Concat", ["s", "t"], ["y"], axis=0)],
        [helper.make_tensor_value_info("x", F, ["n", "m", 5])],
        [helper.make_tensor_value_info("y", I64, [5])],
    )
    model, _ = fix(proto, dims={"m": 4})
    assert [n.op for n in model.graph.nodes] == ["Shape", "Concat"]  # Shape(x) still reads n
    assert model.graph.tensors()["s"].values.tolist() == [4, 5]


def test_size_is_replaced():
    proto = make_model(
        [helper.make_node("Size", ["x"], ["s"]), helper.make_node("Cast", ["s"], ["f"], to=F), helper.make_node("Div", ["x", "f"], ["y"])],
        [helper.make_tensor_value_info("x", F, ["n", 3])],
        [helper.make_tensor_value_info("y", F, ["n", 3])],
    )
    model, _ = assert_pass_preserves(proto, "fix-shapes", dims={"n": 2})
    assert "Size" not in [n.op for n in model.graph.nodes]
    assert model.graph.tensors()["s"].values.tolist() == 6


# -- leftovers ----------------------------------------------------------------------------------


def nonzero_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("NonZero", ["x"], ["idx"]),
        helper.make_node("Transpose", ["idx"], ["idx_t"]),
        helper.make_node("GatherND", ["x", "idx_t"], ["picked"]),
        helper.make_node("Relu", ["z"], ["z_out"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, ["n", 3]), helper.make_tensor_value_info("z", F, ["m"])],
        [helper.make_tensor_value_info("picked", F, [None]), helper.make_tensor_value_info("z_out", F, ["m"])],
    )


def test_leftovers_name_the_op_that_stopped_inference_and_the_unfixed_dims():
    model, records = fix(nonzero_model(), dims={"n": 2})
    dynamic = {entry["tensor"]: entry for entry in records[0].details["dynamic"]}
    assert set(dynamic) == {"z", "idx", "idx_t", "picked", "z_out"}
    assert dynamic["picked"]["stopped_at"] == [{"node": "NonZero->idx", "op": "NonZero", "reason": "its output size depends on input values"}]
    assert dynamic["z_out"]["depends_on"] == ["z[0] (m)"] and dynamic["z_out"]["stopped_at"] == []
    assert records[0].counters["dynamic_tensors"] == 5


def test_check_static_reports_and_require_fails_with_one_line():
    model, records = fix(nonzero_model(), "fix-shapes,check-static", dims={"n": 2})
    codes = sorted(note.code for note in records[1].notes)
    assert codes == ["check-static.inference-stopped", "check-static.input-dim"]
    with pytest.raises(CheckFailed) as error:
        fix(nonzero_model(), "fix-shapes,check-static{require=true}", dims={"n": 2})
    message = str(error.value)
    assert "\n" not in message and "5 tensor(s) still have dynamic shapes" in message
    assert "z[0] (m)" in message and "NonZero" in message


def test_require_static_passes_on_a_fully_fixed_model():
    model, records = fix(head_split_model(), SIMPLIFY + ",check-static{require=true}", dims={"batch_size": 1, "sequence_length": 5})
    assert records[-1].details["dynamic"] == []


def test_reshape_fed_by_input_values_is_reported_as_runtime_shape():
    proto = make_model(
        [helper.make_node("Reshape", ["x", "target"], ["y"])],
        [helper.make_tensor_value_info("x", F, [6]), helper.make_tensor_value_info("target", I64, [2])],
        [helper.make_tensor_value_info("y", F, [None, None])],
    )
    model, records = fix(proto, "check-static")
    (entry,) = records[0].details["dynamic"]
    assert entry["stopped_at"][0]["reason"] == "its shape operand 'target' (input 1) is computed at run time"


def test_options_given_in_the_pipeline_text_win_over_the_compile():
    model, records = fix(kv_cache_model(), 'fix-shapes{input_shapes=["key:1,2,3,4"],dims=[past_sequence_length=2]}', dims={"sequence_length": 3})
    assert shape_of(model, "mask") == [1, 5]
