"""The fuse pass: options, reporting, function fallback round trips, and random models."""

from __future__ import annotations

import onnx
import pytest
from hypothesis import given, settings

import mapc
from mapc.ir import load, save
from mapc.ir.errors import UsageError
from mapc.passes import PassContext, get_pass
from mapc.passes.fusion import STAGES
from mapc.passes.pipeline import PassManager
from mapc.testing import onnx_models

from .common import fuse, misses, ops
from .graphs import AttentionSpec, GeluSpec, attention_model, gelu_model


@given(onnx_models(discontinuous=False))
def test_fuse_preserves_random_models(model):
    fuse(model)


@settings(max_examples=100)
@given(onnx_models(families=("elementwise", "unary", "matmul", "gemm", "conv", "conv_transpose", "reduce", "softmax"), discontinuous=False))
def test_fuse_preserves_random_models_rich_in_fusable_ops(model):
    fuse(model)


def test_every_rule_documents_itself_and_has_a_unique_name():
    rules = [rule for stage in STAGES.values() for rule in stage]
    assert len({r.name for r in rules}) == len(rules)
    assert all(r.describe() and r.describe() != r.name for r in rules)
    assert {"attention", "layer-norm", "rms-norm", "gelu", "gelu-tanh", "rotary", "conv-batch-norm"} <= {r.name for r in rules}


def test_disable_and_unknown_rules():
    model, record = fuse(gelu_model(GeluSpec()), [("fuse", {"disable": ["gelu"]})])
    assert "Gelu" not in ops(model) and "gelu" not in record.counters
    with pytest.raises(UsageError, match="unknown fusion rule 'gelo'"):
        get_pass("fuse")(disable=["gelo"]).run(load(gelu_model(GeluSpec())), PassContext())


def test_report_lists_each_rule_with_fired_count_and_near_misses():
    _, record = fuse(attention_model(AttentionSpec()), [("fuse", {"functions": False})])
    rules = record.details["rules"]
    assert rules["attention"]["fired"] == 0 and rules["attention"]["near_misses"][0]["code"] == "opset"
    note = next(n for n in record.notes if n.code == "fuse.attention.opset")
    assert note.severity == "warning" and note.node and note.fix


def test_function_overloads_survive_save_and_load(tmp_path):
    spec = AttentionSpec(mask="input")
    model, _ = fuse(attention_model(spec))
    path = save(model, tmp_path / "fused.onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    again = load(path)
    assert again.functions and again.to_proto().SerializeToString(deterministic=True) == proto.SerializeToString(deterministic=True)


def test_default_pipeline_fuses():
    assert "fuse" in mapc.default_pipeline().split(",")
    result = mapc.compile(attention_model(AttentionSpec(opset=23)), verify=True)
    assert result.verification["ok"] and ops(result.model)["Attention"] == 1


def test_compile_target_opset_and_strict_flags():
    result = mapc.compile(gelu_model(GeluSpec()), target_opset=20, strict_fusion=True, verify=True)
    assert result.model.opset == 20 and [(n.domain or "", n.op) for n in result.model.graph.nodes] == [("", "MatMul"), ("", "Gelu")]
    assert result.pipeline.startswith("upgrade-opset{opset=20}") and "fuse{strict=true}" in result.pipeline
    with pytest.raises(UsageError, match="strict-fusion"):
        mapc.compile(gelu_model(GeluSpec()), passes="cleanup", strict_fusion=True)


def test_fuse_is_idempotent_on_a_fused_model():
    model, _ = fuse(attention_model(AttentionSpec(opset=23)))
    records = PassManager("fuse").run(model, PassContext())
    assert not records[0].changed and misses(records[0]) == []


def layer_norm_behind_a_custom_op(dims):
    """A LayerNorm decomposition reading com.microsoft Inverse, whose output shape neither onnx
    nor onnxruntime's symbolic inference knows."""
    nodes = [
        onnx.helper.make_node("Inverse", ["x"], ["f"], name="custom", domain="com.microsoft"),
        onnx.helper.make_node("ReduceMean", ["f"], ["mean"], axes=[-1]),
        onnx.helper.make_node("Sub", ["f", "mean"], ["d"]),
        onnx.helper.make_node("Mul", ["d", "d"], ["d2"]),
        onnx.helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
        onnx.helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        onnx.helper.make_node("Sqrt", ["var_eps"], ["std"]),
        onnx.helper.make_node("Div", ["d", "std"], ["y"]),
    ]
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, dims)],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                                   [onnx.numpy_helper.from_array(__import__("numpy").float32(1e-5), "eps")])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("com.microsoft", 1)], ir_version=10)


def test_a_shape_near_miss_never_asks_for_static_shapes_once_they_are_given():
    """Issue 16: with static inputs, the fix names where shape inference stops instead of
    asking for fix-shapes again; with a symbolic input it still asks for it."""
    record = PassManager("fuse").run(load(layer_norm_behind_a_custom_op([3, 4, 4])), PassContext())[-1]
    [miss] = misses(record, "layer-norm")
    assert miss["code"] == "shape" and "fix-shapes" not in miss["fix"]
    assert miss["fix"] == ("the input shapes are already static; shape inference stops at Inverse 'custom': "
                           "onnx has no shape inference for custom op com.microsoft::Inverse")
    record = PassManager("fuse").run(load(layer_norm_behind_a_custom_op(["n", 4, 4])), PassContext())[-1]
    assert misses(record, "layer-norm")[0]["fix"] == "run shape inference (fix-shapes)"
