"""Whisper- and Llama-shaped graphs written with onnxruntime's contrib ops reach the NPU once the
contrib rewrites turn them into standard ops (issue 16: such graphs put 0% on the NPU)."""

from __future__ import annotations

import onnx
import pytest

import mapc
from mapc.passes.fusion.contrib import RULES

from .contrib_models import llama_decoder, whisper_decoder, whisper_encoder

CONTRIB_RULES = [rule.name for rule in RULES]
#: model builder, attentions in it, least share of its nodes the NPU must take after the rewrites
#: (what stays on the host: the token-id Gather; for GQA the integer arithmetic on seqlens_k
#: that selects cache rows, positions and masks)
MODELS = {
    "whisper-encoder": (whisper_encoder, 2, 100.0),
    "whisper-decoder": (whisper_decoder, 4, 95.0),
    "llama-decoder-gqa": (llama_decoder, 2, 75.0),
}


def attentions_by_device(report: dict) -> dict[str, int]:
    found: dict[str, int] = {}
    for segment in report["partitions"]:
        found[segment["device"]] = found.get(segment["device"], 0) + segment["ops"].get("Attention", 0)
    return found


@pytest.mark.parametrize("name", list(MODELS))
def test_contrib_graphs_put_their_attention_on_the_npu(tmp_path, name):
    build, attentions, least = MODELS[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(build(), path)
    # Opset 23: standard Attention (the test below covers the model's own opset).
    before = mapc.compile(path, target="npu", target_opset=23, verify=True, pass_options={"fuse": {"disable": CONTRIB_RULES}})
    after = mapc.compile(path, target="npu", target_opset=23, verify=True)
    assert before.report["coverage"]["nodes_percent"] == 0.0
    assert any(row["code"] == "op.not-supported" for row in before.report["fallback_by_reason"])
    assert after.verification["ok"]
    assert attentions_by_device(after.report).get("npu", 0) == attentions and not attentions_by_device(after.report).get("cpu")
    coverage = after.report["coverage"]
    assert coverage["macs_percent"] == 100.0 and coverage["nodes_percent"] >= least
    assert not [row for row in after.report["fallback_by_reason"] if row["code"] in ("op.not-supported", "shape.static")]


def test_at_the_models_own_opset_the_lowered_partitions_load_and_verify(tmp_path):
    """Below opset 23 a partition calls two overloads of the mapc.Attention function (masked and
    unmasked); onnxruntime ignores a call's overload inside a function, so lowering gives each
    overload a name of its own (the model did not load before)."""
    path = tmp_path / "whisper_decoder.onnx"
    onnx.save(whisper_decoder(), path)
    result = mapc.compile(path, target="npu", verify=True)
    assert result.verification["ok"]
    assert attentions_by_device(result.report).get("npu", 0) == 4


def test_every_layer_of_a_deep_prompt_only_gqa_model_is_rewritten(tmp_path):
    """onnxruntime's shape inference cannot size the presents of a GroupQueryAttention without
    past; the layers after the first are still sized and rewritten (all 12, not 1)."""
    path = tmp_path / "prompt.onnx"
    onnx.save(llama_decoder(layers=12, prompt=True), path)
    result = mapc.compile(path, verify=True)
    fuse = next(record for record in result.passes if record.name == "fuse")
    assert fuse.counters["contrib-group-query-attention"] == 12 and fuse.counters["attention"] == 12
    assert not [node for node in result.model.graph.nodes if node.domain == "com.microsoft"]


def test_the_encoder_reaches_the_npu_at_its_own_opset_through_mapc_functions(tmp_path):
    path = tmp_path / "encoder.onnx"
    onnx.save(whisper_encoder(), path)
    result = mapc.compile(path, target="npu", verify=True)
    assert result.verification["ok"] and result.report["coverage"]["nodes_percent"] == 100.0
    assert attentions_by_device(result.report) == {"npu": 2}
