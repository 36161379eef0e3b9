"""A QOperator model (onnxruntime's quantize_static, QOperator format) through ``mapc compile`` as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from mapc.ir import load, run, verification_samples
from mapc.ir.errors import EXIT_OK
from tests.conftest import MAPC_SCRIPT
from tests.passes.qoperator.test_models import EXAMPLES, QOPERATOR_OPS, quantize_static, zoo

pytest.importorskip("onnxruntime.quantization")

SHAPE = "image:1,3,32,32"
#: The default pipeline without qoperator-to-qdq: what mapc did before it existed.
WITHOUT = "fixpoint(fix-shapes,fold-constants,peephole,cleanup),fuse,attention-mask,fixpoint(fold-constants,peephole,cleanup)"


def mapc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MAPC_SCRIPT, *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def qoperator_cnn(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("qoperator")
    quantize_static(EXAMPLES / "cnn.onnx", folder / "cnn_qop.onnx", per_channel=True, activations="QUInt8")
    return folder / "cnn_qop.onnx"


def test_compile_for_npu_places_the_converted_cnn(qoperator_cnn, tmp_path):
    before = qoperator_cnn.read_bytes()
    output, report = tmp_path / "out.onnx", tmp_path / "report.json"
    done = mapc("compile", str(qoperator_cnn), "--target", "npu", "--input-shape", SHAPE, "--no-cost-model", "-o", str(output),
                "--report", str(report))
    assert done.returncode == EXIT_OK, done.stderr
    assert "qoperator-to-qdq" in done.stdout and qoperator_cnn.read_bytes() == before
    data = json.loads(report.read_text())
    record = next(p for p in data["passes"] if p["name"] == "qoperator-to-qdq")
    assert record["counters"]["qlinear-conv"] == 4 and record["counters"]["qgemm"] == 1
    assert data["coverage"]["nodes_on_target"] == data["coverage"]["nodes_total"]
    assert data["coverage"]["macs_percent"] == 100.0

    unlowered = tmp_path / "unlowered.onnx"
    assert mapc("compile", str(qoperator_cnn), "--input-shape", SHAPE, "-o", str(unlowered), "-q").returncode == EXIT_OK
    compiled = onnx.load(unlowered)
    assert not QOPERATOR_OPS & {node.op_type for node in compiled.graph.node}
    reference, converted = load(qoperator_cnn), load(unlowered)
    step = 1 / 256  # the softmax output's scale, as onnxruntime's quantizer fixes it
    for sample in verification_samples(reference, seed=0, shapes={"image": [1, 3, 32, 32]}):
        error = np.abs(run(reference, sample.feeds)["probabilities"] - run(converted, sample.feeds)["probabilities"]).max()
        assert error <= step * (1 + 1e-6), sample.label


def test_without_the_pass_the_quantized_ops_fall_back(qoperator_cnn, tmp_path):
    report = tmp_path / "report.json"
    done = mapc("compile", str(qoperator_cnn), "--target", "npu", "--input-shape", SHAPE, "--no-cost-model", "--passes", WITHOUT,
                "-o", str(tmp_path / "out.onnx"), "--report", str(report), "-q")
    assert done.returncode == EXIT_OK, done.stderr
    data = json.loads(report.read_text())
    unsupported = next(r for r in data["fallback_by_reason"] if r["code"] == "op.not-supported")
    assert unsupported["ops"]["QLinearConv"] == 4 and unsupported["ops"]["com.microsoft::QGemm"] == 1
    assert data["coverage"]["nodes_on_target"] < data["coverage"]["nodes_total"]


def test_the_pass_is_listed():
    done = mapc("passes", "--json")
    assert done.returncode == EXIT_OK, done.stderr
    listing = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert "QuantizeLinear" in listing["qoperator-to-qdq"]["summary"]
    assert "dynamic_activations" in listing["qoperator-to-qdq"]["options"]


def test_dynamic_transformer_for_npu_needs_float_activations(tmp_path):
    """quantize_dynamic's DynamicQuantizeLinear has no NPU kernel: by default (exact) it stays on
    the CPU; --dynamic-activations float gives weight-only MatMuls the NPU takes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = tmp_path / "transformer_dyn.onnx"
    quantize_dynamic(str(EXAMPLES / "transformer.onnx"), str(quantized), weight_type=QuantType.QUInt8)
    shapes = ["--input-shape", "input_ids:1,16", "--input-shape", "attention_mask:1,16"]
    coverage = {}
    for mode in ("quantized", "float"):
        report = tmp_path / f"{mode}.json"
        done = mapc("compile", str(quantized), "--target", "npu", *shapes, "--dynamic-activations", mode, "-o", str(tmp_path / f"{mode}.onnx"),
                    "--report", str(report), "-q")
        assert done.returncode == EXIT_OK, done.stderr
        data = json.loads(report.read_text())
        coverage[mode] = data["coverage"]
        reasons = {r["code"]: r["ops"] for r in data["fallback_by_reason"]}
        assert ("DynamicQuantizeLinear" in reasons.get("op.not-supported", {})) == (mode == "quantized")
    assert coverage["float"]["macs_percent"] == 100.0 and coverage["float"]["nodes_percent"] >= 90
    assert coverage["quantized"]["macs_percent"] < coverage["float"]["macs_percent"]


def test_verify_each_passes_on_a_qoperator_model(tmp_path):
    """Every pass of the default pipeline checked against the QOperator model (on these samples
    the converted codes are identical, so float verification holds; see docs/passes/quantization.md)."""
    onnx.save(zoo(), tmp_path / "zoo.onnx")
    quantize_static(tmp_path / "zoo.onnx", tmp_path / "zoo_qop.onnx", per_channel=True, activations="QUInt8")
    report = tmp_path / "report.json"
    done = mapc("compile", str(tmp_path / "zoo_qop.onnx"), "--verify-each", "-o", str(tmp_path / "out.onnx"), "--report", str(report), "-q")
    assert done.returncode == EXIT_OK, done.stderr
    data = json.loads(report.read_text())
    record = next(p for p in data["passes"] if p["name"] == "qoperator-to-qdq")
    assert record["changed"] and record["verification"]["ok"]
    assert all(p["verification"]["ok"] for p in data["passes"])
