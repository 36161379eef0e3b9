"""mapc compile --target qnn-htp as a Snapdragon developer runs it: QNN checks the plan, measures
the accuracy on the HTP emulator and compiles the context binary (needs the qnn extra)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from mapc.cli import main
from mapc.targets.qnn import ask_qnn, oracle
from tests.targets.qnn.support import needs_qnn

EXAMPLES = {
    "transformer": ["examples/transformer.onnx", "--input-shape", "input_ids:1,16", "--input-shape", "attention_mask:1,16"],
    "cnn": ["examples/cnn.onnx", "--dim", "batch=1"],
}
HTP_V73 = {"soc_model": "43", "enable_htp_fp16_precision": "1"}


@needs_qnn
@pytest.mark.parametrize("example", list(EXAMPLES))
def test_the_examples_compile_for_qnn_htp_with_every_node_but_the_boundary_on_htp(tmp_path, example):
    output, report = tmp_path / f"{example}.onnx", tmp_path / f"{example}.json"
    argv = ["compile", *EXAMPLES[example], "-o", str(output), "--target", "qnn-htp", "--quantize", "a8w8", "--calibration", "random",
            "--check-with-qnn", "--accuracy-on", "qnn", "--emit", "epcontext", "--report", str(report), "-q"]
    assert main(argv) == 0
    data = json.loads(report.read_text())
    qnn = data["qnn"]
    assert qnn["ok"] and qnn["built"] and qnn["overclaims"] == 0 and qnn["underclaims"] == 0
    assert set(qnn["counts"]) == {"htp", "boundary"} and qnn["counts"]["boundary"] <= 2
    for row in data["device_accuracy"]["outputs"]:
        assert abs(row["sqnr_db"] - row["cpu_sqnr_db"]) <= 1.0, row
    context = tmp_path / f"{example}_ctx.onnx"
    assert data["epcontext"]["path"] == str(context) and context.stat().st_size == data["epcontext"]["bytes"]
    assert "EPContext" in {node.op_type for node in onnx.load(str(context)).graph.node}
    if example == "cnn":  # the context binary loads without compiling and computes what the QDQ model does on HTP
        sample = [{"image": np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)}]
        from_qdq = ask_qnn(onnx.load(str(output)), samples=sample, provider_options=HTP_V73)
        from_context = ask_qnn(onnx.load(str(context)), samples=sample, provider_options=HTP_V73)
        assert from_context.built and from_qdq.outputs is not None and from_context.outputs is not None
        np.testing.assert_array_equal(from_context.outputs[0]["probabilities"], from_qdq.outputs[0]["probabilities"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target", "npu", "--check-with-qnn"], "--check-with-qnn needs a target that QNN compiles"),
        (["--check-with-qnn"], "--check-with-qnn needs --target"),
        (["--target", "npu", "--emit", "epcontext"], "--emit epcontext needs a target that QNN compiles"),
        (["--emit", "epcontext"], "--emit epcontext needs a target"),
        (["--target", "qnn-htp", "--accuracy-on", "qnn"], "--accuracy-on needs --quantize"),
        (["--target", "qnn-htp:v99"], "unknown HTP architecture 'v99'"),
        (["--target", "qnn-htp", "--emit", "epcontext=no/such/folder"], "--emit epcontext=no/such/folder: the folder does not exist"),
    ],
)
def test_flag_mistakes_are_one_line_errors_before_any_work(tmp_path, capsys, extra, message):
    output = tmp_path / "out.onnx"
    assert main(["compile", *EXAMPLES["cnn"], "-o", str(output), *extra]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not output.exists()


def test_without_the_qnn_extra_the_flag_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(oracle, "qnn_available", lambda: False)
    argv = ["compile", *EXAMPLES["cnn"], "-o", str(tmp_path / "out.onnx"), "--target", "qnn-htp", "--check-with-qnn"]
    assert main(argv) == 2
    assert "pip install 'mapc[qnn]'" in capsys.readouterr().err


@needs_qnn
def test_a_float_model_on_v68_fails_in_qnn_and_the_error_names_what_its_ep_took(tmp_path, capsys):
    """v68 has no fp16: mapc keeps the float transformer on the CPU, QNN's EP takes it anyway and
    cannot finalize the graph. Exit 1, one line that says so."""
    argv = ["compile", *EXAMPLES["transformer"], "-o", str(tmp_path / "out.onnx"), "--target", "qnn-htp:v68", "--check-with-qnn", "-q"]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("mapc: error: QNN did not build the compiled model")
    assert "node(s) mapc keeps on the CPU and cannot be told to leave them" in error and "float32 tensors are not accepted" in error
