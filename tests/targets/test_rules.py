"""Every constraint rule: a node it accepts, a node it refuses, and the text the user reads."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from mapc.targets import constraints_for
from mapc.targets.rules import constraint
from tests.targets.helpers import (
    CPU,
    ETHOS,
    NPU,
    codes,
    const,
    info,
    qdq_pair,
    reasons_for,
    toy_target,
)

F, I64, I8 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT8


def relu(shape, dtype=F):
    return helper.make_node("Relu", ["x"], ["y"], name="n"), [info("x", shape, dtype)], [info("y", shape, dtype)], []


def conv(kernel=(3, 3), channels=4, out_channels=4, image=(8, 8), group=1, **attrs):
    weight = const("w", np.zeros((out_channels, channels // group, *kernel)))
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="n", kernel_shape=list(kernel), group=group, **attrs)
    return node, [info("x", [1, channels, *image])], [info("y", 4)], [weight]


def conv_transpose(strides):
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="n", kernel_shape=[2, 2], strides=list(strides))
    return node, [info("x", [1, 2, 4, 4])], [info("y", 4)], [const("w", np.zeros((2, 2, 2, 2)))]


def pool(op="MaxPool", kernel=(2, 2), **attrs):
    node = helper.make_node(op, ["x"], ["y"], name="n", kernel_shape=list(kernel), **attrs)
    return node, [info("x", [1, 2, 300, 300])], [info("y", 4)], []


def check(case, target, expected_code, fragment=None, **kwargs):
    node, inputs, outputs, initializers = case
    found = reasons_for(node, inputs, outputs, initializers, target=target, **kwargs)
    if expected_code is None:
        assert found == [], found
        return None
    assert expected_code in codes(found), found
    reason = next(r for r in found if r.code == expected_code)
    if fragment is not None:
        assert fragment in reason.message, reason.message
    return reason


# -- generic rules --------------------------------------------------------------------------------


def test_listed_op_is_accepted_and_unlisted_op_refused_with_its_name():
    check(relu([1, 4]), NPU, None)
    node = helper.make_node("Sin", ["x"], ["y"], name="n")
    reason = check((node, [info("x", [2])], [info("y", [2])], []), NPU, "op.not-supported", "Sin is not one of them")
    assert reason.fix is None


def test_unsupported_erf_suggests_gelu_fusion():
    node = helper.make_node("Erf", ["x"], ["y"], name="n")
    reason = check((node, [info("x", [2])], [info("y", [2])], []), NPU, "op.not-supported")
    assert "Gelu" in reason.fix


def test_control_flow_is_refused_on_accelerators():
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["b"])], "b", [], [info("b", [2])])
    node = helper.make_node("If", ["c"], ["y"], name="n", then_branch=branch, else_branch=branch)
    reason = check((node, [info("c", [], TensorProto.BOOL), info("x", [2])], [info("y", [2])], []), NPU, "op.control-flow")
    assert "runs on the host" in reason.message


def test_static_shapes_rule_names_the_input_and_suggests_input_shape():
    check(relu([1, 4]), NPU, None)
    reason = check(relu(["N", 4]), NPU, "shape.static", "input 'x' has dims [N, 4]")
    assert reason.fix == "fix the input shapes: --input-shape x:<N>,4"


def test_unknown_and_partly_known_shapes_are_not_static():
    from mapc.ir import load
    from mapc.targets.rules import evaluate
    from mapc.targets.views import view_model

    # a contrib op neither onnx's nor onnxruntime's shape inference knows
    custom = helper.make_node("Inverse", ["x"], ["f"], name="custom", domain="com.microsoft")
    node = helper.make_node("Relu", ["f"], ["y"], name="n")
    graph = helper.make_graph([custom, node], "g", [info("x", [2, 2])], [info("y", 2)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)], ir_version=10)
    model_view = view_model(load(proto))
    reasons = evaluate(model_view.nodes[1], NPU, constraints_for(NPU))
    assert "input 'f' has an unknown shape" in next(r.message for r in reasons if r.code == "shape.static")
    reshape = helper.make_node("Reshape", ["x", "s"], ["r"], name="reshape")
    relu_node = helper.make_node("Relu", ["r"], ["y"], name="n")
    check((relu_node, [info("x", [6]), info("s", [2], I64)], [info("y", 2)], []), NPU, "shape.static", "input 'r' has dims [?, ?]", extra_nodes=[reshape])


def test_dynamic_shapes_pass_on_a_target_without_the_requirement():
    check(relu(["N", 4]), toy_target(["Relu"]), None)


def test_rank_limit():
    check(relu([1, 2, 3, 4]), NPU, None)
    check(relu([1, 2, 3, 4, 5]), NPU, "tensor.rank", "input 'x' has rank 5")


def test_dim_limit():
    check(relu([65535]), NPU, None)
    check(relu([65536]), NPU, "tensor.dims", "input 'x' has dims [65536]")
    check(relu([0, 3]), NPU, "tensor.dims", "[0, 3]")


def test_batch_limit_on_ethos():
    case = lambda batch: (  # noqa: E731
        helper.make_node("Relu", ["x"], ["y"], name="n"), [info("x", [batch, 2, 3], I8)], [info("y", [batch, 2, 3], I8)], []
    )
    check(case(1), ETHOS, None)
    reason = check(case(2), ETHOS, "tensor.batch", "input 'x' has batch 2")
    assert reason.fix.startswith("fix the batch size to 1: --input-shape NAME:1,")


def test_float32_is_computed_as_float16_on_npu_but_refused_on_ethos():
    check(relu([2, 2]), NPU, None)
    reason = check(relu([2, 2]), ETHOS, "dtype.data", "input 'x' is float32")
    assert "quantize" in reason.fix
    check(relu([2, 2], I8), ETHOS, None)


def test_int64_compute_is_refused_and_shape_arithmetic_points_at_folding():
    node = helper.make_node("Add", ["x", "x"], ["y"], name="n")
    check((node, [info("x", [2], I64)], [info("y", [2], I64)], []), NPU, "dtype.data", "input 'x' is int64")
    cast = helper.make_node("Cast", ["x"], ["y"], name="n", to=I64)
    reason = check((cast, [info("x", ["n"])], [info("y", ["n"], I64)], []), NPU, "dtype.data", "output 'y' is int64")
    assert "fold" in reason.fix and "--input-shape" in reason.fix


def test_int64_compute_with_static_shapes_does_not_ask_for_shapes_again():
    """Issue 16: a fix hint must never repeat what the user already did. With every shape static
    the int64 values come from an input's data (an attention mask), not from shapes."""
    cast = helper.make_node("Cast", ["x"], ["y"], name="n", to=I64)
    reason = check((cast, [info("x", [2])], [info("y", [2], I64)], []), NPU, "dtype.data", "output 'y' is int64")
    assert "--input-shape" not in reason.fix and "--mask-as-input" in reason.fix


