"""Each HTP architecture's QNN options build a float model in fp16, and v68 (no fp16) is refused by both.

The architectures differ in their SoC id (``soc_model``, which fp16 precision needs) and in fp16
itself. QNN decides: the example CNN, float, must build with every node on HTP for each
architecture mapc says has fp16, and mapc's plan must agree with QNN node by node.
"""

from __future__ import annotations

import pytest
from onnx import helper

import mapc
from mapc.targets.builtin.qnn_htp import ARCHITECTURES, NO_FP16, SOC_MODELS
from mapc.targets.summary import coverage
from tests.targets.qnn.support import needs_qnn, single_op_model

CNN_SHAPES = {"image": [1, 3, 32, 32]}


def test_every_architecture_with_fp16_has_its_soc_id():
    assert set(ARCHITECTURES) - set(NO_FP16) <= set(SOC_MODELS)
    assert SOC_MODELS["v81"] == "87"  # SM8850 (QNN SDK QnnTypes.h QNN_SOC_MODEL_SM8850)


@needs_qnn
@pytest.mark.parametrize("arch", sorted(set(ARCHITECTURES) - NO_FP16))
def test_a_float_model_builds_in_fp16_with_every_node_on_htp(arch):
    result = mapc.compile("examples/cnn.onnx", input_shapes=CNN_SHAPES, target=f"qnn-htp:{arch}", check_with_qnn=True)
    check = result.qnn.check
    assert check.built and not check.aborted, check.error
    assert check.counts() == {"htp": len(result.model.graph.nodes)}
    assert result.qnn.agreeing == len(result.qnn.compared)


@needs_qnn
def test_v68_has_no_fp16_and_mapc_keeps_a_float_model_on_the_cpu():
    result = mapc.compile("examples/cnn.onnx", input_shapes=CNN_SHAPES, target="qnn-htp:v68")
    assert coverage(result.plan)["nodes_on_target"] == 0


@needs_qnn
def test_v68_validates_float_ops_then_fails_the_graph_so_mapcs_cpu_placement_is_no_underclaim():
    """QNN's v68 validates a float Gelu and then cannot finalize the graph: the nodes it validated
    were never taken, so keeping them on the CPU is no underclaim; the failure names them."""
    proto = single_op_model([helper.make_node("Gelu", ["x"], ["y"])], {"x": [1, 8, 16]}, [1, 8, 16], opset=21)
    result = mapc.compile(proto, target="qnn-htp:v68", check_with_qnn=True)
    agreement = result.qnn
    assert not agreement.check.built and not agreement.underclaims and not agreement.overclaims
    assert [node.op for node in agreement.taken_against_plan] == ["Gelu"]
