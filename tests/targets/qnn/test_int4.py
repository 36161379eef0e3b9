"""4-bit weights on qnn-htp: int4 blocks on MatMul (v69+), int8 per channel elsewhere, none on v68.

What QNN itself decided (onnxruntime-qnn's HTP emulator): a MatMul with int4 block weights and
16-bit activations builds on v69+ and runs within 68 dB of the CPU QDQ model; v68 refuses it
(``Failed to add BQ MatMul node``, error 3110); a Gemm with int4 block weights and its float bias
leaves a standalone per-channel DequantizeLinear on the CPU, so the target gives Gemm int8.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import mapc
from mapc.ir import Runner, UsageError
from mapc.passes.quantize import resolve
from mapc.targets import get_target
from mapc.targets.builtin.qnn_htp import provider_options
from mapc.targets.qnn import ask_qnn
from tests.targets.qnn.support import needs_qnn, plan_and_ask, quantized_for, single_op_model, weight


def matmul_model():
    return single_op_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": [1, 32, 256]}, [1, 32, 128], [weight("w", (256, 128))])


def gemm_model():
    return single_op_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], {"x": [8, 128]}, [8, 64],
                           [weight("w", (64, 128)), weight("b", (64,))])


def weight_dtypes(model) -> set[str]:
    return {str(node.inputs[0].dtype) for node in model.graph.nodes
            if node.op == "DequantizeLinear" and node.inputs[0].name.startswith("w")}


def test_the_target_asks_for_int4_only_on_matmul():
    options = resolve("a16w4", get_target("qnn-htp").quantization)
    assert options["int4_ops"] == ["MatMul"] and options["activation_type"] == "uint16"
    assert weight_dtypes(quantized_for(gemm_model(), scheme="a16w4")) == {"int8"}
    assert weight_dtypes(quantized_for(matmul_model(), scheme="a16w4")) == {"int4"}


def test_v68_runs_no_4_bit_scheme():
    with pytest.raises(UsageError, match="does not run scheme 'a16w4'"):
        resolve("a16w4", get_target("qnn-htp:v68").quantization)


@needs_qnn
def test_qnn_builds_an_int4_matmul_on_htp_and_computes_what_the_qdq_model_does():
    model = quantized_for(matmul_model(), scheme="a16w4")
    sample = {"x": np.random.default_rng(1).standard_normal((1, 32, 256)).astype(np.float32)}
    agreement = plan_and_ask(model)
    assert agreement.ok and agreement.agreeing == len(agreement.compared)
    assert {node.op: node.qnn.status for node in agreement.nodes}["MatMul"] == "htp"
    check = ask_qnn(model, samples=[sample], provider_options=provider_options("v73"))
    expected, got = Runner(model).run(sample)["y"], check.outputs[0]["y"]
    assert 10 * np.log10(np.sum(expected ** 2) / np.sum((expected - got) ** 2)) > 50


@needs_qnn
def test_qnn_refuses_the_int4_matmul_on_v68_as_the_target_predicts():
    model = quantized_for(matmul_model(), scheme="a16w4", target="qnn-htp")
    agreement = plan_and_ask(model, "qnn-htp:v68")
    assert not agreement.overclaims
    matmul = next(node for node in agreement.nodes if node.op == "MatMul")
    assert matmul.qnn.status == "rejected" and not matmul.mapc_on_target


@needs_qnn
def test_the_example_transformer_in_a16w4_builds_whole_and_the_plan_agrees():
    result = mapc.compile("examples/transformer.onnx", input_shapes={"input_ids": [1, 16], "attention_mask": [1, 16]},
                          quantize={"scheme": "a16w4", "calibration": "random"}, target="qnn-htp", check_with_qnn=True)
    agreement = result.qnn
    assert agreement.ok and agreement.agreeing == len(agreement.compared)
    assert agreement.check.counts().get("rejected", 0) == 0
