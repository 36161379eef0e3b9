"""Greedy decoding through mapc's static prefill + decode graphs equals the dynamic export's.

For every fixture (four architectures, both torch exporters), in fp32: prompts shorter than a
prefill chunk (left-padded), exactly one chunk, longer (chunked prefill) and long enough that
decoding fills the whole cache. Tokens must be equal step for step, and the logits the split
gives after the prompt must equal the export's.
"""

from __future__ import annotations

import numpy as np
import pytest

from mapc.llm import StaticRunner, generate, generate_dynamic
from mapc.llm.reference import greedy_dynamic
from mapc.llm.runtime import teacher_forced
from tests.llm.conftest import CONTEXT, MODELS, PREFILL, fixture_path

#: Prompt lengths: shorter than a chunk, one chunk, two chunks, and nearly the whole cache.
PROMPT_LENGTHS = (3, PREFILL, PREFILL + 5, CONTEXT - 4)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("length", PROMPT_LENGTHS)
def test_greedy_tokens_equal_the_dynamic_export(splits, name, length):
    folder, _ = splits(name)
    prompt = np.random.default_rng(length).integers(0, 128, length).tolist()
    steps = min(20, CONTEXT - length + 1)  # up to a full cache
    assert generate(folder, prompt, steps) == generate_dynamic(fixture_path(name), prompt, steps)


@pytest.mark.parametrize("name", MODELS)
def test_logits_equal_the_dynamic_export_at_every_step(splits, name):
    """Teacher-forced over a chunked prompt: every step's logits, not only the argmax."""
    folder, _ = splits(name)
    prompt = np.random.default_rng(7).integers(0, 128, PREFILL + 3).tolist()
    tokens, expected = greedy_dynamic(fixture_path(name), prompt, 6)
    got = teacher_forced(StaticRunner(folder), prompt, tokens)
    assert len(got) == len(expected)
    for reference, logits in zip(expected, got):
        np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4)


def test_decoding_stops_when_the_cache_is_full(splits):
    folder, _ = splits("llama-ts-kv")
    prompt = list(range(CONTEXT - 2))
    assert len(generate(folder, prompt, 50)) == 3  # positions 22 and 23 fed, one more token chosen


@pytest.mark.parametrize("name", ["llama-dynamo-kv", "gpt2-dynamo-kv", "phi3-ts-kv", "qwen2-ts-kv"])
def test_on_the_npu_target_tokens_still_equal(splits, name):
    folder, _ = splits(name, "npu")
    prompt = np.random.default_rng(3).integers(0, 128, PREFILL + 2).tolist()
    assert generate(folder, prompt, 10) == generate_dynamic(fixture_path(name), prompt, 10)


@pytest.mark.parametrize("name", ["llama-ts-kv", "gpt2-dynamo-kv", "phi3-dynamo-kv"])
def test_last_logits_only_decodes_the_same(tmp_path, name):
    from mapc.llm import LLMOptions, read_manifest, split, write

    write(split(fixture_path(name), LLMOptions(context=CONTEXT, prefill=PREFILL, logits="last")), tmp_path)
    for graph in read_manifest(tmp_path)["graphs"].values():
        assert next(t for t in graph["outputs"] if t["role"] == "logits")["shape"] == [1, 1, 128]
    prompt = np.random.default_rng(11).integers(0, 128, PREFILL + 3).tolist()
    assert generate(tmp_path, prompt, 12) == generate_dynamic(fixture_path(name), prompt, 12)


@pytest.mark.parametrize("name", ["llama-dynamo-kv", "gpt2-dynamo-kv"])
def test_lm_head_as_its_own_graph_decodes_the_same(tmp_path, name):
    from mapc.llm import LLMOptions, read_manifest, split, write

    write(split(fixture_path(name), LLMOptions(context=CONTEXT, prefill=PREFILL, target="npu", lm_head_graph=True)), tmp_path)
    manifest = read_manifest(tmp_path)
    for graph in manifest["graphs"].values():
        roles = [t["role"] for t in graph["outputs"]]
        assert "hidden_states" in roles and "logits" not in roles
    head = manifest["host_graphs"]["lm_head"]
    assert [t["role"] for t in head["inputs"]] == ["hidden_states"] and head["outputs"][0]["shape"] == [1, "tokens", 128]
    prompt = np.random.default_rng(5).integers(0, 128, PREFILL + 2).tolist()
    assert generate(tmp_path, prompt, 10) == generate_dynamic(fixture_path(name), prompt, 10)
