"""quantize: the ``norm_bias_type`` option (LayerNorm/InstanceNorm bias as int32 or uint8).

int32 at ``s_in · s_scale`` is the default, as for every weighted op. Qualcomm HTP rounds an
int32 LayerNorm bias to the 8-bit output's step, so ``qnn-htp`` asks for a uint8 bias under
8-bit activations (tests/targets/qnn/test_rules_against_qnn.py shows both on the emulator) and
keeps int32 under 16-bit ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import UsageError
from mapc.passes.quantize import resolve
from mapc.targets import get_target
from tests.conftest import make_model
from tests.passes.quantize.support import dequantize_of, quantize, sqnr_by_output

RNG = np.random.default_rng(5)


def norm_model(op: str):
    shape, channels = ([1, 8, 16], 16) if op == "LayerNormalization" else ([1, 6, 4, 4], 6)
    scale = numpy_helper.from_array((1 + 0.2 * RNG.standard_normal(channels)).astype(np.float32), "scale")
    bias = numpy_helper.from_array((0.3 * RNG.standard_normal(channels)).astype(np.float32), "bias")
    attrs = {"axis": -1} if op == "LayerNormalization" else {}
    nodes = [helper.make_node(op, ["x", "scale", "bias"], ["n"], **attrs), helper.make_node("Tanh", ["n"], ["y"])]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [scale, bias]), shape


@pytest.mark.parametrize("op", ["LayerNormalization", "InstanceNormalization"])
def test_the_bias_is_int32_at_the_input_times_scale_step_by_default(op):
    proto, _ = norm_model(op)
    model, _ = quantize(proto, norm_scale_type="uint8")
    [bias] = dequantize_of(model, op, 2)
    [scale] = dequantize_of(model, op, 1)
    [node] = [n for n in model.graph.nodes if n.op == op]
    data_scale = float(node.inputs[0].inputs[0].inputs[1].values)
    assert bias["codes"].dtype == np.int32 and int(bias["zero_point"]) == 0
    assert np.isclose(float(bias["scale"]), data_scale * float(scale["scale"]), rtol=1e-6)


@pytest.mark.parametrize("op", ["LayerNormalization", "InstanceNormalization"])
def test_a_uint8_bias_is_asymmetric_over_its_own_range(op):
    proto, shape = norm_model(op)
    model, _ = quantize(proto, norm_scale_type="uint8", norm_bias_type="uint8")
    [bias] = dequantize_of(model, op, 2)
    assert bias["codes"].dtype == np.uint8 and bias["zero_point"].dtype == np.uint8 and bias["axis"] is None
    values = numpy_helper.to_array(proto.graph.initializer[1])
    dequantized = (bias["codes"].astype(np.float64) - int(bias["zero_point"])) * float(bias["scale"])
    assert bias["codes"].max() == 255 or bias["codes"].min() == 0
    assert np.abs(dequantized - values).max() <= float(bias["scale"]) / 2 + 1e-7
    samples = [{"x": RNG.standard_normal(shape).astype(np.float32)} for _ in range(4)]
    int32_model, _ = quantize(proto, norm_scale_type="uint8")
    # on the CPU the two are equally accurate: the uint8 step is far below the output's
    assert min(sqnr_by_output(proto, model, samples).values()) > min(sqnr_by_output(proto, int32_model, samples).values()) - 0.5 > 25


def test_qnn_htp_asks_for_a_uint8_bias_under_8_bit_activations_only():
    support = get_target("qnn-htp").quantization
    assert resolve("a8w8", support)["norm_bias_type"] == "uint8"
    assert resolve("a16w8", support).get("norm_bias_type", "int32") == "int32"
    assert resolve("a8w8", get_target("npu").quantization).get("norm_bias_type", "int32") == "int32"


def test_unknown_norm_bias_type_is_a_usage_error():
    with pytest.raises(UsageError, match="norm_bias_type"):
        quantize(norm_model("LayerNormalization")[0], norm_bias_type="int8")
