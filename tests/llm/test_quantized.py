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
