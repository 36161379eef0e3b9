"""optimum's merged decoder (one If: with-past and without-past branches) splits like its with-past model."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from mapc.ir import load
from mapc.llm import LLMOptions, find_roles, generate, generate_dynamic, split, write
from mapc.llm.merged import take_cache_branch
from tests.llm.conftest import fixture_path


def merged_decoder(source, path):
    """What optimum's merge writes, built from a with-past export: inputs plus ``use_cache_branch``
    [1] bool; ``If(use_cache_branch)`` whose then-branch is the with-past decoder and whose
    else-branch computes without the past (here: the same decoder fed an empty past, so both
    branches are valid and only the condition tells them apart)."""
    model = onnx.load(str(source))
    graph = model.graph
    outputs = [o.name for o in graph.output]
    past = [i for i in graph.input if i.name.startswith("past_key_values")]

    def branch(suffix, empty_past):
        rename = {name: f"{name}_{suffix}" for node in graph.node for name in node.output}
        nodes = []
        if empty_past:
            for value in past:  # [batch, kv, 0, d]: Slice(past, 0, 0) on the sequence axis
                for name, data in ((f"zero_{suffix}", [0]), (f"axis2_{suffix}", [2])):
                    nodes.append(helper.make_node("Constant", [], [f"{value.name}/{name}"],
                                                  value=helper.make_tensor(f"{value.name}/{name}", TensorProto.INT64, [1], data)))
                nodes.append(helper.make_node("Slice", [value.name, f"{value.name}/zero_{suffix}", f"{value.name}/zero_{suffix}",
                                                        f"{value.name}/axis2_{suffix}"], [f"{value.name}_{suffix}"]))
                rename[value.name] = f"{value.name}_{suffix}"
        for node in graph.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = f"{node.name}_{suffix}"
            copy.input[:] = [rename.get(n, n) for n in node.input]
            copy.output[:] = [rename[n] for n in node.output]
            nodes.append(copy)
        outs = [helper.make_tensor_value_info(rename[name], TensorProto.FLOAT, None) for name in outputs]
        return helper.make_graph(nodes, f"{suffix}_branch", [], outs)

    if_node = helper.make_node("If", ["use_cache_branch"], outputs, name="optimum::if",
                               then_branch=branch("with_past", False), else_branch=branch("without_past", True))
    merged = helper.make_graph([if_node], "merged", [*graph.input, helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])],
                               list(graph.output), list(graph.initializer))
    proto = helper.make_model(merged, opset_imports=model.opset_import, ir_version=model.ir_version)
    onnx.save(proto, str(path))
    return path


def test_the_with_past_branch_is_inlined(tmp_path):
    model = load(merged_decoder(fixture_path("llama-ts-kv"), tmp_path / "merged.onnx"))
    assert take_cache_branch(model) == "use_cache_branch"
    assert "use_cache_branch" not in [t.name for t in model.graph.inputs]
    assert not [n for n in model.graph.nodes if n.op == "If"]
    assert find_roles(model).layers[0].past_key == "past_key_values.0.key"


def test_a_merged_decoder_splits_and_decodes_like_the_with_past_export(tmp_path):
    merged = merged_decoder(fixture_path("qwen2-dynamo-kv"), tmp_path / "merged.onnx")
    write(split(merged, LLMOptions(context=20, prefill=6, target="npu")), tmp_path / "split")
    prompt = [4, 99, 17, 3, 120, 56, 7, 1, 88]
    assert generate(tmp_path / "split", prompt, 10) == generate_dynamic(fixture_path("qwen2-dynamo-kv"), prompt, 10)
