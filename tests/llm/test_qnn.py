"""Qualcomm's own compiler takes both static graphs of a quantized split, node for node."""

from __future__ import annotations

import pytest

from mapc.llm import LLMOptions, split
from mapc.targets.qnn import check_plan
from tests.llm.conftest import fixture_path
from tests.targets.qnn.support import needs_qnn


@needs_qnn
@pytest.mark.parametrize("name", ["llama-dynamo-kv", "gpt2-dynamo-kv"])
def test_qnn_builds_prefill_and_decode_with_every_node_on_htp(name):
    llm = split(fixture_path(name), LLMOptions(context=16, prefill=4, target="qnn-htp", quantize={"scheme": "a16w8"}))
    for graph, result in llm.graphs.items():
        agreement = check_plan(result.model, result.plan)
        assert agreement.check.built, (graph, agreement.check.error)
        assert not agreement.overclaims, (graph, [(n.name, n.qnn.reason) for n in agreement.overclaims])
        assert agreement.as_dict()["counts"].get("cpu", 0) == 0
        # what mapc leaves on the host is the float I/O's boundary Q/DQ, as QNN does
        assert {row["code"] for row in result.report["fallback_by_reason"]} <= {"qdq.graph-boundary"}
