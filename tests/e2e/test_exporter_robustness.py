"""Models from other exporters that once crashed mapc (issue 16): each compiles, or is refused
with one line and the documented exit code."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.cli import main
from tests.conftest import MAPC_SCRIPT, make_model

F = TensorProto.FLOAT


def compile_cli(tmp_path, proto: onnx.ModelProto, *flags: str) -> tuple[int, object]:
    """Save ``proto`` and run ``mapc compile`` on it; (exit code, output path)."""
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, path)
    out = tmp_path / "out.onnx"
    return main(["compile", str(path), "-o", str(out), "-q", *flags]), out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mapc: error: "), err
    return err[0]


def run(path, feeds) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("flags", [("--dim", "N=2"), ("--input-shape", "x:2,3")])
def test_an_initializer_as_graph_output_survives_fixed_shapes(tmp_path, flags):
    weight = numpy_helper.from_array(np.arange(2, dtype=np.float32), "w")
    proto = make_model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", F, ["N", 3])],
        [helper.make_tensor_value_info("y", F, ["N", 3]), helper.make_tensor_value_info("w", F, [2])],
        [weight],
    )
    code, out = compile_cli(tmp_path, proto, *flags)
    assert code == 0
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    y, w = run(out, {"x": x})
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(w, [0, 1])


def relu(**attrs) -> onnx.ModelProto:
    return make_model(
        [helper.make_node("Relu", ["x"], ["y"], **attrs)],
        [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, [2, 3])],
    )


def with_op(proto: onnx.ModelProto, op: str, **attrs) -> onnx.ModelProto:
    node = proto.graph.node[0]
    node.op_type = op
    node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
    return proto


@pytest.mark.parametrize(
    "broken, message",
    [
        (with_op(relu(), "Transpose", perm=[0, 1, 2]), "Invalid attribute perm"),
        (with_op(relu(), "Cast", to=0), "casts to 0"),
        (make_model([helper.make_node("Add", ["x", "i"], ["y"])],
                    [helper.make_tensor_value_info("x", F, [2]), helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
                    [helper.make_tensor_value_info("y", F, [2])]), "inconsistent type"),
        (make_model([helper.make_node("Relu", ["x"], ["y"])], [helper.make_tensor_value_info("x", F, [2])],
                    [helper.make_tensor_value_info("y", F, [2])], opset=1), "no implementation of Relu-1"),
    ],
    ids=["transpose-perm", "cast-to-0", "type-mismatch", "relu-1"],
)
def test_models_onnxruntime_refuses_are_refused_at_load(tmp_path, capsys, broken, message):
    if broken.opset_import[0].version == 1:
        broken.ir_version = 3
    code, out = compile_cli(tmp_path, broken)
    assert code == 3 and not out.exists()
    assert message in one_error_line(capsys)


def test_an_unknown_operator_of_an_imported_domain_is_refused(tmp_path, capsys):
    proto = relu()
    proto.graph.node[0].domain = "com.acme"
    proto.opset_import.append(helper.make_opsetid("com.acme", 1))
    code, _ = compile_cli(tmp_path, proto)
    assert code == 3 and "neither onnx nor onnxruntime defines it" in one_error_line(capsys)


@pytest.mark.parametrize("declared", ["no shape", "no type"])
def test_outputs_declared_without_shape_or_type_compile_and_get_typed(tmp_path, declared):
    proto = relu()
    if declared == "no shape":
        proto.graph.output[0].type.tensor_type.ClearField("shape")
    else:
        proto.graph.output[0].ClearField("type")
    code, out = compile_cli(tmp_path, proto, "--verify")
    assert code == 0
    output = onnx.load(out).graph.output[0].type.tensor_type
    assert output.elem_type == F and [d.dim_value for d in output.shape.dim] == [2, 3]


def test_target_opset_with_a_contrib_domain_imported(tmp_path):
    proto = make_model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("FastGelu", ["r"], ["y"], domain="com.microsoft")],
        [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, [2, 3])],
        opset=17,
    )
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    code, out = compile_cli(tmp_path, proto, "--target-opset", "21")
    assert code == 0
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(tmp_path / "model.onnx", {"x": x})[0], rtol=1e-5, atol=1e-6)
    assert {o.domain: o.version for o in onnx.load(out).opset_import}[""] == 21


def bfloat16_model() -> onnx.ModelProto:
    """x rounded through bfloat16 (a lossy Cast pair), a bfloat16 weight cast up for a MatMul, and
    a bfloat16 graph output."""
    weight = helper.make_tensor("w", TensorProto.BFLOAT16, [3, 4], np.linspace(-1, 1, 12).tolist())
    nodes = [
        helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16),
        helper.make_node("Cast", ["xb"], ["xf"], to=F),
        helper.make_node("Cast", ["w"], ["wf"], to=F),
        helper.make_node("MatMul", ["xf", "wf"], ["y"]),
        helper.make_node("Identity", ["xb"], ["yb"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", F, ["N", 3])],
        [helper.make_tensor_value_info("y", F, ["N", 4]), helper.make_tensor_value_info("yb", TensorProto.BFLOAT16, ["N", 3])],
        [weight],
    )


def test_bfloat16_models_inspect(tmp_path, capsys):
    path = tmp_path / "model.onnx"
    onnx.save_model(bfloat16_model(), path)
    assert main(["inspect", str(path), "--json"]) == 0
    assert '"bfloat16"' in capsys.readouterr().out


@pytest.mark.parametrize("flags", [("--verify",), ("--quantize", "--calibration", "random")], ids=["verify", "quantize"])
def test_bfloat16_models_compile(tmp_path, flags):
    code, out = compile_cli(tmp_path, bfloat16_model(), "--dim", "N=2", *flags)
    assert code == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.type for o in session.get_outputs()] == ["tensor(float)", "tensor(bfloat16)"]
    if "--verify" in flags:  # the lossy Cast pair stays: outputs equal the input model's
        x = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32) * 100
        expected = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(session.run(["y"], {"x": x})[0], expected.run(["y"], {"x": x})[0])


def never_runs() -> onnx.ModelProto:
    """Reshape to Shape(x)·[1, 2] never fits x; once folded, the MatMul after it is invalid."""
    return make_model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Mul", ["s", "k"], ["t"]),
            helper.make_node("Reshape", ["x", "t"], ["r"]),
            helper.make_node("MatMul", ["r", "w"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, None)],
        [numpy_helper.from_array(np.array([1, 2], np.int64), "k"), numpy_helper.from_array(np.ones((3, 4), np.float32), "w")],
    )


def test_a_model_that_loads_but_never_runs_is_refused_when_folding_makes_it_invalid(tmp_path, capsys):
    code, out = compile_cli(tmp_path, never_runs())
    assert code == 3 and not out.exists()
    line = one_error_line(capsys)
    assert "the input model does not run in onnxruntime" in line and "Incompatible dimensions" in line


def test_onnxruntime_logs_nothing_of_its_own(tmp_path):
    """onnxruntime's [E:onnxruntime...] lines go to the process's stderr; only mapc's line may."""
    path = tmp_path / "model.onnx"
    onnx.save_model(never_runs(), path)
    done = subprocess.run([MAPC_SCRIPT, "compile", str(path), "-q"], capture_output=True, text=True, check=False)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "[E:onnxruntime" not in done.stderr


