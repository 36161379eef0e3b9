"""ask_qnn: QNN's answer for a model, its failures reported (never raised), the extra optional."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import mapc
from mapc.ir import Runner, UsageError
from mapc.targets.qnn import ask_qnn, oracle
from tests.targets.qnn.support import needs_qnn, quantized_for, single_op_model

HTP_V73 = {"soc_model": "43", "enable_htp_fp16_precision": "1"}


def tanh_model():
    return quantized_for(single_op_model([helper.make_node("Tanh", ["x"], ["y"])], {"x": [1, 8, 16]}, [1, 8, 16]))


@needs_qnn
def test_every_node_gets_a_verdict_in_graph_order_and_samples_run_on_the_emulator():
    model = tanh_model()
    samples = [{"x": np.random.default_rng(k).standard_normal((1, 8, 16)).astype(np.float32)} for k in range(2)]
    check = ask_qnn(model, samples=samples, provider_options=HTP_V73)
    assert check.built and not check.aborted and check.error == ""
    assert [v.op for v in check.verdicts] == [n.op for n in model.graph.nodes]
    assert check.counts() == {"boundary": 2, "htp": 3}
    assert check.outputs is not None and len(check.outputs) == 2
    for sample, outputs in zip(samples, check.outputs):
        expected = Runner(model).run(sample)["y"]
        assert np.abs(outputs["y"] - expected).max() <= 2 * float(np.ptp(expected)) / 255  # within two uint8 steps


@needs_qnn
def test_an_abort_of_the_ep_is_reported_with_the_logs_last_lines():
    # The npu target's a16w8 output shares DequantizeLinear nodes between node units, on which
    # the QNN EP plugin aborts the process (the qnn-htp target gives each reader its own DQ).
    result = mapc.compile("examples/transformer.onnx", input_shapes={"input_ids": [1, 16], "attention_mask": [1, 16]},
                          quantize={"scheme": "a16w8", "calibration": "random"}, target="npu")
    check = ask_qnn(result.model, provider_options=HTP_V73)
    assert check.aborted and not check.built
    assert check.error.startswith("the QNN EP aborted: Processed")
    assert any("terminate called" in line for line in check.log_tail)


@needs_qnn
def test_a_time_limit_ends_the_child_and_says_so():
    check = ask_qnn(tanh_model(), timeout=0.01)
    assert not check.built and check.error == "QNN did not finish within 0.01 s"


def test_without_the_extra_the_error_names_it(monkeypatch):
    monkeypatch.setattr(oracle, "qnn_available", lambda: False)
    with pytest.raises(UsageError, match=r"pip install 'mapc\[qnn\]'"):
        ask_qnn(tanh_model())


def test_unnamed_and_duplicate_nodes_get_names_no_other_node_has(tmp_path):
    proto = single_op_model([helper.make_node("Relu", ["x"], ["a"], name="mapc_node_1"), helper.make_node("Tanh", ["a"], ["y"])], {"x": [2]}, [2])
    _, names = oracle._named_copy(proto, tmp_path)
    assert [name for name, _ in names] == ["mapc_node_1", "mapc_node_1_1"]
