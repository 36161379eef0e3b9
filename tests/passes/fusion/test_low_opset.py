"""Fusion on models below opset 13 (keras2onnx/tf2onnx exports at opset 11/12).

Below an op's opset the fused node is a ``mapc`` function whose body is written in the model's
own opset (axes as attributes, ReduceMean's included), so the model keeps its opset and runs
anywhere; ``--target-opset`` upgrades first and then emits standard ops. Every case is checked
differentially in onnxruntime (``fuse`` in common.py).
"""

from __future__ import annotations

from dataclasses import replace

import onnx
import pytest

import mapc
from tests.passes.fusion.common import domains, fuse, misses, ops
from tests.passes.fusion.graphs import AttentionSpec, EncoderSpec, NormSpec, attention_model, cnn_model, encoder_model, layer_norm_model
from tests.passes.fusion.test_attention import EXPORTER_VARIANTS

FUSED_ENCODER = {("mapc", "Attention"): 1, ("mapc", "LayerNormalization"): 2, ("mapc", "Gelu"): 1}


def function_ops(model: mapc.Model) -> list[onnx.NodeProto]:
    return [node for function in model.functions for node in function.node]


@pytest.mark.parametrize("opset", [11, 12])
def test_an_encoder_layer_fuses_into_mapc_functions_in_its_own_opset(opset):
    model, record = fuse(encoder_model(EncoderSpec(opset=opset)))
    fused = {key: n for key, n in domains(model).items() if key[0] == "mapc"}
    assert fused == FUSED_ENCODER
    assert misses(record) == []
    assert model.opset == opset and all(f.opset_import[0].version == opset for f in model.functions)
    for node in function_ops(model):  # attribute forms: a 13+ axes input would not load
        if node.op_type in ("Unsqueeze", "ReduceMean"):
            assert len(node.input) == 1 and any(a.name == "axes" for a in node.attribute), node


def test_an_old_ir_version_is_raised_to_one_with_local_functions():
    proto = encoder_model(EncoderSpec(opset=11))
    proto.ir_version = 6  # what keras2onnx writes
    model, _ = fuse(proto)
    assert model.ir_version >= 8 and model.functions


def test_a_cnn_at_opset_11_folds_pads_batch_norms_and_biases():
    model, record = fuse(cnn_model(11))
    assert ops(model) == {"Conv": 2, "Relu": 2, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1, "Softmax": 1}
    assert {k: v for k, v in record.counters.items() if v and k in ("pad-into-conv", "conv-batch-norm", "conv-bias")} == {
        "pad-into-conv": 1, "conv-batch-norm": 1, "conv-bias": 1}


def test_softmax_with_the_old_default_axis_is_not_attention():
    """Below 13 a Softmax without ``axis`` normalises over everything after axis 1 (coerced to
    2-D): that is not attention over the keys, so it stays, with the reason."""
    proto = attention_model(AttentionSpec(opset=12, mask="none"))
    softmax = next(n for n in proto.graph.node if n.op_type == "Softmax")
    del softmax.attribute[:]
    model, record = fuse(proto)
    assert ("mapc", "Attention") not in domains(model)
    assert [m["code"] for m in misses(record, "attention")] == ["softmax-axis"]


def test_below_opset_11_the_near_miss_offers_the_opset_upgrade():
    """Function bodies need Slice bounds as inputs (10) and negative axes (11)."""
    model, record = fuse(layer_norm_model(NormSpec(opset=10)))
    found = misses(record, "layer-norm")
    assert found and all(m["code"] == "opset" and "older than 11" in m["message"] and "--target-opset 17" in m["fix"] for m in found)
    assert "LayerNormalization" not in ops(model)


def test_without_functions_the_near_miss_offers_the_opset_upgrade():
    _, record = fuse(encoder_model(EncoderSpec(opset=11)), [("fuse", {"functions": False})])
    [miss] = misses(record, "attention")
    assert miss["code"] == "opset" and "--target-opset 23" in miss["fix"]