def test_qdq_op_counts_as_its_quantized_type():
    """An op between DequantizeLinear and QuantizeLinear computes on int8, which ethos accepts."""
    dq_nodes, dq_consts, x_dq = qdq_pair("x")
    node = helper.make_node("Relu", [x_dq], ["r"], name="n")
    q_nodes, q_consts, _ = qdq_pair("r")
    found = reasons_for(node, [info("x", [1, 4])], [info("r_dq", [1, 4])], dq_consts + q_consts, target=ETHOS, extra_nodes=dq_nodes, after_nodes=q_nodes)
    assert found == []
    # the float quantization of the graph input itself stays on the CPU of an int8-only NPU
    found = reasons_for(dq_nodes[0], [info("x", [1, 4])], [info("x_dq", [1, 4])], dq_consts, target=ETHOS, after_nodes=dq_nodes[1:])
    assert "dtype.data" in codes(found)


def test_int32_bias_follows_the_bias_dtypes():
    weight = const("w", np.zeros((4, 4, 1, 1)))
    bias = const("b", np.zeros(4), np.int32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="n")
    check((node, [info("x", [1, 4, 2, 2])], [info("y", 4)], [weight, bias]), NPU, None, validated=False)
    custom = NPU.replace(tensors=NPU.tensors.__class__(**{**vars(NPU.tensors), "bias_dtypes": frozenset({"float16"})}))
    check((node, [info("x", [1, 4, 2, 2])], [info("y", 4)], [weight, bias]), custom, "dtype.data", "bias 'b' is int32", validated=False)