def test_quantize_a_concat_whose_output_type_nothing_infers(tmp_path):
    """A contrib op onnx cannot infer through feeds a Concat: its output has no known type."""
    proto = make_model(
        [
            helper.make_node("FastGelu", ["x"], ["g"], domain="com.microsoft"),
            helper.make_node("Concat", ["g", "x"], ["c"], axis=0),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, [4, 3])],
    )
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    code, out = compile_cli(tmp_path, proto, "--quantize", "--calibration", "random")
    assert code == 0
    x = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32) / 2  # inside the calibrated range
    np.testing.assert_allclose(run(out, {"x": x})[0], run(tmp_path / "model.onnx", {"x": x})[0], atol=0.05)


def embedding() -> onnx.ModelProto:
    """ids[batch, seq] -> a [batch, seq, 64] float embedding."""
    table = numpy_helper.from_array(np.zeros((10, 64), np.float32), "table")
    return make_model(
        [helper.make_node("Gather", ["table", "ids"], ["embedded"]), helper.make_node("Relu", ["embedded"], ["y"])],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", F, ["batch", "seq", 64])],
        [table],
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--input-shape", "ids:1,100000000000000000000000000"), "not a plausible dim size"),
        (("--input-shape", "ids:1000000000000,16"), "tensor 'ids' [1000000000000, 16] hold 128.0 TB, more than half this machine's memory"),
        (("--dim", "batch=1000000000000", "--dim", "seq=1"), "tensor 'ids' [1000000000000, 1] hold 8.0 TB"),
    ],
)
def test_absurd_shapes_are_refused_before_any_work(tmp_path, capsys, flags, message):
    code, out = compile_cli(tmp_path, embedding(), *flags)
    assert code == 2 and not out.exists()
    assert message in one_error_line(capsys)


