"""quantize: properties over random graphs (structure, runs, accuracy, never aborts).

The accuracy threshold. A uint8 min/max quantizer on a Gaussian-like tensor (range about ±3.5σ)
adds noise of (7σ/255)²/12, an SQNR of about 42 dB; int8 per-channel weights on the generator's
Gaussian weights about the same. The graphs here have at most 8 ops, so at most about 20
quantizers lie on a path to an output: independent noises add up to about 42 - 10·log10(20) =
29 dB. We require every float output to keep at least 20 dB, leaving 9 dB for ops that amplify
relative error. It is measured on the calibration samples themselves: min/max ranges cover
them, so what is measured is the quantizer, not how well 8 random samples predict the extremes
of a ninth (tensors here can hold a single value). A scale on the wrong axis, a wrong zero
point or a missing requantization costs far more than 9 dB (a per-tensor scale on channels of
different magnitude, or a ReLU folded into an asymmetric range, falls below 10 dB).
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapc.ir import Runner, load, seeded_inputs
from mapc.ir.compare import check_valid
from mapc.testing import onnx_models
from tests.passes.quantize.support import calibration_samples, quantize, sqnr_by_output, structure_problems

#: The op families a per-channel int8 model handles without ill-conditioned arithmetic.
WELL_CONDITIONED = ("matmul", "gemm", "conv", "conv_transpose", "pool", "reshape", "transpose", "concat", "split", "slice", "squeeze", "flatten", "unary", "softmax")
SQNR_THRESHOLD_DB = 20.0
SAMPLES = 8
few = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@few
@given(onnx_models(families=WELL_CONDITIONED, discontinuous=False, symbolic=False))
def test_a8w8_is_valid_runs_and_keeps_int8_accuracy(proto):
    model, record = quantize(proto, random_samples=SAMPLES, holdout=0.0, sensitivity_samples=1)
    exported = model.to_proto()
    check_valid(model)
    assert not structure_problems(exported), structure_problems(exported)
    sqnr = sqnr_by_output(proto, model, calibration_samples(proto, SAMPLES))
    worst = min(sqnr.values(), default=np.inf)
    assert worst >= SQNR_THRESHOLD_DB, f"worst output SQNR {worst:.1f} dB < {SQNR_THRESHOLD_DB} dB: {sqnr}; offenders {record.details.get('offenders', [])[:3]}"


@few
@given(onnx_models(discontinuous=True), st.sampled_from(["minmax", "percentile", "entropy", "mse"]), st.sampled_from(["a8w8", "a16w8", "w4"]))
def test_every_method_and_scheme_quantizes_any_graph_without_aborting(proto, method, scheme):
    model, record = quantize(proto, calibration_method=method, scheme=scheme, sensitivity_samples=0)
    check_valid(model)
    assert not structure_problems(model.to_proto())
    feeds = seeded_inputs(load(proto), seed=7)
    outputs = Runner(model).run(feeds)
    assert set(outputs) == {t.name for t in load(proto).graph.outputs}
    report = record.details["accuracy"]
    assert report["samples"] >= 1 and report["outputs"]


@settings(max_examples=15, deadline=None)
@given(onnx_models(families=("conv", "gemm", "matmul", "unary", "elementwise"), discontinuous=False))
def test_second_run_changes_nothing_and_runs_are_deterministic(proto):
    first, record = quantize(proto, sensitivity_samples=0)
    again, _ = quantize(proto, sensitivity_samples=0)
    assert first.to_proto().SerializeToString(deterministic=True) == again.to_proto().SerializeToString(deterministic=True)
    second = quantize(first.to_proto(), sensitivity_samples=0)[1]
    assert not second.changed
    if record.changed:  # a graph with nothing to quantize (a lone Sin) is left as it is, twice
        assert second.notes[0].code == "quantize.already-quantized"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(onnx_models(families=("elementwise", "unary", "matmul", "conv", "concat", "split", "reshape"), discontinuous=False, symbolic=False))
def test_dedicated_dequantizers_compute_exactly_what_shared_ones_do(proto):
    """Each reader's own DequantizeLinear reads the same codes, scale and zero point: the outputs
    are bit-identical, and no DequantizeLinear has more than one reader (graph outputs aside)."""
    shared, _ = quantize(proto, sensitivity_samples=0)
    dedicated, _ = quantize(proto, sensitivity_samples=0, dedicated_dequantizers=True)
    for sample in calibration_samples(proto, 3):
        expected, actual = Runner(shared).run(sample), Runner(dedicated).run(sample)
        for name, value in expected.items():
            np.testing.assert_array_equal(actual[name], value)
    outputs = {t.name for t in dedicated.graph.outputs}
    for node in dedicated.graph.nodes:
        if node.op == "DequantizeLinear" and node.outputs[0].name not in outputs:
            assert len({id(reader) for reader in node.outputs[0].outputs}) <= 1, node.name
