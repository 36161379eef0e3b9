"""Qualcomm's own compiler takes both static graphs of a quantized split, node for node: every
node on HTP, with the graphs exchanging integer codes (the KV cache at 16 and at 8 bits)."""

from __future__ import annotations

import numpy as np
import pytest

from mapc.llm import LLMOptions, split
from mapc.targets.qnn import check_plan
from tests.llm.conftest import fixture_path
from tests.targets.qnn.support import needs_qnn


@needs_qnn
@pytest.mark.parametrize(("name", "kv_bits"), [("llama-dynamo-kv", None), ("gpt2-dynamo-kv", 8)])
def test_qnn_builds_prefill_and_decode_with_every_node_on_htp(name, kv_bits):
    llm = split(fixture_path(name), LLMOptions(context=16, prefill=4, target="qnn-htp", quantize={"scheme": "a16w8"},
                                               kv_bits=kv_bits))
    for graph, result in llm.graphs.items():
        agreement = check_plan(result.model, result.plan)
        assert agreement.check.built, (graph, agreement.check.error)
        assert not agreement.overclaims, (graph, [(n.name, n.qnn.reason) for n in agreement.overclaims])
        counts = agreement.as_dict()["counts"]
        assert set(counts) == {"htp"}, counts  # integer I/O: not even a boundary Q/DQ on the host
        assert result.report["coverage"]["nodes_percent"] == 100.0


@needs_qnn
def test_an_8_bit_split_gets_16_bit_logits_and_keeps_its_8_bit_cache():
    """qnn-htp widens graph outputs under a8w8, but not the cache it feeds back: the host still
    copies 8-bit codes from each new entry into its cache, and QNN takes every node."""
    llm = split(fixture_path("llama-dynamo-kv"), LLMOptions(context=16, prefill=4, target="qnn-htp", quantize={"scheme": "a8w8"}))
    for graph, result in llm.graphs.items():
        types = {t.name: t.dtype for t in [*result.model.graph.inputs, *result.model.graph.outputs]}
        assert types["logits"] == np.uint16, graph
        assert {types[name] for name in types if name.startswith(("past_", "new_"))} == {np.dtype(np.uint8)}, graph
        agreement = check_plan(result.model, result.plan)
        assert agreement.check.built and not agreement.overclaims and set(agreement.as_dict()["counts"]) == {"htp"}, graph