def test_parameters_must_be_constant():
    constant = helper.make_node("Reshape", ["x", "shape"], ["y"], name="n")
    check((constant, [info("x", [2, 3])], [info("y", [3, 2])], [const("shape", [3, 2], np.int64)]), NPU, None)
    runtime = helper.make_node("Reshape", ["x", "s"], ["y"], name="n")
    reason = check(
        (runtime, [info("x", ["n", 3]), info("s", [2], I64)], [info("y", 2)], []), NPU, "params.constant", "input 1 ('s') is computed at run time"
    )
    assert "fold-constants" in reason.fix and "--input-shape" in reason.fix


def test_with_static_inputs_a_runtime_shape_operand_names_itself_not_the_input_shapes():
    """Issue 16: the inputs are static, so the fix names where shape inference stops (this
    Reshape reads its target from an input's data), never --input-shape again."""
    runtime = helper.make_node("Reshape", ["x", "s"], ["y"], name="n")
    reason = check((runtime, [info("x", [2, 3]), info("s", [2], I64)], [info("y", 2)], []), NPU, "params.constant")
    assert "--input-shape" not in reason.fix
    assert reason.fix.startswith("the input shapes are already static; shape inference stops at Reshape 'n': its shape operand 's' (input 1)")


def test_a_shape_op_behind_a_data_dependent_op_names_that_op_when_inputs_are_static():
    """A Shape that stays although every input is static: NonZero's output size depends on the
    input's values. The hint names NonZero, for every rule that refuses the Shape."""
    nonzero = helper.make_node("NonZero", ["x"], ["nz"], name="nonzero")
    shape = helper.make_node("Shape", ["nz"], ["s"], name="n")
    found = reasons_for(shape, [info("x", [2, 3])], [info("s", [2], I64)], [], target=NPU, extra_nodes=[nonzero])
    fixes = {r.code: r.fix for r in found}
    assert "op.not-supported" in fixes
    for fix in fixes.values():
        if fix is not None:
            assert "--input-shape" not in fix and "NonZero 'nonzero': its output size depends on input values" in fix, fix


def test_a_shape_op_of_a_static_tensor_says_fold_constants_replaces_it():
    shape = helper.make_node("Shape", ["x"], ["s"], name="n")
    reason = check((shape, [info("x", [2, 3])], [info("s", [2], I64)], []), NPU, "op.not-supported")
    assert reason.fix == "its input's shape is static: fold-constants replaces it by a constant (the default pipeline runs it)"
    symbolic = check((shape, [info("x", ["n", 3])], [info("s", [2], I64)], []), NPU, "op.not-supported")
    assert "--input-shape" in symbolic.fix


def test_embedding_gather_has_no_fix():
    node = helper.make_node("Gather", ["table", "ids"], ["y"], name="n")
    reason = check((node, [info("ids", [1, 4], I64)], [info("y", [1, 4, 8])], [const("table", np.zeros((10, 8)))]), NPU, "params.constant")
    assert reason.fix is None


def test_conv_weights_must_be_constant_also_behind_dequantize():
    runtime = helper.make_node("Conv", ["x", "w"], ["y"], name="n")
    check((runtime, [info("x", [1, 2, 4, 4]), info("w", [2, 2, 1, 1])], [info("y", 4)], []), NPU, "weights.constant", "input 1 ('w') is computed at run time")
    dequantize = helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], name="dq")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="n")
    initializers = [const("wq", np.zeros((2, 2, 1, 1)), np.int8), const("ws", 0.1)]
    check((node, [info("x", [1, 2, 4, 4])], [info("y", 4)], initializers), NPU, None, extra_nodes=[dequantize])


def test_matmul_of_two_activations_is_refused_on_ethos_only():
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="n")
    case = (node, [info("a", [2, 3], I8), info("b", [3, 2], I8)], [info("y", [2, 2], I8)], [])
    check(case, ETHOS, "matmul.constant-weights", "operand 'b' is computed at run time", validated=False)
    node_npu = helper.make_node("MatMul", ["a", "b"], ["y"], name="n")
    check((node_npu, [info("a", [2, 3]), info("b", [3, 2])], [info("y", [2, 2])], []), NPU, None)
    weights = helper.make_node("MatMul", ["a", "w"], ["y"], name="n")
    check((weights, [info("a", [2, 3], I8)], [info("y", [2, 2], I8)], [const("w", np.zeros((3, 2)), np.int8)]), ETHOS, None, validated=False)


