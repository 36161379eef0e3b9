"""``mapc compile --quantize``: as a user runs it."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mapc.cli import main
from tests.conftest import make_model

RNG = np.random.default_rng(3)


def write_classifier(folder):
    proto = make_model(
        [
            helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["g"]),
            helper.make_node("Flatten", ["g"], ["f"]),
            helper.make_node("Gemm", ["f", "fc", "fc_b"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        [
            numpy_helper.from_array((RNG.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w"),
            numpy_helper.from_array((RNG.standard_normal(8) * 0.1).astype(np.float32), "b"),
            numpy_helper.from_array(RNG.standard_normal((10, 8)).astype(np.float32), "fc"),
            numpy_helper.from_array((RNG.standard_normal(10) * 0.1).astype(np.float32), "fc_b"),
        ],
    )
    path = folder / "net.onnx"
    onnx.save(proto, path)
    samples = folder / "calibration"
    samples.mkdir()
    for index in range(10):
        np.savez(samples / f"{index:02d}.npz", image=RNG.standard_normal((1, 3, 8, 8)).astype(np.float32))
    return path, samples


def test_compile_with_quantize_writes_a_qdq_model_and_prints_the_accuracy_report(tmp_path, capsys):
    model, samples = write_classifier(tmp_path)
    out, report = tmp_path / "net.q.onnx", tmp_path / "report.json"
    code = main(["compile", str(model), "-o", str(out), "--quantize", "a8w8", "--calibration", str(samples), "--calibration-method", "mse", "--report", str(report)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "quantized vs float" in printed and "top offenders" in printed and "probs" in printed
    written = onnx.load(out)
    onnx.checker.check_model(written, full_check=True)
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in written.graph.node}
    details = next(p for p in json.loads(report.read_text())["passes"] if p["name"] == "quantize")["details"]
    assert details["calibration"]["method"] == "mse" and details["calibration"]["samples"] == 8
    assert details["accuracy"]["outputs"][0]["top1_agreement"] >= 0.5


def test_accuracy_target_promotions_are_printed(tmp_path, capsys):
    model, samples = write_classifier(tmp_path)
    code = main(["compile", str(model), "-o", str(tmp_path / "out.onnx"), "--quantize", "a8w8", "--calibration", str(samples), "--accuracy-target", "40"])
    printed = capsys.readouterr().out
    assert code == 0 and "accuracy target 40.0 dB" in printed


def test_inconsistent_quantize_flags_are_usage_errors(tmp_path, capsys):
    model, samples = write_classifier(tmp_path)
    out = str(tmp_path / "out.onnx")
    cases = [
        (["--quantize", "a8w8"], "--quantize needs --calibration"),
        (["--calibration", str(samples)], "--calibration needs --quantize"),
        (["--quantize", "a8w8", "--calibration", str(samples), "--verify"], "quantization cannot meet"),
        (["--quantize", "a2w2", "--calibration", str(samples)], "unknown quantization scheme"),
        (["--quantize", "a8w8", "--calibration", str(tmp_path / "missing")], "no such file or directory"),
    ]
    for flags, message in cases:
        assert main(["compile", str(model), "-o", out, *flags]) == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error


def test_a_float_double_float_cast_pair_quantizes(tmp_path, capsys):
    """Found by the random-graph fuzzer: onnxruntime drops a lossless Cast pair even with
    optimizations off, leaving the accuracy probe's If branches reading a missing tensor; the
    input ran, yet the compile failed with exit 3 (peephole now removes the pair)."""
    nodes = [helper.make_node("Cast", ["x"], ["t2"], to=TensorProto.DOUBLE), helper.make_node("Cast", ["t2"], ["t4"], to=TensorProto.FLOAT),
             helper.make_node("Flatten", ["t4"], ["y"], axis=0)]
    source = tmp_path / "casts.onnx"
    onnx.save(make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 3])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 9])]), source)
    code = main(["compile", str(source), "-o", str(tmp_path / "out.onnx"), "-q", "--quantize", "a8w8", "--calibration", "random"])
    assert code == 0, capsys.readouterr().err
