"""The split's files keep the contract the manifest states (docs/llm.md)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest

from mapc.llm import LLMOptions, read_manifest, split, write
from tests.llm.conftest import CONTEXT, MODELS, PREFILL, fixture_path


def _graph(folder, entry):
    return onnx.load(str(folder / entry["file"]), load_external_data=False)


def _dims(value_info):
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", MODELS)
def test_manifest_roles_shapes_and_dtypes_match_the_graphs(splits, name):
    folder, _ = splits(name)
    manifest = read_manifest(folder)
    assert manifest["context"] == CONTEXT and manifest["prefill"] == PREFILL
    for graph_name, new_tokens in (("prefill", PREFILL), ("decode", 1)):
        entry = manifest["graphs"][graph_name]
        assert entry["new_tokens"] == new_tokens
        graph = _graph(folder, entry).graph
        for listed, actual in ((entry["inputs"], graph.input), (entry["outputs"], graph.output)):
            assert [t["name"] for t in listed] == [t.name for t in actual]
            for spec, info in zip(listed, actual):
                assert spec["shape"] == _dims(info)
                assert spec["dtype"] == onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type).name
        roles = {t["role"]: t for t in entry["inputs"] + entry["outputs"]}
        assert roles["attention_mask"]["shape"] == [1, 1, new_tokens, CONTEXT]
        assert roles["logits"]["shape"] == [1, new_tokens, manifest["vocab_size"]]
        assert roles["input_ids"]["dtype"] == "int32" and roles["input_ids"]["shape"] == [1, new_tokens]
        kv = manifest["kv_heads"], manifest["head_dim"]
        for spec in entry["inputs"]:
            if spec["role"] in ("past_key", "past_value"):
                assert spec["shape"] == [1, kv[0], CONTEXT - new_tokens, kv[1]]
        for spec in entry["outputs"]:
            if spec["role"] in ("new_key", "new_value"):
                assert spec["shape"] == [1, kv[0], new_tokens, kv[1]]
        layers = {(t["role"], t.get("layer")) for t in entry["inputs"] + entry["outputs"]}
        for layer in range(manifest["layers"]):
            assert {("past_key", layer), ("past_value", layer), ("new_key", layer), ("new_value", layer)} <= layers


@pytest.mark.parametrize("name", MODELS)
def test_graphs_are_static_without_shape_ops_int64_compute_or_growing_concats(splits, name):
    folder, _ = splits(name)
    manifest = read_manifest(folder)
    for entry in manifest["graphs"].values():
        model = onnx.shape_inference.infer_shapes(_graph(folder, entry), strict_mode=True)
        graph = model.graph
        assert not [n.op_type for n in graph.node if n.op_type in ("Shape", "Size", "Range", "If", "Loop")]
        outputs = {o.name for o in graph.output}
        assert not [n.name for n in graph.node if n.op_type == "Concat" and n.output[0] in outputs]
        for info in [*graph.input, *graph.value_info, *graph.output]:
            assert all(isinstance(d, int) and d > 0 for d in _dims(info)), info.name
        int64 = [v.name for v in graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.INT64]
        assert not int64, f"int64 tensors computed on the device: {int64}"


def test_both_graphs_share_one_weight_file(splits):
    folder, llm = splits("llama-ts-kv")
    locations = set()
    referenced: dict[tuple[int, int], bytes] = {}
    data = (folder / "weights.data").read_bytes()
    for entry in read_manifest(folder)["graphs"].values():
        for tensor in _graph(folder, entry).graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in tensor.external_data}
                locations.add(info["location"])
                referenced[(int(info["offset"]), int(info["length"]))] = tensor.name
    assert locations == {"weights.data"}
    sizes = llm.weight_bytes()
    assert sizes["shared"] == len(data) < sizes["separate"]
    # every stored weight is stored once: no two regions hold the same bytes
    digests = [hashlib.sha256(data[o: o + n]).hexdigest() for o, n in referenced]
    assert len(digests) == len(set(digests))


def test_the_split_is_deterministic(tmp_path):
    options = LLMOptions(context=16, prefill=4, target="npu")
    for run in ("a", "b"):
        write(split(fixture_path("qwen2-dynamo-kv"), options), tmp_path / run)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for file in names:
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file


@pytest.mark.parametrize("name", MODELS)
def test_npu_takes_every_node_of_both_graphs_in_one_partition(splits, name):
    _, llm = splits(name, "npu")
    for graph, result in llm.graphs.items():
        coverage = result.report["coverage"]
        assert coverage["nodes_percent"] >= 99.0, (graph, result.report["fallback_by_reason"])
        assert len(result.report["partitions"]) == 1
    manifest = llm.manifest
    assert manifest["rope"]["mode"] == ("inputs" if "gpt2" not in name else "none")
    assert manifest["host_graphs"]["embedding"]["file"] == "embed.onnx"


def test_rotary_tables_hold_the_cos_and_sin_the_graph_computed(splits):
    folder, _ = splits("llama-ts-kv", "npu")
    manifest = read_manifest(folder)
    cos = np.load(folder / manifest["rope"]["tables"]["rope_cos"]["file"])
    sin = np.load(folder / manifest["rope"]["tables"]["rope_sin"]["file"])
    assert cos.shape == sin.shape and cos.shape[0] == CONTEXT
    np.testing.assert_allclose(cos ** 2 + sin ** 2, 1.0, atol=1e-5)
    np.testing.assert_allclose(cos[0], 1.0)  # position 0 rotates nothing


def test_report_has_one_compile_report_per_graph(splits, tmp_path):
    _, llm = splits("phi3-dynamo-kv", "npu")
    report = json.loads(json.dumps(llm.report, default=str))
    assert set(report) == {"prefill", "decode", "llm"}
    for graph in ("prefill", "decode"):
        assert {"coverage", "partitions", "passes", "nodes_before"} <= set(report[graph])
    assert report["llm"]["weight_bytes"]["shared"] <= report["llm"]["weight_bytes"]["separate"]