def test_a_huge_intermediate_tensor_is_refused_once_shapes_are_inferred(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mapc.ir.memory.tensor_budget", lambda: 1 << 20)  # a 2 MiB machine
    code, out = compile_cli(tmp_path, embedding(), "--input-shape", "ids:1,1000")  # ids: 8 kB, embedded: 256 kB
    assert code == 0
    out.unlink()
    code, out = compile_cli(tmp_path, embedding(), "--input-shape", "ids:1,10000")  # embedded: 2.56 MB
    assert code == 2 and not out.exists()
    assert "the fixed shapes make tensor 'embedded' [1, 10000, 64] hold 2.6 MB" in one_error_line(capsys)


def test_minus_one_input_dims_are_fixed_like_symbolic_ones(tmp_path):
    proto = relu()
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_value = -1
    code, out = compile_cli(tmp_path, proto, "--input-shape", "x:5,3", "--require-static", "--verify")
    assert code == 0
    assert [d.dim_value for d in onnx.load(out).graph.input[0].type.tensor_type.shape.dim] == [5, 3]


def test_a_contrib_domain_used_but_not_imported_is_imported_with_a_warning(tmp_path, capsys):
    proto = make_model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("FastGelu", ["r"], ["y"], domain="com.microsoft")],
        [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, [2, 3])],
    )
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, path)
    report, out = tmp_path / "report.json", tmp_path / "out.onnx"
    assert main(["compile", str(path), "-o", str(out), "--verify", "--report", str(report)]) == 0
    assert "warning: load: nodes use domain 'com.microsoft', which the model does not import" in " ".join(capsys.readouterr().out.split())
    assert [n["code"] for n in json.loads(report.read_text())["load_notes"]] == ["load.domain-imported"]
    assert {o.domain: o.version for o in onnx.load(out).opset_import}["com.microsoft"] == 1
    x = np.random.default_rng(4).standard_normal((2, 3)).astype(np.float32)
    assert run(out, {"x": x})[0].shape == (2, 3)


def test_layer_norm_below_opset_17_compiles_for_a_target(tmp_path, capsys):
    weights = [numpy_helper.from_array(np.linspace(0.5, 2, 8).astype(np.float32), n) for n in ("scale", "bias")]
    proto = make_model(
        [helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["n"], epsilon=1e-5), helper.make_node("Relu", ["n"], ["y"])],
        [helper.make_tensor_value_info("x", F, ["batch", 16, 8])],
        [helper.make_tensor_value_info("y", F, ["batch", 16, 8])],
        weights,
        opset=14,
    )
    code, out = compile_cli(tmp_path, proto, "--input-shape", "x:2,16,8", "--require-static", "--verify", "--target", "npu")
    assert code == 0
    x = (np.random.default_rng(5).standard_normal((2, 16, 8)) * 50).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(tmp_path / "model.onnx", {"x": x})[0], rtol=1e-4, atol=1e-5)


def winml_image_scaler(opset: int) -> onnx.ModelProto:
    """A WinML-style front end: pixels scaled and mean-shifted by ImageScaler, then a Conv."""
    weight = numpy_helper.from_array(np.random.default_rng(6).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    proto = make_model(
        [helper.make_node("ImageScaler", ["pixels"], ["scaled"], scale=1 / 58.4, bias=[-2.1179, -2.0357, -1.8044]),
         helper.make_node("Conv", ["scaled", "w"], ["y"], pads=[1, 1, 1, 1])],
        [helper.make_tensor_value_info("pixels", F, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", F, [1, 4, 8, 8])],
        [weight],
        opset=opset,
    )
    proto.ir_version = 7
    return proto


def test_image_scaler_compiles_into_mul_and_add_with_the_same_outputs(tmp_path):
    code, out = compile_cli(tmp_path, winml_image_scaler(9), "--verify")
    assert code == 0
    assert [n.op_type for n in onnx.load(out).graph.node] == ["Mul", "Add", "Conv"]
    pixels = np.random.default_rng(7).integers(0, 256, (1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"pixels": pixels})[0], run(tmp_path / "model.onnx", {"pixels": pixels})[0])


def test_image_scaler_after_opset_9_is_refused_as_onnxruntime_does(tmp_path, capsys):
    code, _ = compile_cli(tmp_path, winml_image_scaler(10))
    assert code == 3 and "unknown operator 'ImageScaler' in ai.onnx opset 10" in one_error_line(capsys)


@pytest.mark.parametrize("where", ["report", "output"])
def test_an_unwritable_report_or_output_fails_before_anything_is_written(tmp_path, capsys, where):
    path = tmp_path / "model.onnx"
    onnx.save_model(relu(), path)
    missing = tmp_path / "missing"
    out = missing / "out.onnx" if where == "output" else tmp_path / "out.onnx"
    flags = ["--report", str(missing / "report.json")] if where == "report" else []
    assert main(["compile", str(path), "-o", str(out), "-q", *flags]) == 4
    assert f"the folder {missing} does not exist" in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_a_quantized_compile_keeps_the_inputs_weights_external(tmp_path):
    weight = numpy_helper.from_array(np.random.default_rng(8).standard_normal((64, 64)).astype(np.float32), "w")
    proto = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [helper.make_tensor_value_info("x", F, [4, 64])],
        [helper.make_tensor_value_info("y", F, [4, 64])],
        [weight],
    )
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, path, save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    out = tmp_path / "out.onnx"
    assert main(["compile", str(path), "-o", str(out), "-q", "--quantize", "--calibration", "random"]) == 0
    assert (tmp_path / "out.onnx.data").stat().st_size >= 64 * 64  # the int8 weight
    external = [t.name for t in onnx.load(out, load_external_data=False).graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external == ["w_quantized"]
    x = np.random.default_rng(9).standard_normal((4, 64)).astype(np.float32)
    assert run(out, {"x": x})[0].shape == (4, 64)
