"""Over random graphs compiled for qnn-htp and quantized, every node mapc places on HTP QNN also
takes, and QNN builds the model; every node mapc keeps on the CPU says why."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import mapc
from mapc.testing import onnx_models
from mapc.targets.qnn import check_plan
from tests.targets.qnn.support import needs_qnn

#: QNN builds these small graphs in seconds; a build still running after this is QNN hanging.
QNN_TIMEOUT_S = 120

FAMILIES = ("elementwise", "unary", "matmul", "gemm", "conv", "pool", "reshape", "transpose", "concat", "split", "slice", "squeeze", "softmax", "reduce")


@needs_qnn
# No shrinking: each example is a compile and a QNN build; the failing example is printed as drawn.
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(onnx_models(families=FAMILIES, symbolic=False, discontinuous=False), st.sampled_from(["a8w8", "a16w8"]))
def test_qnn_takes_every_node_mapc_places_on_htp(proto, scheme):
    result = mapc.compile(proto, target="qnn-htp", quantize={"scheme": scheme, "calibration": "random"})
    assert result.plan is not None
    agreement = check_plan(result.model, result.plan, timeout=QNN_TIMEOUT_S)
    assert not agreement.overclaims, [(n.name, n.op, n.qnn.reason) for n in agreement.overclaims]
    if any(node.mapc_on_target for node in agreement.nodes):
        assert agreement.check.built, agreement.check.error
    for node in agreement.nodes:
        assert node.mapc_on_target or node.mapc_reasons, node.name
