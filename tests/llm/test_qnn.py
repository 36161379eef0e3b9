"""Qualcomm's own compiler takes both static graphs of a quantized split, node for node: every
node on HTP, with the graphs exchanging integer codes (the KV cache at 16 and at 8 bits)."""

from __future__ import annotations

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
