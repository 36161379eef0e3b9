"""The shape flags as a user runs them: --input-shape, --dim, --require-static, and inspect."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper

from mapc.cli import main
from mapc.ir import is_static, load
from tests.conftest import make_model

F, I64 = TensorProto.FLOAT, TensorProto.INT64


@pytest.fixture
def model_path(tmp_path):
    """input_ids[batch, seq] and mask[batch, seq]; the mask is reshaped with a Shape-built target."""
    nodes = [
        helper.make_node("Shape", ["ids"], ["shape"]),
        helper.make_node("Reshape", ["mask", "shape"], ["m"]),
        helper.make_node("Cast", ["m"], ["mf"], to=F),
        helper.make_node("Cast", ["ids"], ["idf"], to=F),
        helper.make_node("Mul", ["idf", "mf"], ["y"]),
    ]
    proto = make_model(
        nodes,
        [helper.make_tensor_value_info("ids", I64, ["batch", "seq"]), helper.make_tensor_value_info("mask", I64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", F, ["batch", "seq"])],
    )
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, path)
    return path


def compile_cli(path, *flags, capsys=None):
    code = main(["compile", str(path), "-o", str(path.with_name("out.onnx")), "-q", *flags])
    return code, path.with_name("out.onnx")


def test_input_shape_and_dim_give_a_static_model(model_path, capsys):
    report = model_path.with_name("report.json")
    code, out = compile_cli(model_path, "--input-shape", "ids:1,16", "--require-static", "--verify", "--report", str(report))
    assert code == 0
    model = load(out)
    assert "Shape" not in [n.op for n in model.graph.nodes]
    assert all(is_static(t.shape) for t in [*model.graph.inputs, *model.graph.outputs])
    data = json.loads(report.read_text())
    assert data["options"]["input_shapes"] == {"ids": [1, 16]} and data["options"]["require_static"] is True
    assert data["passes"][-1]["name"] == "check-static" and data["passes"][-1]["details"]["dynamic"] == []
    assert data["verification"]["ok"]


def test_dims_alone(model_path):
    code, out = compile_cli(model_path, "--dim", "batch=2", "--dim", "seq=3", "--require-static")
    assert code == 0 and [t.shape for t in load(out).graph.inputs] == [[2, 3], [2, 3]]


def test_require_static_fails_with_one_line_when_a_dim_is_left(model_path, capsys):
    code, out = compile_cli(model_path, "--dim", "batch=1", "--require-static")
    err = capsys.readouterr().err.strip()
    assert code == 1 and not out.exists()
    assert err.startswith("mapc: error: --require-static:") and "ids[1] (seq)" in err and len(err.splitlines()) == 1


def test_leftovers_are_warned_about_without_require_static(model_path, capsys):
    main(["compile", str(model_path), "-o", str(model_path.with_name("out.onnx")), "--dim", "batch=1"])
    out = capsys.readouterr().out
    assert "warning: check-static: input dim ids[1] (seq) is not fixed" in " ".join(out.split())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--input-shape", "ids=1,2"], "expected NAME:D1,D2,..."),
        (["--input-shape", "ids:1,a"], "dims must be whole numbers"),
        (["--input-shape", "ids:1,-2"], "must not be negative"),
        (["--input-shape", "ids:1,2", "--input-shape", "ids:1,3"], "given twice"),
        (["--dim", "batch"], "expected NAME=VALUE"),
        (["--dim", "batch=one"], "must be a whole number"),
        (["--dim", "batch=1", "--dim", "batch=2"], "given twice"),
        (["--dim", "bach=1"], "no input or output dim is named 'bach'"),
        (["--input-shape", "nope:1,2"], "'nope' is not an input of the model"),
        (["--input-shape", "ids:1,2,3"], "has 2 dims"),
        (["--input-shape", "ids:1,2", "--input-shape", "mask:1,3"], "dim 'seq' is 3 in input mask[1] but 2 from input ids[1]"),
    ],
)
def test_bad_requests_exit_2_with_one_line(model_path, capsys, flags, message):
    code, _ = compile_cli(model_path, *flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_names_with_colons_work(tmp_path):
    proto = make_model([helper.make_node("Relu", ["input:0"], ["y"])], [helper.make_tensor_value_info("input:0", F, ["n", 2])], [helper.make_tensor_value_info("y", F, ["n", 2])])
    path = tmp_path / "tf.onnx"
    onnx.save_model(proto, path)
    code, out = compile_cli(path, "--input-shape", "input:0:3,2")
    assert code == 0 and load(out).graph.inputs[0].shape == [3, 2]


def test_inspect_lists_inputs_needing_shapes_and_the_flags(model_path, tmp_path, capsys):
    assert main(["inspect", str(model_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "dynamic dims (fix them for an NPU): ids[0]=batch, ids[1]=seq, mask[0]=batch, mask[1]=seq" in out
    assert "--dim batch=<value> --dim seq=<value>" in out


def test_inspect_json_covers_unnamed_and_expression_dims(tmp_path, capsys):
    proto = make_model(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        [helper.make_tensor_value_info("a", F, ["past + seq", 4]), helper.make_tensor_value_info("b", F, [None, 4])],
        [helper.make_tensor_value_info("y", F, [None, 4])],
    )
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, path)
    assert main(["inspect", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["inputs_needing_shapes"] == ["a", "b"]
    assert {"input": "b", "axis": 0, "dim": None} in summary["dynamic_dims"]
    assert summary["suggested_flags"] == "--dim past=<value> --dim seq=<value> --input-shape b:<?>,4"


def test_inspect_of_a_static_model(tmp_path, capsys):
    proto = make_model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, [1, 2])], [helper.make_tensor_value_info("y", F, [1, 2])])
    path = tmp_path / "s.onnx"
    onnx.save_model(proto, path)
    assert main(["inspect", str(path)]) == 0
    assert "all input dims are static" in capsys.readouterr().out


def test_passes_lists_the_new_passes(capsys):
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    for name in ("fix-shapes", "fold-constants", "peephole", "check-static"):
        assert name in out


def test_the_report_says_what_the_compile_removed(model_path, capsys):
    report = model_path.with_name("report.json")
    main(["compile", str(model_path), "-o", str(model_path.with_name("out.onnx")), "--dim", "batch=1", "--dim", "seq=4", "--report", str(report)])
    printed = " ".join(capsys.readouterr().out.split())
    assert "removed: Reshape 1, Shape 1" in printed
    assert json.loads(report.read_text())["op_changes"] == {"Reshape": -1, "Shape": -1}


def test_require_static_is_appended_to_a_custom_pipeline(model_path, capsys):
    code, _ = compile_cli(model_path, "--passes", "cleanup", "--require-static")
    assert code == 1 and "--require-static" in capsys.readouterr().err
