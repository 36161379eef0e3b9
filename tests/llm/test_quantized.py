"""Quantized splits: calibrated on decoding through the float split, agreement reported."""

from __future__ import annotations

import numpy as np
import pytest

from mapc.ir import UsageError
from mapc.llm import LLMOptions, read_manifest, split, write
from tests.llm.conftest import fixture_path


def test_a16w8_split_reports_token_agreement_and_stays_on_the_npu(tmp_path):
    llm = split(fixture_path("llama-ts-kv"), LLMOptions(context=24, prefill=8, target="npu", quantize={"scheme": "a16w8"}))
    write(llm, tmp_path)
    manifest = read_manifest(tmp_path)
    agreement = manifest["agreement"]
    assert agreement["tokens"] >= 20 and 0 <= agreement["tokens_equal"] <= agreement["tokens"]
    assert agreement["logits_sqnr_db"] is not None and np.isfinite(agreement["logits_sqnr_db"])
    assert manifest["quantize"]["scheme"] == "a16w8"
    for result in llm.graphs.values():
        quantize = next(p for p in result.report["passes"] if p["name"] == "quantize")
        calibration = quantize["details"]["calibration"]
        assert calibration["random"] is False and calibration["samples"] >= 4, calibration
        assert result.report["coverage"]["nodes_percent"] >= 99.0


def test_calibration_folder_needs_both_graphs(tmp_path):
    (tmp_path / "prefill").mkdir()
    with pytest.raises(UsageError, match="decode"):
        split(fixture_path("llama-ts-kv"), LLMOptions(context=24, prefill=8, quantize={"scheme": "a16w8", "calibration": str(tmp_path)}))


def test_float_split_agrees_on_every_token(splits):
    folder, _ = splits("qwen2-ts-kv")
    agreement = read_manifest(folder)["agreement"]
    assert agreement["tokens_equal"] == agreement["tokens"] > 0


def _kv_specs(manifest):
    specs = {}
    for graph, entry in manifest["graphs"].items():
        for spec in entry["inputs"] + entry["outputs"]:
            if spec["role"] in ("past_key", "past_value", "new_key", "new_value"):
                kind = spec["role"].split("_")[1]
                specs.setdefault((kind, spec["layer"]), []).append((spec["dtype"], spec.get("quantization")))
    return specs


@pytest.mark.parametrize("kv_bits", [None, 8])
def test_integer_io_ties_each_cache_tensor_to_one_quantizer(tmp_path, kv_bits):
    """Past inputs and new outputs of both graphs share one quantizer per layer and kind, so the
    host copies codes into its cache; the mask and logits are codes too."""
    llm = split(fixture_path("qwen2-dynamo-kv"), LLMOptions(context=16, prefill=4, target="npu",
                                                            quantize={"scheme": "a16w8"}, kv_bits=kv_bits))
    write(llm, tmp_path)
    manifest = read_manifest(tmp_path)
    for (kind, layer), specs in _kv_specs(manifest).items():
        assert len(specs) == 4 and len({str(s) for s in specs}) == 1, (kind, layer, specs)
        dtype, quantization = specs[0]
        assert quantization is not None and dtype in (("uint8", "int8") if kv_bits == 8 else ("uint16", "int16")), specs[0]
    for entry in manifest["graphs"].values():
        roles = {spec["role"]: spec for spec in entry["inputs"] + entry["outputs"]}
        assert roles["attention_mask"]["quantization"] and roles["logits"]["quantization"]
    agreement = manifest["agreement"]
    assert agreement["tokens"] >= 20 and agreement["tokens_equal"] >= agreement["tokens"] // 2


def test_float_io_keeps_float_interfaces(tmp_path):
    llm = split(fixture_path("qwen2-dynamo-kv"), LLMOptions(context=16, prefill=4, quantize={"scheme": "a16w8"}, float_io=True))
    write(llm, tmp_path, measure=False)
    for specs in _kv_specs(read_manifest(tmp_path)).values():
        assert all(dtype == "float32" and quantization is None for dtype, quantization in specs)
    with pytest.raises(UsageError, match="--kv-bits"):
        split(fixture_path("qwen2-dynamo-kv"), LLMOptions(context=16, prefill=4, kv_bits=8))


def test_fp16_cache_halves_the_cache_and_keeps_the_tokens(tmp_path):
    write(split(fixture_path("llama-dynamo-kv"), LLMOptions(context=16, prefill=4, target="npu", kv_fp16=True)), tmp_path)
    manifest = read_manifest(tmp_path)
    for specs in _kv_specs(manifest).values():
        assert all(dtype == "float16" and quantization is None for dtype, quantization in specs)
    agreement = manifest["agreement"]  # fp16 rounding may flip a near-tie of these flat, untrained logits
    assert agreement["tokens_equal"] >= 0.9 * agreement["tokens"] and agreement["logits_sqnr_db"] > 40
    with pytest.raises(UsageError, match="--kv-fp16"):
        split(fixture_path("llama-dynamo-kv"), LLMOptions(context=16, prefill=4, kv_fp16=True, quantize={"scheme": "a16w8"}))
