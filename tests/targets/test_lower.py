"""Lowering: partitions as local functions that onnxruntime inlines, weights passed in, metadata,
and standalone partition models that compute exactly their slice of the original graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import mapc
from mapc.ir import is_lazy, load, run, save, seeded_inputs
from mapc.targets.lower import INLINE_CONSTANT_BYTES
from tests.conftest import make_model
from tests.targets.helpers import TOY_OPS, const, info, toy_target
from tests.targets.models import static_cnn, static_transformer

F = TensorProto.FLOAT
TOY = toy_target(TOY_OPS)


def weighted_chain():
    """MatMul with a 16 KB weight, a scalar Mul, an unsupported Sin, then an Add."""
    return make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"], name="matmul"),
            helper.make_node("Mul", ["m", "half"], ["h"], name="scale"),
            helper.make_node("Sin", ["h"], ["s"], name="sin"),
            helper.make_node("Add", ["s", "h"], ["y"], name="add"),
        ],
        [info("x", [2, 64])],
        [info("y", [2, 64])],
        [const("w", np.random.default_rng(0).standard_normal((64, 64))), const("half", 0.5)],
    )


def test_partitions_become_calls_of_local_functions_that_onnxruntime_runs():
    proto = weighted_chain()
    result = mapc.compile(proto, target=TOY, partition={"cost_model": False}, verify=True)
    assert result.verification["ok"]
    host = result.model.graph.nodes
    assert [(n.op, n.domain) for n in host] == [("partition_0", "mapc.toy"), ("Sin", None), ("partition_1", "mapc.toy")]
    assert [n.name for n in host if n.domain] == ["toy_partition_0", "toy_partition_1"]
    first = next(f for f in result.model.functions if f.name == "partition_0")
    assert list(first.input) == ["x", "w"], "the 16 KB weight is passed in"
    assert [n.output[0] for n in first.node if n.op_type == "Constant"] == ["half"], "the scalar is copied into the body"
    exported = result.model.to_proto()
    onnx.checker.check_model(exported, full_check=True)
    assert [i.name for i in exported.graph.initializer] == ["w"], "the scalar's only reader moved into the function"
    assert result.model.opset_imports["mapc.toy"] == 1


def test_inline_threshold_is_small():
    assert INLINE_CONSTANT_BYTES <= 1024


def test_metadata_records_target_version_options_and_summary():
    result = mapc.compile(weighted_chain(), target=TOY, partition={"cost_model": False, "max_partitions": 5, "cpu_ops": ["Abs"]})
    metadata = result.model.metadata
    assert metadata["mapc.target"] == "toy" and metadata["mapc.version"] == mapc.__version__
    options = json.loads(metadata["mapc.partition_options"])
    assert options == {"cost_model": False, "cpu_ops": ["Abs"], "max_partitions": 5, "min_partition_ops": 1}
    summary = json.loads(metadata["mapc.summary"])
    assert summary["partitions"] == 2 and summary["coverage"]["nodes_on_target"] == 3
    assert "partition{" in metadata["mapc.pipeline"] and metadata["mapc.pipeline"].endswith("lower")


def test_external_weights_stay_on_disk_and_in_external_data(tmp_path):
    source = tmp_path / "big.onnx"
    proto = weighted_chain()
    onnx.save(proto, str(source), save_as_external_data=True, all_tensors_to_one_file=True, location="big.onnx.data", size_threshold=1024)
    model = load(source)
    weight = next(t for t in model.graph.tensors().values() if t.name == "w")
    assert is_lazy(weight)
    result = mapc.compile(model, target=TOY, partition={"cost_model": False})
    assert is_lazy(weight), "partitioning and lowering never read the weight"
    written = result.save(tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx.data").exists()
    feeds = seeded_inputs(load(source))
    expected = run(load(source), feeds)
    actual = run(load(written), feeds)
    np.testing.assert_array_equal(expected["y"], actual["y"])


def test_ir_version_is_raised_to_allow_functions_and_names_do_not_collide():
    proto = weighted_chain()
    proto.ir_version = 7
    existing = helper.make_function("mapc.toy", "partition_0", ["a"], ["b"], [helper.make_node("Identity", ["a"], ["b"])], [helper.make_opsetid("", 18)])
    proto.functions.append(existing)
    result = mapc.compile(proto, target=TOY, partition={"cost_model": False}, verify=True)
    assert result.model.ir_version == 8
    names = sorted(f.name for f in result.model.functions)
    assert names == ["partition_0", "partition_0_1", "partition_1"]


@pytest.mark.parametrize("build", [static_cnn, static_transformer], ids=["cnn", "transformer"])
def test_emitted_partitions_compute_their_slice_of_the_original(build, tmp_path):
    proto = build()
    original = load(proto)
    result = mapc.compile(proto, target="npu")
    assert result.plan.partitions
    files = result.emit_partitions(tmp_path)
    manifest = json.loads((tmp_path / "partitions.json").read_text())
    assert manifest["host"] == "host.onnx" and len(manifest["partitions"]) == len(result.plan.partitions)
    host = onnx.load(str(tmp_path / "host.onnx"))
    assert not [f for f in host.functions if f.domain == "mapc.npu"]
    assert {n.domain for n in host.graph.node} >= {"mapc.npu"}
    feeds = seeded_inputs(original)
    every = [t.name for node in original.graph.nodes for t in node.outputs]
    values = {**feeds, **run(original, feeds, outputs=every)}
    for entry in manifest["partitions"]:
        part = onnx.load(str(tmp_path / entry["file"]))
        onnx.checker.check_model(part, full_check=True)
        inputs = {i["name"]: values[i["name"]] for i in entry["inputs"] if not i["constant"]}
        outputs = run(part, inputs)
        for name, value in outputs.items():
            np.testing.assert_allclose(value, values[name], rtol=1e-5, atol=1e-6)
    assert len(files) == len(manifest["partitions"]) + 2


def test_emit_needs_a_target(tmp_path):
    result = mapc.compile(weighted_chain())
    with pytest.raises(mapc.UsageError, match="needs a target"):
        result.emit_partitions(tmp_path)


def test_lower_without_partition_is_a_usage_error():
    with pytest.raises(mapc.UsageError, match="needs the partition plan: run 'partition' before it"):
        mapc.compile(weighted_chain(), passes="lower")


def test_compiled_model_saved_and_reloaded_still_runs(tmp_path):
    proto = static_transformer(sequence=8, hidden=32, layers=1)
    result = mapc.compile(proto, target="npu", verify=True)
    path = save(result.model, tmp_path / "compiled.onnx")
    reloaded = load(path)
    feeds = seeded_inputs(load(proto))
    np.testing.assert_array_equal(run(reloaded, feeds)["hidden_states"], run(load(proto), feeds)["hidden_states"])


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transformers"


@pytest.mark.parametrize("name", ["bert-ts-sdpa", "gpt2-dynamo-sdpa", "llama-dynamo-sdpa", "vit-ts-eager", "whisper-dynamo-sdpa"])
def test_real_exports_with_fixed_dims_lower_and_verify(name):
    """Transformers exported by torch (TorchScript and dynamo), batch and sequence fixed."""
    proto = onnx.load(str(FIXTURES / f"{name}.onnx"))
    for value in [*proto.graph.input, *proto.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in ("batch_size", "sequence_length"):
                dim.dim_value = 1 if dim.dim_param == "batch_size" else 8
    del proto.graph.value_info[:]
    result = mapc.compile(proto, target="npu", partition={"cost_model": False}, verify=True)
    assert result.verification["ok"]
    assert result.plan.partitions and result.report["coverage"]["nodes_on_target"] > 0
    assert all(entry["reasons"] for entry in result.report["fallback"])
