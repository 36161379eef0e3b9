"""Roles come from structure, whatever the exporter called the tensors; a missing one is named."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from mapc.ir import UsageError, load
from mapc.llm import LLMOptions, find_roles, generate, generate_dynamic, split, write
from tests.llm.conftest import MODELS, fixture_path


@pytest.mark.parametrize("name", MODELS)
def test_roles_of_every_fixture(name):
    roles = find_roles(load(fixture_path(name)))
    assert (roles.input_ids, roles.attention_mask, roles.logits) == ("input_ids", "attention_mask", "logits")
    assert roles.position_ids == ("position_ids" if name.startswith("qwen2") else None)
    assert [layer.index for layer in roles.layers] == [0, 1]
    assert roles.layers[1].past_key == "past_key_values.1.key" and roles.layers[1].present_value == "present.1.value"
    assert roles.vocab_size == 128 and roles.head_dim == 8


def _renamed(source, path, mapping):
    model = onnx.load(str(source))
    for value in [*model.graph.input, *model.graph.output]:
        value.name = mapping.get(value.name, value.name)
    for node in model.graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    onnx.save(model, str(path))
    return path


def test_other_naming_conventions_are_found_by_structure(tmp_path):
    """``cache.{i}.k``/``v`` in, ``out_cache.{i}.*`` out, ``ids``/``mask``/``scores``: still found."""
    mapping = {"input_ids": "tokens", "attention_mask": "pad_mask", "logits": "scores"}
    for i in range(2):
        mapping.update({f"past_key_values.{i}.key": f"cache.{i}.k", f"past_key_values.{i}.value": f"cache.{i}.v",
                        f"present.{i}.key": f"out_cache.{i}.k", f"present.{i}.value": f"out_cache.{i}.v"})
    path = _renamed(fixture_path("llama-dynamo-kv"), tmp_path / "renamed.onnx", mapping)
    roles = find_roles(load(path))
    assert (roles.input_ids, roles.attention_mask, roles.logits) == ("tokens", "pad_mask", "scores")
    assert [(l.past_key, l.past_value) for l in roles.layers] == [("cache.0.k", "cache.0.v"), ("cache.1.k", "cache.1.v")]
    write(split(path, LLMOptions(context=16, prefill=4)), tmp_path / "split")
    prompt = [5, 9, 100, 3, 77, 12]
    assert generate(tmp_path / "split", prompt, 6) == generate_dynamic(path, prompt, 6)


def test_a_mask_named_otherwise_is_named_with_a_flag(tmp_path):
    path = _renamed(fixture_path("llama-ts-kv"), tmp_path / "m.onnx", {"attention_mask": "padding"})
    with pytest.raises(UsageError, match="attention-mask input.*--role attention_mask=NAME"):
        find_roles(load(path))
    assert find_roles(load(path), {"attention_mask": "padding"}).attention_mask == "padding"


def test_a_model_without_kv_cache_is_refused_in_one_line():
    with pytest.raises(UsageError, match="cannot find the KV cache") as error:
        find_roles(load(fixture_path("llama-ts-kv").parents[1] / "transformers" / "llama-ts-sdpa.onnx"))
    assert "\n" not in str(error.value)


def test_unknown_or_absent_role_names_are_refused():
    model = load(fixture_path("llama-ts-kv"))
    with pytest.raises(UsageError, match="unknown role"):
        find_roles(model, {"tokens": "input_ids"})
    with pytest.raises(UsageError, match="has no input 'nope'"):
        find_roles(model, {"attention_mask": "nope"})


def test_options_are_checked():
    with pytest.raises(UsageError, match="--prefill 24"):
        split(fixture_path("llama-ts-kv"), LLMOptions(context=24, prefill=24))
    with pytest.raises(UsageError, match="position table holds only 64"):
        split(fixture_path("gpt2-dynamo-kv"), LLMOptions(context=100, prefill=8))


def test_prompt_longer_than_the_cache_is_refused(tmp_path):
    write(split(fixture_path("llama-ts-kv"), LLMOptions(context=12, prefill=4)), tmp_path)
    with pytest.raises(UsageError, match="does not fit a cache of 12"):
        generate(tmp_path, list(range(13)), 1)
    with pytest.raises(UsageError, match=r"lie in \[0, 128\)"):
        generate(tmp_path, [128], 1)
    assert len(generate(tmp_path, list(np.arange(12) % 128), 5)) == 1
