"""A legacy GPT-2 export whose cache is stacked ``[2, B, H, S, D]`` per layer splits like any other.

The stacked decoder is made here from the committed GPT-2 fixture, the way transformers' tuple
cache traced by torch 1.x writes it: ``past_i`` read by two Gathers on axis 0, ``present_i`` a
Concat of the unsqueezed keys and values. The split must decode the same tokens as the original.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from mapc.ir import UsageError
from mapc.llm import LLMOptions, generate, generate_dynamic, read_manifest, split, write
from tests.llm.conftest import CONTEXT, PREFILL, fixture_path

LAYERS = 2


def stacked_gpt2(tmp_path, *, whole_reader: bool = False):
    """The GPT-2 fixture with each layer's cache stacked as ``past_i`` / ``present_i``."""
    proto = onnx.load(fixture_path("gpt2-dynamo-kv"))
    graph = proto.graph
    inputs = {tensor.name: tensor for tensor in graph.input}
    outputs = {tensor.name: tensor for tensor in graph.output}
    graph.initializer.extend([numpy_helper.from_array(np.array(i, np.int64), f"stack_index_{i}") for i in (0, 1)]
                             + [numpy_helper.from_array(np.array([0], np.int64), "stack_axis")])
    new_inputs, new_outputs = [], []
    for layer in range(LAYERS):
        key, value = f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"
        dims = [d.dim_param or d.dim_value for d in inputs[key].type.tensor_type.shape.dim]
        new_inputs.append(helper.make_tensor_value_info(f"past_{layer}", onnx.TensorProto.FLOAT, [2, *dims]))
        graph.node.insert(0, helper.make_node("Gather", [f"past_{layer}", "stack_index_0"], [key], axis=0))
        graph.node.insert(0, helper.make_node("Gather", [f"past_{layer}", "stack_index_1"], [value], axis=0))
        present = [f"present.{layer}.key", f"present.{layer}.value"]
        graph.node.extend([helper.make_node("Unsqueeze", [name, "stack_axis"], [f"{name}_5d"]) for name in present])
        graph.node.append(helper.make_node("Concat", [f"{name}_5d" for name in present], [f"present_{layer}"], axis=0))
        dims = [d.dim_param or d.dim_value for d in outputs[present[0]].type.tensor_type.shape.dim]
        new_outputs.append(helper.make_tensor_value_info(f"present_{layer}", onnx.TensorProto.FLOAT, [2, *dims]))
    if whole_reader:
        graph.node.append(helper.make_node("ReduceMax", ["past_0"], ["past_max"], keepdims=0))
        new_outputs.append(helper.make_tensor_value_info("past_max", onnx.TensorProto.FLOAT, []))
    kept_inputs = [t for t in graph.input if not t.name.startswith("past_key_values")]
    kept_outputs = [t for t in graph.output if not t.name.startswith("present.")]
    del graph.input[:], graph.output[:]
    graph.input.extend(kept_inputs + new_inputs)
    graph.output.extend(kept_outputs + new_outputs)
    path = tmp_path / "gpt2-stacked.onnx"
    onnx.save(proto, path)
    return path


def test_a_stacked_cache_decodes_the_same_tokens_as_the_original(tmp_path):
    source = stacked_gpt2(tmp_path)
    folder = tmp_path / "split"
    write(split(source, LLMOptions(context=CONTEXT, prefill=PREFILL)), folder)
    cache = [(entry["role"], entry["layer"], len(entry["shape"])) for entry in read_manifest(folder)["graphs"]["decode"]["inputs"]
             if "layer" in entry]
    assert sorted(cache) == [(role, layer, 4) for role in ("past_key", "past_value") for layer in range(LAYERS)]
    for length in (3, PREFILL + 5):
        prompt = np.random.default_rng(length).integers(0, 128, length).tolist()
        expected = generate_dynamic(fixture_path("gpt2-dynamo-kv"), prompt, 10)
        assert generate(folder, prompt, 10) == expected
        assert generate_dynamic(source, prompt, 10) == expected


def test_a_stack_read_whole_is_refused_naming_the_reader(tmp_path):
    with pytest.raises(UsageError, match="past_0.*ReduceMax.*keys and values apart"):
        split(stacked_gpt2(tmp_path, whole_reader=True), LLMOptions(context=CONTEXT, prefill=PREFILL))