@pytest.mark.parametrize("opset", [11, 12])
@pytest.mark.parametrize("target", [13, 17, 23])
def test_target_opset_upgrades_old_models_and_fuses_into_standard_ops(opset, target):
    result = mapc.compile(encoder_model(EncoderSpec(opset=opset)), target_opset=target, verify=True)
    assert result.model.opset == target
    standard = {op for op, since in (("LayerNormalization", 17), ("Gelu", 20), ("Attention", 23)) if target >= since}
    fused = {(n.domain or "", n.op) for n in result.model.graph.nodes if n.op in ("LayerNormalization", "Gelu", "Attention")}
    assert fused == {("" if op in standard else "mapc", op) for op in ("LayerNormalization", "Gelu", "Attention")}


def test_target_opset_on_an_old_cnn():
    result = mapc.compile(cnn_model(11), target_opset=17, verify=True)
    assert result.model.opset == 17 and ops(result.model)["Conv"] == 2 and "BatchNormalization" not in ops(result.model)


@pytest.mark.parametrize("variant", sorted(EXPORTER_VARIANTS))
def test_every_exporter_variant_fuses_at_opset_12_once_shapes_are_fixed_and_folded(variant):
    """onnx's data propagation does not follow Shape -> Slice -> Concat below opset 13, so
    repeat_kv's and dynamo's computed shapes stay unknown until fold-constants settles them."""
    spec = replace(EXPORTER_VARIANTS[variant], opset=12)
    model, record = fuse(attention_model(spec), "fix-shapes,fold-constants,fuse", dims={"batch": 2, "seq": 5, "kv_seq": 7})
    assert domains(model)[("mapc", "Attention")] == 1 and misses(record, "attention") == []


@pytest.mark.parametrize("opset", [11, 12])
def test_a_keras2onnx_style_bert_compiles_static_and_fused_in_one_round(opset):
    """Issue 16's model in small: three layers at opset 11/12 whose every Reshape target is
    computed by tf2onnx's Shape -> Cast -> Slice -> Cast -> Squeeze -> Unsqueeze -> Concat, with
    static input shapes given: the first round settles every shape, and fusion works at the
    model's opset. The compile verifies outputs in onnxruntime."""
    spec = EncoderSpec(opset=opset, layers=3, computed_shapes=True)
    result = mapc.compile(encoder_model(spec), input_shapes={"x": [2, 6, 16], "attention_mask": [2, 6]}, verify=True)
    names = [r.name for r in result.passes]
    # the fixpoint(fix-shapes, fold-constants, peephole, cleanup) group, its records numbered by round
    simplify = [r for r in result.passes[: names.index("fuse")] if r.iteration is not None]
    assert {r.iteration for r in simplify} == {1, 2} and not any(r.changed for r in simplify if r.iteration == 2)
    assert not [n for n in result.model.graph.nodes if n.op in ("Shape", "Size")]
    check = next(r for r in result.passes if r.name == "check-static")
    assert check.counters["dynamic_tensors"] == 0
    fused = domains(result.model)
    assert (fused[("mapc", "Attention")], fused[("mapc", "LayerNormalization")], fused[("mapc", "Gelu")]) == (3, 6, 3)


@pytest.mark.parametrize("target", [17, 23])
def test_the_keras2onnx_style_bert_upgraded_still_fuses_its_attention(target):
    """Below 13 the converter cannot see the scores' rank (their Reshape targets are computed),
    so it writes Softmax(axis=3) as Shape -> Flatten -> Softmax -> Reshape; softmax-last-axis
    turns that back into one Softmax and the attention fuses."""
    spec = EncoderSpec(opset=11, layers=3, computed_shapes=True)
    result = mapc.compile(encoder_model(spec), input_shapes={"x": [2, 6, 16], "attention_mask": [2, 6]}, target_opset=target, verify=True)
    fuse_record = next(r for r in result.passes if r.name == "fuse")
    assert fuse_record.counters["softmax-last-axis"] == 3 and fuse_record.counters["attention"] == 3
    assert "Flatten" not in ops(result.model) and "Softmax" not in ops(result.model)
