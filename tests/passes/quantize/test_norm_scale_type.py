"""quantize: the ``norm_scale_type`` option (LayerNorm/InstanceNorm scale as int8 or uint8).

Qualcomm HTP validates ``LayerNorm`` only with a uint8 (asymmetric) scale: with mapc's
int8 symmetric scale, ``QNN.backendValidateOpConfig()`` fails with error 3110 and the QNN EP
aborts the process. The last test asks onnxruntime-qnn's HTP backend itself (in a child
process, as it can abort) and is skipped where the ``qnn`` extra is not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import UsageError, save
from tests.conftest import make_model
from tests.passes.quantize.support import dequantize_of, quantize, sqnr_by_output

RNG = np.random.default_rng(7)


def layernorm_model():
    gamma = numpy_helper.from_array((1 + 0.2 * RNG.standard_normal(16)).astype(np.float32), "gamma")
    beta = numpy_helper.from_array((0.1 * RNG.standard_normal(16)).astype(np.float32), "beta")
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1), helper.make_node("Tanh", ["ln"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16])], [gamma, beta])


@pytest.mark.parametrize(("norm_scale_type", "symmetric"), [("int8", True), ("uint8", False)])
def test_layernorm_scale_takes_the_requested_type(norm_scale_type, symmetric):
    proto = layernorm_model()
    model, _ = quantize(proto, norm_scale_type=norm_scale_type)
    [scale] = dequantize_of(model, "LayerNormalization", 1)
    assert scale["zero_point"].dtype == np.dtype(norm_scale_type)
    if symmetric:
        assert int(scale["zero_point"]) == 0 and np.abs(scale["codes"]).max() == 127
    else:  # asymmetric: the scale's range [min(0, gamma), max(gamma)] spans every code
        assert scale["codes"].max() == 255
    samples = [{"x": RNG.standard_normal((1, 8, 16)).astype(np.float32)} for _ in range(4)]
    assert min(sqnr_by_output(proto, model, samples).values()) > 20


def test_unknown_norm_scale_type_is_a_usage_error():
    with pytest.raises(UsageError, match="norm_scale_type"):
        quantize(layernorm_model(), norm_scale_type="int16")


QNN_CHILD = """
import sys, onnxruntime as ort, onnxruntime_qnn as qnn
ort.register_execution_provider_library("QNNExecutionProvider", qnn.get_library_path())
devices = [d for d in ort.get_ep_devices() if d.ep_name == "QNNExecutionProvider"]
options = ort.SessionOptions()
options.log_severity_level, options.log_verbosity_level = 0, 1
options.add_provider_for_devices(devices[:1], {"backend_path": qnn.get_qnn_htp_path(), "htp_arch": "73"})
ort.InferenceSession(sys.argv[1], options)
"""


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime_qnn") is None, reason="needs the qnn extra (onnxruntime-qnn)")
@pytest.mark.parametrize("scheme", ["a8w8", "a16w8"])
@pytest.mark.parametrize(("norm_scale_type", "verdict"), [("int8", "FAILED"), ("uint8", "PASSED")])
def test_qnn_htp_takes_layernorm_only_with_a_uint8_scale(tmp_path, scheme, norm_scale_type, verdict):
    model, _ = quantize(layernorm_model(), scheme=scheme, norm_scale_type=norm_scale_type)
    path = tmp_path / "ln.onnx"
    save(model, path)
    run = subprocess.run([sys.executable, "-c", QNN_CHILD, str(path)], capture_output=True, text=True, timeout=300)
    verdicts = [line for line in (run.stdout + run.stderr).splitlines() if "OrtNodeUnit (LayerNormalization)" in line]
    assert verdicts, run.stderr[-2000:]
    assert all(f"Validation {verdict}" in line for line in verdicts), verdicts
