"""Reading the QNN EP's verbose log into one verdict per node (no QNN needed: log excerpts)."""

from __future__ import annotations

from mapc.targets.qnn import parse_log

PREFIX = "2026-12-06 04:16:54.486214933 [V:onnxruntime:, qnn_execution_provider.cc:1713 LogNodeSupport] "
LOG = f"""\
2026-12-06 04:16:54.463451740 [V:onnxruntime:, qnn_execution_provider.cc:2198 GetCapabilityImpl] GetCapability pass 1 (pre-Layout-Transform)
{PREFIX}Validation FAILED for 1 nodes in OrtNodeUnit (QuantizeLinear) :
\tOperator type: QuantizeLinear Node name: x_QuantizeLinear Node index: 2
\tREASON : QNN EP is configured to not take Q nodes that consume a graph input.

2026-12-06 04:16:54.486219780 [V:onnxruntime:, base_op_builder.cc:40 AddToModelBuilder] QNN node builder is trying to add node. Onnx node name: [ln] onnx node type: [LayerNormalization].
[0;93m2026-12-06 04:16:54.489054963 [W:onnxruntime:, qnn_model_wrapper.cc:565 CreateQnnNode] QNN.backendValidateOpConfig() failed for node `ln` of type `LayerNorm` with error code 3110
{PREFIX}Validation FAILED for 3 nodes in OrtNodeUnit (LayerNormalization) :
\tOperator type: DequantizeLinear Node name: x_DequantizeLinear Node index: 3
\tOperator type: LayerNormalization Node name: ln Node index: 4
\tOperator type: QuantizeLinear Node name: ln_QuantizeLinear Node index: 5
\tREASON : Failed to add node.

{PREFIX}Validation PASSED for 3 nodes in OrtNodeUnit (Tanh) :
\tOperator type: DequantizeLinear Node name: ln_DequantizeLinear Node index: 6
\tOperator type: Tanh Node name: tanh Node index: 7
\tOperator type: QuantizeLinear Node name: y_QuantizeLinear Node index: 8

{PREFIX}Validation FAILED for 1 nodes in OrtNodeUnit (DequantizeLinear) :
\tOperator type: DequantizeLinear Node name: y_DequantizeLinear Node index: 9
\tREASON : QNN EP is configured to not take DQ nodes that generate a graph output.

2026-12-06 04:16:54.489357992 [V:onnxruntime:, qnn_execution_provider.cc:2198 GetCapabilityImpl] GetCapability pass 2 (post-Layout-Transform)
{PREFIX}Validation PASSED for 3 nodes in OrtNodeUnit (Tanh) :
\tOperator type: DequantizeLinear Node name: ln_DequantizeLinear Node index: 6
\tOperator type: Tanh Node name: tanh Node index: 7
\tOperator type: QuantizeLinear Node name: y_QuantizeLinear Node index: 8

2026-12-06 04:16:54.551028190 [V:onnxruntime:, session_state.cc:1598 VerifyEachNodeIsAssignedToAnEp] Node placements
2026-12-06 04:16:54.551031345 [V:onnxruntime:, session_state.cc:1604 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [QNNExecutionProvider]. Number of nodes: 1
2026-12-06 04:16:54.551034029 [V:onnxruntime:, session_state.cc:1606 VerifyEachNodeIsAssignedToAnEp]   QNNExecutionProvider_1 (QNNExecutionProvider_QNNExecutionProvider_1_0)
2026-12-06 04:16:54.551036633 [V:onnxruntime:, session_state.cc:1604 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [CPUExecutionProvider]. Number of nodes: 3
2026-12-06 04:16:54.551039147 [V:onnxruntime:, session_state.cc:1606 VerifyEachNodeIsAssignedToAnEp]   QuantizeLinear (x_QuantizeLinear)
2026-12-06 04:16:54.551041710 [V:onnxruntime:, session_state.cc:1606 VerifyEachNodeIsAssignedToAnEp]   LayerNormalization (ln)
2026-12-06 04:16:54.551044184 [V:onnxruntime:, session_state.cc:1606 VerifyEachNodeIsAssignedToAnEp]   Tanh (tanh)
[0;93m2026-12-06 04:16:54.551056833 [W:onnxruntime:, session_state.cc:1618 VerifyEachNodeIsAssignedToAnEp] Some nodes were not assigned
"""


def test_each_member_of_a_node_unit_gets_the_units_verdict():
    verdicts = parse_log(LOG).verdicts
    assert {name: verdicts[name].status for name in ("x_DequantizeLinear", "ln", "ln_QuantizeLinear")} == dict.fromkeys(
        ("x_DequantizeLinear", "ln", "ln_QuantizeLinear"), "rejected"
    )
    assert verdicts["ln"].unit == "LayerNormalization" and verdicts["ln"].op == "LayerNormalization"


def test_a_refusal_carries_qnns_reason_and_the_backend_error_code():
    reason = parse_log(LOG).verdicts["ln"].reason
    assert reason == "Failed to add node. (QNN LayerNorm: backendValidateOpConfig error 3110)"


def test_graph_boundary_qdq_is_boundary_not_rejected():
    verdicts = parse_log(LOG).verdicts
    assert verdicts["x_QuantizeLinear"].status == "boundary"
    assert verdicts["y_DequantizeLinear"].status == "boundary"


def test_the_placement_list_overrides_a_validation_pass():
    reading = parse_log(LOG)
    assert reading.placements_logged and reading.placed_on_cpu == {"x_QuantizeLinear", "ln", "tanh"}
    assert reading.verdicts["tanh"].status == "cpu"  # validated, yet onnxruntime ran it on the CPU
    assert reading.verdicts["ln_DequantizeLinear"].status == "htp" and reading.verdicts["ln_DequantizeLinear"].on_htp


def test_a_log_without_validation_lines_gives_no_verdicts():
    reading = parse_log("terminate called after throwing an instance of 'Ort::Exception'\n")
    assert reading.verdicts == {} and not reading.placements_logged
