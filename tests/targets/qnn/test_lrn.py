"""LRN on qnn-htp: QNN's Lrn takes only 8-bit activations, so a 16-bit compile decomposes it.

A 16-bit Lrn fails HTP validation at every size (``backendValidateOpConfig`` error 3110), after
onnxruntime's NHWC layout transform, so the whole session fails (Inception-v1 a16w8 did). The
target's ``decompose-lrn`` (prepare) rewrites it into Mul/Conv/Add/Pow at 16 bits, which QNN builds.
"""

from __future__ import annotations

from onnx import helper

import mapc
from tests.targets.qnn.support import needs_qnn, plan_and_ask, quantized_for, single_op_model, weight


def conv_lrn_conv():
    """Conv -> LRN -> Conv, as in Inception-v1 and AlexNet (the LRN's tensors are quantized)."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("LRN", ["r1"], ["n1"], size=5, alpha=1e-4, beta=0.75, bias=1.0),
             helper.make_node("Conv", ["n1", "w2"], ["y"], kernel_shape=[1, 1])]
    return single_op_model(nodes, {"x": [1, 8, 16, 16]}, [1, 16, 16, 16], [weight("w1", (16, 8, 3, 3)), weight("w2", (16, 16, 1, 1))])


@needs_qnn
def test_qnn_refuses_a_16_bit_lrn_and_takes_an_8_bit_one():
    model = conv_lrn_conv()
    sixteen = next(node for node in plan_and_ask(quantized_for(model, scheme="a16w8")).nodes if node.op == "LRN")
    assert sixteen.qnn.status == "rejected" and "3110" in sixteen.qnn.reason
    eight = next(node for node in plan_and_ask(quantized_for(model, scheme="a8w8")).nodes if node.op == "LRN")
    assert eight.qnn.status == "htp"


@needs_qnn
def test_a_16_bit_compile_decomposes_the_lrn_and_qnn_builds_every_node():
    result = mapc.compile(conv_lrn_conv(), target="qnn-htp", quantize={"scheme": "a16w8", "calibration": "random"},
                          check_with_qnn=True)
    agreement = result.qnn
    assert agreement.check.built and agreement.agreeing == len(agreement.compared)
    assert set(agreement.check.counts()) == {"htp", "boundary"}
    assert "LRN" not in {node.op for node in result.model.graph.nodes}
