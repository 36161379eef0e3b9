"""Over random graphs compiled for qnn-htp and quantized, every node mapc places on HTP QNN also
takes, and QNN builds the model; every node mapc keeps on the CPU says why. What QNN computes is
what onnxruntime computes: to fp16 precision unquantized, to a rounding step or so quantized."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import mapc
from mapc.ir import Runner, constant_value, seeded_inputs
from mapc.passes.quantize.accuracy import sqnr_db
from mapc.targets.builtin.qnn_htp import provider_options
from mapc.targets.qnn import ask_qnn, check_plan
from mapc.testing import onnx_models
from tests.targets.qnn.support import needs_qnn

#: QNN builds these small graphs in seconds; a build still running after this is QNN hanging.
QNN_TIMEOUT_S = 120
#: fp16 keeps about 3 decimal digits per op; over a random chain of ops the emulator agrees with
#: onnxruntime's fp32 well above this, and a wrong kernel falls far below it.
FP16_SQNR_DB = 30
#: Quantized, the emulator and the CPU QDQ model differ by a rounding step here and there
#: (38-97 dB over 50 random graphs); a wrong kernel reads near or below 0 dB.
QUANTIZED_SQNR_DB = 20

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


def agreement_db(expected: np.ndarray, actual: np.ndarray) -> float:
    """SQNR of ``actual`` against ``expected`` (infinite when equal), by the quantizer's own measure."""
    reference = np.asarray(expected, np.float64)
    db = sqnr_db(float((reference**2).sum()), float(((np.asarray(actual, np.float64) - reference) ** 2).sum()))
    return float("inf") if db is None else db


@needs_qnn
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(onnx_models(families=FAMILIES, symbolic=False, discontinuous=False))
def test_float_graphs_compute_on_htp_what_onnxruntime_does(proto):
    """Unquantized, QNN runs the graph in fp16: what it computes must be onnxruntime's result
    to fp16 precision (a wrong kernel, like HTP's padded fp16 AveragePool, reads far below)."""
    result = mapc.compile(proto, target="qnn-htp")
    samples = [seeded_inputs(result.model, seed=seed) for seed in (0, 1)]
    check = ask_qnn(result.model, samples=samples, provider_options=provider_options("v73"), timeout=QNN_TIMEOUT_S)
    assert check.built and not check.aborted, check.error
    runner = Runner(result.model)
    for sample, actual in zip(samples, check.outputs):
        for name, expected in runner.run(sample).items():
            if np.issubdtype(expected.dtype, np.floating) and np.isfinite(expected).all() and np.abs(expected).max() < 1e4:
                assert agreement_db(expected, actual[name]) >= FP16_SQNR_DB, (name, agreement_db(expected, actual[name]))


def output_step(model: mapc.Model, name: str) -> float:
    """The quantization step of graph output ``name`` (its DequantizeLinear's largest scale); 0
    for an output no DequantizeLinear writes."""
    tensor = model.graph.tensors()[name]
    writer = tensor.inputs[0] if tensor.inputs else None
    if writer is None or writer.op != "DequantizeLinear":
        return 0.0
    scale = constant_value(writer.inputs[1])
    return float(np.max(scale)) if scale is not None else 0.0


@needs_qnn
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(onnx_models(families=FAMILIES, symbolic=False, discontinuous=False), st.sampled_from(["a8w8", "a16w8"]))
def test_quantized_graphs_compute_on_htp_what_the_qdq_model_does(proto, scheme):
    """Quantized, HTP's integer kernels round differently from onnxruntime's QDQ simulation, by
    a step here and there; a wrong kernel (like QNN's ReduceMax over a trailing size-1 axis, or
    its Softmax with an unexpected output zero point) is far from it. Each output: 20 dB against
    the CPU QDQ model, or within 2 of its steps."""
    result = mapc.compile(proto, target="qnn-htp", quantize={"scheme": scheme, "calibration": "random"})
    samples = [seeded_inputs(result.model, seed=seed) for seed in (0, 1)]
    check = ask_qnn(result.model, samples=samples, provider_options=provider_options("v73"), timeout=QNN_TIMEOUT_S)
    assert check.built and not check.aborted, check.error
    runner = Runner(result.model)
    for sample, actual in zip(samples, check.outputs):
        for name, expected in runner.run(sample).items():
            if not np.issubdtype(expected.dtype, np.floating):
                continue
            error = float(np.abs(np.asarray(actual[name], np.float64) - expected).max())
            assert agreement_db(expected, actual[name]) >= QUANTIZED_SQNR_DB or error <= 2 * output_step(result.model, name), (name, error)
