"""Real compiles of the example models that differ in known ways, compiled once per session.

Each is ``mapc compile`` run as the command line runs it, with a JSON report: the CNN at batch 1
quantized for ``npu`` (``cq``, twice), the same with ``--cpu-ops Softmax``, for ``ethos-u55``, with
a16w8 and in float; the transformer at sequence 8 for ``npu`` in float (``t``), quantized, with
``--cpu-ops Softmax``, and with an extra ``Acos`` (which no NPU target runs) on its output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mapc.cli import main
from mapc.ir import load, save
from tests.conftest import append_to_first_output

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CNN = [str(EXAMPLES / "cnn.onnx"), "--dim", "batch=1"]
SHAPES = ["--input-shape", "input_ids:1,8", "--input-shape", "attention_mask:1,8"]
QUANTIZE = ["--quantize", "--calibration", "random"]

#: name -> (model, flags); "t_acos" is the transformer with an Acos appended to its output.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "cq": ("cnn", [*CNN, "--target", "npu", *QUANTIZE]),
    "cq_again": ("cnn", [*CNN, "--target", "npu", *QUANTIZE]),
    "cq_softmax": ("cnn", [*CNN, "--target", "npu", *QUANTIZE, "--cpu-ops", "Softmax"]),
    "cq_ethos": ("cnn", [*CNN, "--target", "ethos-u55", *QUANTIZE]),
    "cq16": ("cnn", [*CNN, "--target", "npu", "--quantize", "a16w8", "--calibration", "random"]),
    "c": ("cnn", [*CNN, "--target", "npu"]),
    "c_dynamic": ("cnn", [str(EXAMPLES / "cnn.onnx"), "--target", "npu"]),
    "t": ("transformer", [str(EXAMPLES / "transformer.onnx"), *SHAPES, "--target", "npu"]),
    "tq": ("transformer", [str(EXAMPLES / "transformer.onnx"), *SHAPES, "--target", "npu", *QUANTIZE]),
    "t_softmax": ("transformer", [str(EXAMPLES / "transformer.onnx"), *SHAPES, "--target", "npu", "--cpu-ops", "Softmax"]),
    "t_acos": ("transformer", ["{acos}", *SHAPES, "--target", "npu"]),
}


@pytest.fixture(scope="session")
def acos_model(tmp_path_factory) -> Path:
    """The example transformer with ``Acos`` appended to its first output (an op no NPU runs)."""
    model = load(EXAMPLES / "transformer.onnx")
    append_to_first_output(model, "Acos")
    return save(model, tmp_path_factory.mktemp("models") / "transformer_acos.onnx")


@pytest.fixture(scope="session")
def reports(tmp_path_factory, acos_model) -> dict[str, Path]:
    """name -> the JSON report of that compile (see :data:`VARIANTS`)."""
    folder = tmp_path_factory.mktemp("compiles")
    paths = {}
    for name, (_, flags) in VARIANTS.items():
        argv = [str(acos_model) if flag == "{acos}" else flag for flag in flags]
        paths[name] = folder / f"{name}.json"
        assert main(["compile", *argv, "-o", str(folder / f"{name}.onnx"), "--report", str(paths[name]), "-q"]) == 0
    return paths


def read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
