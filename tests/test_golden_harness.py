"""benchmarks/golden.py: the normalisation, the model hashes and the classes of differences."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import onnx
from onnx import TensorProto, helper

GOLDEN = Path(__file__).resolve().parents[1] / "benchmarks" / "golden.py"
_spec = importlib.util.spec_from_file_location("golden", GOLDEN)
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


def test_unk_names_are_renumbered_by_first_appearance():
    text, raw = golden.renumber_unk("[unk__7, s] [unk__3, unk__7] unk__30")
    assert text == "[unk__0, s] [unk__1, unk__0] unk__2"
    assert raw == ["unk__7", "unk__3", "unk__30"]


def test_report_normalisation_maps_the_issue_12_renames_and_drops_timings():
    old = {
        "mapc_version": "0.1.0",
        "seconds": 1.5,
        "passes": [
            {"name": "peephole", "seconds": 0.2, "counters": {"identity_reshape": 1, "noop-cast": 2}, "details": None, "notes": []},
            {"name": "fold-constants", "counters": {}, "notes": [{"code": "fold.too-large", "message": "m"}]},
            {"name": "check-static", "counters": {}, "notes": [{"code": "static.input-dim", "message": "m"}]},
        ],
    }
    new = {
        "mapc_version": "0.2.0",
        "seconds": 0.7,
        "passes": [
            {"name": "peephole", "seconds": 0.1, "counters": {"identity-reshape": 1, "identity-cast": 2}, "details": {"rules": {"identity-reshape": {"fired": 1}}}, "notes": []},
            {"name": "fold-constants", "counters": {}, "notes": [{"code": "fold-constants.too-large", "message": "m"}]},
            {"name": "check-static", "counters": {}, "notes": [{"code": "check-static.input-dim", "message": "m"}]},
        ],
    }
    assert golden._normalise(old) == golden._normalise(new)
    assert golden._normalise(golden._normalise(old)) == golden._normalise(old)


def test_only_the_renamed_prefixes_change():
    assert golden._normalise({"code": "shape.static"}, None) == {"code": "shape.static"}
    assert golden._rename_code("params.constant") == "params.constant"
    assert golden._rename_code("upgrade.not-needed") == "upgrade-opset.not-needed"
    assert golden._rename_code("fuse.noop-cast.unknown-dtype") == "fuse.identity-cast.unknown-dtype"
    assert golden._rename_code("noop-cast") == "identity-cast"


def _model(dims_out: list, dims_mid: list) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, dims_out)],
        value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT, dims_mid)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _hashes(tmp_path: Path, model: onnx.ModelProto, name: str) -> tuple[str, str, str, str]:
    path = tmp_path / name
    onnx.save(model, path)
    return golden.model_hashes(path)


def test_model_hashes_tell_renaming_from_identity_from_annotations(tmp_path):
    base = _hashes(tmp_path, _model(["unk__3", 4], ["unk__5", 4]), "base.onnx")
    renamed = _hashes(tmp_path, _model(["unk__8", 4], ["unk__9", 4]), "renamed.onnx")
    identity = _hashes(tmp_path, _model(["unk__3", 4], ["unk__3", 4]), "identity.onnx")
    named = _hashes(tmp_path, _model(["unk__3", 4], ["b", 4]), "named.onnx")
    assert renamed[0] == base[0] and renamed[1] != base[1]
    assert identity[0] != base[0] and identity[2] == base[2]
    assert named[2] != base[2] and named[3] == base[3]


def _record(attention: int = 2, quantize: dict | None = None, files: dict | None = None) -> dict:
    report = {"options": {"quantize": quantize}, "passes": [{"name": "fuse", "counters": {"attention": attention}, "notes": []}]}
    hashes = {"files": "h", "files_raw": "r", "files_unk_erased": "e", "files_no_value_info": "v"}
    hashes.update(files or {})
    record = {"exit_code": 0, "report": report, "ops": {"graph": {"MatMul": 4}, "functions": {}}}
    record.update({kind: {"out.onnx": digest} for kind, digest in hashes.items()})
    return record


def test_identical_records_have_no_class():
    assert golden.classify(_record(), _record()) == (set(), [], {})


def test_null_flags_are_class_b():
    old = _record(quantize={"scheme": "a8w8", "calibration_method": None, "accuracy_target": None})
    new = _record(quantize={"scheme": "a8w8"})
    classes, left, _ = golden.classify(old, new)
    assert classes == {"b-null-flags"} and not left


def test_a_set_flag_that_disappears_is_other():
    classes, left, _ = golden.classify(_record(quantize={"scheme": "a8w8", "calibration_method": "mse"}), _record(quantize={"scheme": "a8w8"}))
    assert classes == {"other"}
    assert left[0][0] == "report.options.quantize.calibration_method"


def test_more_attention_fusions_are_class_a_with_op_deltas():
    new = _record(attention=4, files={"files": "h2", "files_raw": "r2", "files_unk_erased": "e2", "files_no_value_info": "v2"})
    new["ops"] = {"graph": {"Attention": 2}, "functions": {"MatMul": 2}}
    classes, left, facts = golden.classify(_record(), new)
    assert classes == {"a-attention"} and not left
    assert facts["graph_ops"] == {"Attention": 2, "MatMul": -4}
    assert facts["function_ops"] == {"MatMul": 2}


def test_unk_only_differences_are_class_c_and_annotations_class_d():
    renamed = _record(files={"files_raw": "r2"})
    assert golden.classify(_record(), renamed)[0] == {"c-unk-names"}
    identity = _record(files={"files": "h2", "files_raw": "r2"})
    assert golden.classify(_record(), identity)[0] == {"c-unk-identity"}
    annotations = _record(files={"files": "h2", "files_raw": "r2", "files_unk_erased": "e2"})
    assert golden.classify(_record(), annotations)[0] == {"d-annotations"}
    different = _record(files={"files": "h2", "files_raw": "r2", "files_unk_erased": "e2", "files_no_value_info": "v2"})
    assert golden.classify(_record(), different)[0] == {"other"}


def test_an_exit_code_change_is_other():
    new = copy.deepcopy(_record())
    new["exit_code"] = 70
    assert golden.classify(_record(), new)[0] == {"other"}
