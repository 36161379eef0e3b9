"""Mixed 8/16-bit activations on qnn-htp, backed by QNN: a unit whose input and output types differ
is no unit to the EP (mapc's plan says so), ``uniform-unit-types`` makes it one, and the
target's 16-bit graph outputs build on HTP and compute there what the CPU QDQ model does."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

import mapc
from mapc.ir import Runner
from mapc.passes import PassContext
from mapc.passes.pipeline import PassManager
from mapc.targets.qnn import ask_qnn
from tests.targets.qnn.support import needs_qnn, plan_and_ask, quantized_for, single_op_model, weight

pytestmark = needs_qnn
HTP_V73 = {"soc_model": "43", "enable_htp_fp16_precision": "1"}


def classifier():
    """x -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm: a CNN's head."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1)]
    inits = [weight("w", [8, 3, 3, 3]), weight("b", [8], 0.1), weight("gw", [10, 8]), weight("gb", [10], 0.1)]
    return single_op_model(nodes, {"x": [1, 3, 8, 8]}, [1, 10], inits)


def output_widened(model):
    """``model`` with the quantizer of its graph output ``y`` moved to the exact uint16 grid."""
    [dq] = [n for n in model.graph.nodes if n.op == "DequantizeLinear" and n.outputs[0].name == "y"]
    q = dq.inputs[0].inputs[0]
    scale = gs.Constant("y_wide_scale", np.asarray(dq.inputs[1].values / 257, np.float32))
    zero = gs.Constant("y_wide_zero", np.asarray(dq.inputs[2].values.astype(np.uint16) * 257, np.uint16))
    q.inputs[1], q.inputs[2], dq.inputs[1], dq.inputs[2] = scale, zero, scale, zero
    q.outputs[0].dtype = np.uint16
    return model


def sample():
    return {"x": np.random.default_rng(2).standard_normal([1, 3, 8, 8]).astype(np.float32)}


def test_a_gemm_reading_8_bits_and_writing_16_is_no_unit_and_loses_its_weights_to_the_cpu_in_both():
    mixed = output_widened(quantized_for(classifier(), wide_outputs=False))
    agreement = plan_and_ask(mixed)
    assert agreement.check.built and not agreement.overclaims and not agreement.underclaims
    weights = [n for n in agreement.nodes if n.name.startswith("gw") and n.op == "DequantizeLinear"]
    assert weights and all(not n.mapc_on_target and not n.qnn.on_htp for n in weights)
    assert any(r.startswith("qdq.standalone-per-axis") for n in weights for r in n.mapc_reasons)


def test_uniform_unit_types_puts_that_gemm_on_htp_in_16_bits_computing_what_the_cpu_does():
    mixed = output_widened(quantized_for(classifier(), wide_outputs=False))
    records = PassManager(["uniform-unit-types"]).run(mixed, PassContext(seed=0))
    assert records[0].counters["units_widened"] >= 1
    agreement = plan_and_ask(mixed)
    assert agreement.check.built and not agreement.overclaims and not agreement.underclaims
    assert all(n.qnn.status in ("htp", "boundary") for n in agreement.nodes), [(n.name, n.qnn.reason) for n in agreement.nodes if not n.qnn.on_htp]
    check = ask_qnn(mixed, samples=[sample()], provider_options=HTP_V73)
    expected = Runner(mixed).run(sample())["y"]
    assert np.abs(check.outputs[0]["y"] - expected).max() <= 4 * float(np.asarray(the_output_scale(mixed)))


def the_output_scale(model):
    [dq] = [n for n in model.graph.nodes if n.op == "DequantizeLinear" and n.outputs[0].name == "y"]
    return dq.inputs[1].values


def test_the_targets_16_bit_outputs_build_on_htp_and_agree_with_the_cpu_estimate():
    """qnn-htp a8w8: the output and the Gemm's input are uint16, the rest uint8; QNN takes
    every node but the boundary Q/DQ and computes the output the CPU QDQ model does, in 16 bits."""
    result = mapc.compile(classifier(), target="qnn-htp", quantize={"scheme": "a8w8", "calibration": "random"}, check_with_qnn=True)
    graph = result.model.graph
    [out_dq] = [n for n in graph.nodes if n.op == "DequantizeLinear" and n.outputs[0].name == "y"]
    assert out_dq.inputs[2].values.dtype == np.uint16
    [gemm] = [n for n in graph.nodes if n.op == "Gemm"]
    assert gemm.inputs[0].inputs[0].inputs[2].values.dtype == np.uint16
    [conv] = [n for n in graph.nodes if n.op == "Conv"]
    assert conv.inputs[0].inputs[0].inputs[2].values.dtype == np.uint8
    agreement = result.qnn
    assert agreement.check.built and not agreement.overclaims and not agreement.underclaims
    assert all(n.qnn.status in ("htp", "boundary") for n in agreement.nodes)
    check = ask_qnn(result.model, samples=[sample()], provider_options=HTP_V73)
    expected = Runner(result.model).run(sample())["y"]
    step = float(np.asarray(out_dq.inputs[1].values))
    # The uint8 layers before it round a little differently on HTP (a fraction of an 8-bit step).
    assert np.abs(check.outputs[0]["y"] - expected).max() <= 257 * step
    codes = np.round(check.outputs[0]["y"] / step) + int(out_dq.inputs[2].values)
    assert np.any(codes % 257 != 0)  # HTP wrote 16-bit codes, not 8-bit ones in 16-bit clothes
    widening = next(r for r in result.passes if r.name == "quantize").counters
    assert widening["outputs_widened"] == 1


def test_16_bit_activations_have_no_wider_output_to_give():
    result = mapc.compile(classifier(), target="qnn-htp", quantize={"scheme": "a16w8", "calibration": "random"})
    assert "outputs_widened" not in next(r for r in result.passes if r.name == "quantize").counters

