"""Models from other exporters that once crashed mapc (issue 16): each compiles, or is refused
with one line and the documented exit code."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.cli import main
from tests.conftest import make_model

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
