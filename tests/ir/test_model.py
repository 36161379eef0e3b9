"""mapc.ir load/save: lossless round trips, external data safety, atomic deterministic saves."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mapc
from mapc.ir import load, run, save, save_sharing_weights
from mapc.ir.errors import ModelError, OutputError
from mapc.ir.external import ExternalValues
from tests.conftest import make_model

F = TensorProto.FLOAT


def weighted_model(size: int = 64) -> onnx.ModelProto:
    """y = (x @ W1) + b, with weights big enough to go external."""
    rng = np.random.default_rng(0)
    return make_model(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        [helper.make_tensor_value_info("x", F, ["batch", size])],
        [helper.make_tensor_value_info("y", F, ["batch", size])],
        [
            numpy_helper.from_array(rng.standard_normal((size, size)).astype(np.float32), "W1"),
            numpy_helper.from_array(rng.standard_normal(size).astype(np.float32), "b"),
        ],
    )


def save_external(proto: onnx.ModelProto, path: Path, location: str = "weights.bin") -> Path:
    onnx.save_model(proto, path, save_as_external_data=True, location=location, size_threshold=0)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_keeps_model_level_fields(tmp_path):
    proto = weighted_model()
    proto.doc_string = "model doc"
    proto.graph.doc_string = "graph doc"
    proto.producer_name, proto.producer_version = "exporter", "9.9"
    proto.model_version = 7
    proto.domain = "ai.example"
    helper.set_model_props(proto, {"author": "someone", "license": "MIT"})
    function = helper.make_function(
        "custom", "Twice", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])], [helper.make_opsetid("", 18)]
    )
    proto.functions.append(function)
    proto.opset_import.append(helper.make_opsetid("custom", 1))
    saved = save(load(proto), tmp_path / "out.onnx")
    again = onnx.load(saved)
    assert again.doc_string == "model doc" and again.graph.doc_string == "graph doc"
    assert (again.producer_name, again.producer_version, again.model_version, again.domain) == ("exporter", "9.9", 7, "ai.example")
    assert {p.key: p.value for p in again.metadata_props} == {"author": "someone", "license": "MIT"}
    assert [f.name for f in again.functions] == ["Twice"]
    assert {o.domain: o.version for o in again.opset_import} == {"": 18, "custom": 1}
    assert again.ir_version == proto.ir_version


@pytest.mark.parametrize("element", [TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2FNUZ, TensorProto.FLOAT8E4M3FN, TensorProto.BFLOAT16])
def test_round_trip_keeps_every_float8_type(element):
    """Found by the wild benchmark (onnx's test_cast_FLOAT8E4M3FNUZ_to_FLOAT): gs wrote a
    float8e4m3fnuz input back as float8e4m3fn, and onnxruntime then refused the feeds."""
    proto = make_model([helper.make_node("Cast", ["x"], ["y"], to=F)], [helper.make_tensor_value_info("x", element, [3])],
                       [helper.make_tensor_value_info("y", F, [3])], opset=21)
    again = load(proto).to_proto()
    assert again.graph.input[0].type.tensor_type.elem_type == element


def test_save_is_deterministic_and_atomic(tmp_path):
    model = load(weighted_model())
    first = save(model, tmp_path / "a.onnx").read_bytes()
    second = save(load(weighted_model()), tmp_path / "b.onnx").read_bytes()
    assert first == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]  # no temporaries left


def test_failed_save_leaves_previous_output_and_no_temporaries(tmp_path, monkeypatch):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous")

    def broken_replace(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OutputError, match="No space left"):
        save(load(weighted_model()), target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]


def test_refuses_to_overwrite_the_input(tmp_path):
    source = tmp_path / "model.onnx"
    onnx.save(weighted_model(), source)
    before = digest(source)
    model = load(source)
    with pytest.raises(OutputError, match="refusing to overwrite the input"):
        save(model, source)
    link = tmp_path / "link.onnx"
    link.symlink_to(source)
    with pytest.raises(OutputError):
        save(model, link)
    assert digest(source) == before


def test_external_data_stays_lazy_and_is_streamed_beside_the_output(tmp_path):
    source_dir = tmp_path / "in"
    source_dir.mkdir()
    source = save_external(weighted_model(), source_dir / "model.onnx")
    weights_before = digest(source_dir / "weights.bin")
    model = load(source)
    lazies = [t._values for t in model.graph.tensors().values() if isinstance(getattr(t, "_values", None), ExternalValues)]
    assert len(lazies) == 2
    result = mapc.compile(model)
    assert all(value.loaded is None for value in lazies), "cleanup must not read weights it does not change"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    written = result.save(out_dir / "compiled.onnx")
    assert sorted(p.name for p in out_dir.iterdir()) == ["compiled.onnx", "compiled.onnx.data"]
    compiled = onnx.load(written, load_external_data=False)
    assert {e.value for t in compiled.graph.initializer for e in t.external_data if e.key == "location"} == {"compiled.onnx.data"}
    feeds = {"x": np.ones((2, 64), np.float32)}
    np.testing.assert_array_equal(run(load(written), feeds)["y"], run(load(source), feeds)["y"])
    assert digest(source_dir / "weights.bin") == weights_before


def test_loaded_but_unchanged_weights_are_not_embedded(tmp_path):
    source = save_external(weighted_model(), tmp_path / "model.onnx")
    model = load(source)
    weight = model.graph.tensors()["W1"]
    assert isinstance(weight.values, np.memmap) and not weight.values.flags.writeable
    written = save(model, tmp_path / "out.onnx")
    proto = onnx.load(written, load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in proto.graph.initializer if t.name == "W1")


def test_small_models_save_inline_unless_asked(tmp_path):
    model = load(weighted_model())
    inline = save(model, tmp_path / "inline.onnx")
    assert not (tmp_path / "inline.onnx.data").exists()
    assert all(not t.external_data for t in onnx.load(inline).graph.initializer)
    save(model, tmp_path / "ext.onnx", external_data=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size >= 64 * 64 * 4


def test_refuses_to_overwrite_the_weights_the_input_reads(tmp_path):
    source = save_external(weighted_model(), tmp_path / "model.onnx", location="out.onnx.data")
    with pytest.raises(OutputError, match="reads its weights"):
        save(load(source), tmp_path / "out.onnx")


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("/etc/passwd", "absolute path"),
        ("../secret.bin", "outside the model's folder"),
        ("sub/../../secret.bin", "outside the model's folder"),
        ("missing.bin", "does not exist"),
    ],
)
def test_external_locations_outside_the_folder_are_refused(tmp_path, location, message):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4096)
    path = save_external(weighted_model(), folder / "model.onnx")
    proto = onnx.load(path, load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, path)
    with pytest.raises(ModelError, match=message):
        load(path)


def test_symlink_escaping_the_folder_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    save_external(weighted_model(), outside / "model.onnx")
    (folder / "weights.bin").symlink_to(outside / "weights.bin")
    (folder / "model.onnx").write_bytes((outside / "model.onnx").read_bytes())
    with pytest.raises(ModelError, match="symlink"):
        load(folder / "model.onnx")


def test_short_external_file_is_refused(tmp_path):
    path = save_external(weighted_model(), tmp_path / "model.onnx")
    data = tmp_path / "weights.bin"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ModelError, match="has only 100 bytes"):
        load(path)


def test_external_data_without_a_folder_is_refused(tmp_path):
    path = save_external(weighted_model(), tmp_path / "model.onnx")
    with pytest.raises(ModelError, match="not loaded from a path"):
        load(path.read_bytes())


def test_model_copy_shares_weights(tmp_path):
    model = load(weighted_model())
    duplicate = model.copy()
    original_weight = model.graph.tensors()["W1"]
    copied_weight = duplicate.graph.tensors()["W1"]
    assert copied_weight is not original_weight
    assert copied_weight._values is original_weight._values


def test_fresh_names_are_unique_and_deterministic():
    model = load(weighted_model())
    names = [model.fresh_name("h") for _ in range(3)]
    assert names == ["h_1", "h_2", "h_3"]
    assert load(weighted_model()).fresh_name("h") == "h_1"


def test_models_sharing_weights_store_each_weight_once(tmp_path):
    """Two graphs from one checkpoint (a weight read lazily from external data and one held in
    memory): one data file, every weight once, both models run as before, sources untouched."""
    source_dir = tmp_path / "in"
    source_dir.mkdir()
    source = save_external(weighted_model(), source_dir / "model.onnx")
    before = digest(source_dir / "weights.bin")
    first, second = load(source), load(weighted_model())
    second.graph.tensors()["b"].values = np.random.default_rng(1).standard_normal(64).astype(np.float32)
    out = tmp_path / "out"
    out.mkdir()
    written = save_sharing_weights({out / "a.onnx": first, out / "b.onnx": second}, "shared.data")
    assert sorted(p.name for p in out.iterdir()) == ["a.onnx", "b.onnx", "shared.data"]
    # W1 is the same bytes in both (64*64 floats), stored once; the first model's b was external
    # already and stays so, the second's (other values, below the threshold) is embedded
    assert (out / "shared.data").stat().st_size == 64 * 64 * 4 + 64 * 4
    offsets = set()
    for path in written:
        proto = onnx.load(str(path), load_external_data=False)
        for tensor in proto.graph.initializer:
            if tensor.data_location == TensorProto.EXTERNAL:
                info = {e.key: e.value for e in tensor.external_data}
                assert info["location"] == "shared.data"
                offsets.add((info["offset"], info["length"]))
    assert len(offsets) == 2
    feeds = {"x": np.ones((2, 64), np.float32)}
    np.testing.assert_array_equal(run(load(written[0]), feeds)["y"], run(load(source), feeds)["y"])
    np.testing.assert_array_equal(run(load(written[1]), feeds)["y"], run(second, feeds)["y"])
    assert digest(source_dir / "weights.bin") == before


def test_sharing_weights_refuses_the_source_and_other_folders(tmp_path):
    source = save_external(weighted_model(), tmp_path / "model.onnx")
    model = load(source)
    with pytest.raises(OutputError, match="input model"):
        save_sharing_weights({source: model}, "shared.data")
    with pytest.raises(OutputError, match="reads its weights"):
        save_sharing_weights({tmp_path / "copy.onnx": model}, "weights.bin")
    (tmp_path / "other").mkdir()
    with pytest.raises(OutputError, match="one folder"):
        save_sharing_weights({tmp_path / "x.onnx": model, tmp_path / "other" / "y.onnx": model}, "shared.data")
    assert not list(tmp_path.glob(".*.tmp"))