def test_forced_cpu_ops_are_a_reason_of_their_own():
    from mapc.ir import load
    from mapc.targets import check_support
    from mapc.targets.views import view_model
    from tests.conftest import make_model

    node, inputs, outputs, _ = relu([1, 2])
    verdicts = check_support(view_model(load(make_model([node], inputs, outputs))), NPU, cpu_ops=["Relu"])
    assert codes(verdicts[0].reasons) == ["user.cpu-ops"]
    assert "--cpu-ops" in verdicts[0].reasons[0].message


# -- convolution and pooling ----------------------------------------------------------------------


def test_conv_spatial_dims():
    weight = const("w", np.zeros((2, 2, 1, 1, 1)))
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="n")
    check((node, [info("x", [1, 2, 2, 2, 2])], [info("y", 5)], [weight]), toy_target(["Conv"], conv=NPU.conv), "conv.spatial-dims", "the kernel is 3-D (1x1x1)")


def test_conv_kernel_height_counts_dilation():
    check(conv(kernel=(64, 1), image=(70, 4)), ETHOS.replace(tensors=NPU.tensors), None)
    relaxed = ETHOS.replace(tensors=NPU.tensors)
    check(conv(kernel=(65, 1), image=(70, 4)), relaxed, "conv.kernel-height", "the dilated kernel height is 65")
    check(conv(kernel=(33, 1), image=(70, 4), dilations=[2, 1]), relaxed, "conv.kernel-height", "the dilated kernel height is 65")


def test_conv_kernel_width_and_area():
    check(conv(kernel=(1, 33), image=(4, 40)), NPU, "conv.kernel-width", "the dilated kernel width is 33")
    relaxed = ETHOS.replace(tensors=NPU.tensors)
    check(conv(kernel=(64, 64), image=(70, 70)), relaxed, None)
    check(conv(kernel=(64, 65), image=(70, 70)), relaxed, "conv.kernel-area", "the kernel is 64x65 = 4160")


def test_conv_strides():
    relaxed = ETHOS.replace(tensors=NPU.tensors)
    check(conv(strides=[3, 3]), relaxed, None)
    check(conv(strides=[4, 4]), relaxed, "conv.stride", "strides are 4x4")


def test_conv_transpose_strides():
    relaxed = ETHOS.replace(tensors=NPU.tensors)
    check(conv_transpose([2, 2]), relaxed, None)
    check(conv_transpose([3, 3]), relaxed, "conv.transpose-stride", "strides are 3x3")


def test_conv_dilation():
    relaxed = ETHOS.replace(tensors=NPU.tensors)
    check(conv(kernel=(2, 2), dilations=[2, 2]), relaxed, None)
    check(conv(kernel=(2, 2), dilations=[3, 3]), relaxed, "conv.dilation", "dilations are 3x3")


def test_conv_channels():
    check(conv(kernel=(1, 1), channels=8192, out_channels=1, image=(1, 1)), NPU, None)
    check(conv(kernel=(1, 1), channels=8193, out_channels=1, image=(1, 1)), NPU, "conv.channels", "input has 8193 channels")


def test_conv_groups_must_be_ordinary_or_depthwise_on_ethos():
    relaxed = ETHOS.replace(tensors=NPU.tensors)
    check(conv(channels=4, group=4), relaxed, None)
    check(conv(channels=4, group=2), relaxed, "conv.groups", "group is 2 for 4 input channels")
    check(conv(channels=4, group=2), NPU, None)


def test_pool_kernel_height_area_and_stride():
    check(pool(kernel=(8, 8)), NPU, None)
    check(pool(kernel=(9, 1)), NPU, "pool.kernel-height", "the kernel height is 9")
    check(pool(kernel=(1, 65)), NPU, "pool.kernel-area", "the kernel is 1x65 = 65")
    check(pool(kernel=(2, 2), strides=[17, 17]), NPU, "pool.stride", "strides are 17x17")


def test_padded_average_pool_on_ethos():
    relaxed = ETHOS.replace(tensors=NPU.tensors)
    check(pool("AveragePool", kernel=(9, 9)), relaxed, None)
    check(pool("AveragePool", kernel=(9, 9), pads=[1, 1, 1, 1]), relaxed, "pool.padded-average", "the kernel is 9x9 with padding")
    check(pool("AveragePool", kernel=(8, 8), pads=[1, 1, 1, 1]), relaxed, None)


# -- other families -------------------------------------------------------------------------------------


def resize(mode, scales):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="n", mode=mode)
    return node, [info("x", [1, 2, 4, 4])], [info("y", 4)], [const("scales", scales)]


def test_resize_mode_and_axes():
    check(resize("nearest", [1, 1, 2, 2]), NPU, None)
    check(resize("cubic", [1, 1, 2, 2]), NPU, "resize.mode", "mode is cubic")
    check(resize("nearest", [1, 2, 2, 2]), NPU, "resize.mode", "it resizes [1, 2, 4, 4] to [1, 4, 8, 8]")


def test_pad_mode():
    def pad(mode):
        node = helper.make_node("Pad", ["x", "pads"], ["y"], name="n", mode=mode)
        return node, [info("x", [1, 2, 4, 4])], [info("y", 4)], [const("pads", [0, 0, 1, 1, 0, 0, 1, 1], np.int64)]

    check(pad("constant"), NPU, None)
    reason = check(pad("reflect"), NPU, "pad.mode", "mode is reflect")
    assert "Slice + Concat" in reason.fix


def test_normalization_over_the_last_axis_only():
    def softmax(axis):
        node = helper.make_node("Softmax", ["x"], ["y"], name="n", axis=axis)
        return node, [info("x", [1, 4, 8])], [info("y", [1, 4, 8])], []

    check(softmax(-1), NPU, None)
    check(softmax(2), NPU, None)
    check(softmax(1), NPU, "norm.last-axis", "axis is 1 of a rank-3 input")


def test_reduce_axis_size_on_ethos():
    def mean(length):
        node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="n")
        return node, [info("x", [1, length], I8)], [info("y", 2, I8)], [const("axes", [1], np.int64)]

    check(mean(4096), ETHOS, None, validated=False)
    check(mean(5000), ETHOS, "reduce.axis-size", "reduces axis 1 of size 5000", validated=False)


def test_cpu_target_checks_onnxruntime_kernels():
    check(relu(["N", 4]), CPU, None)
    node = helper.make_node("ImageDecoder", ["x"], ["y"], name="n")
    reason = check((node, [info("x", [10], TensorProto.UINT8)], [info("y", 3, TensorProto.UINT8)], []), CPU, "op.not-supported", opset=20, validated=False)
    assert "no CPU kernel for ImageDecoder at opset 20" in reason.message


# -- the rule machinery -----------------------------------------------------------------------------------


def test_every_rule_has_a_documented_first_line_with_limits_filled_in():
    for target in (NPU, ETHOS, CPU):
        for rule in constraints_for(target):
            text = rule.text(target)
            assert text and "{" not in text, (rule.code, text)
            assert rule.check.__name__.startswith("constraint_")


def test_rules_whose_limit_is_unset_are_not_part_of_the_target():
    npu_codes = {rule.code for rule in constraints_for(NPU)}
    ethos_codes = {rule.code for rule in constraints_for(ETHOS)}
    assert "tensor.batch" in ethos_codes and "tensor.batch" not in npu_codes
    assert "matmul.constant-weights" in ethos_codes and "matmul.constant-weights" not in npu_codes
    assert {rule.code for rule in constraints_for(CPU)} == {"ort.kernel"}


def test_allow_rules_come_first_and_message_joins_rule_and_detail():
    rules = constraints_for(NPU)
    assert rules[0].kind == "allow" and all(rule.kind == "veto" for rule in rules[1:])
    reason = check(relu([1, 2, 3, 4, 5]), NPU, "tensor.rank")
    assert reason.message == "Tensors must have rank at most 4; input 'x' has rank 5; output 'y' has rank 5"


def test_a_rule_must_be_a_documented_constraint_function():
    with pytest.raises(ValueError, match="documented constraint_"):
        constraint("test.nodoc")(lambda node, target: (True, ""))
    with pytest.raises(ValueError, match="already registered"):

        @constraint("tensor.rank")
        def constraint_duplicate(node, target):
            """Duplicate."""
            return True, ""


def test_fused_ops_written_as_mapc_functions_are_judged_as_the_standard_op():
    import onnx_graphsurgeon as gs

    from mapc.targets.views import op_name

    assert op_name(gs.Node("Attention", domain="mapc")) == "Attention"
    assert op_name(gs.Node("Gelu", domain="mapc")) == "Gelu"
    assert op_name(gs.Node("NotAnOnnxOp", domain="mapc")) == "mapc::NotAnOnnxOp"
    assert op_name(gs.Node("Attention", domain="com.microsoft")) == "com.microsoft::Attention"
