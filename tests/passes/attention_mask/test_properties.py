"""Hypothesis properties of attention-mask: outputs preserved outside fully masked rows,
idempotent, deterministic; and finite, fp16-safe masks, on random attention graphs."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings

from mapc.ir import load, run
from mapc.ir.compare import Tolerance
from mapc.testing import assert_pass_preserves

from .graphs import attention_graphs
from .numerics import half_feeds, to_fp16

FP32 = Tolerance(rtol=1e-4, atol=1e-5)
FP16 = Tolerance(rtol=1e-2, atol=2e-3)


@settings(max_examples=80)
@given(attention_graphs())
def test_attention_mask_preserves_outputs_outside_fully_masked_rows(case):
    half = case.feeds["q"].dtype == np.float16
    rewritten, records = assert_pass_preserves(case.model, "attention-mask", feeds=case.feeds, ignore=case.ignore, tolerance=FP16 if half else FP32)
    record = records[0]
    assert not [n for n in record.notes if n.code in ("attention-mask.unrecognised", "attention-mask.fill-kept", "attention-mask.guard-kept")], record.notes
    if case.family != "float-input":
        ops = {node.op for node in rewritten.graph.nodes}
        assert "IsNaN" not in ops


@settings(max_examples=40)
@given(attention_graphs())
def test_rewritten_masks_stay_finite_in_fp16(case):
    """In fp16 the rewritten graph has no NaN/inf anywhere, fully masked rows included."""
    assume(case.feeds["q"].dtype != np.float16 and case.family != "float-input")
    model = load(case.model)
    from mapc.passes.pipeline import PassManager

    PassManager("attention-mask").run(model)
    outputs = run(to_fp16(model.to_proto()), half_feeds(case.feeds))
    assert np.all(np.isfinite(outputs["out"].astype(np.float32)))


@settings(max_examples=40)
@given(attention_graphs(families=("m1", "m5", "m7", "m10", "window")))
def test_int16_mask_value_preserves_outputs(case):
    half = case.feeds["q"].dtype == np.float16
    assert_pass_preserves(case.model, "attention-mask{precision=int16,mask_value=-1000}", feeds=case.feeds, ignore=case.ignore,
                          tolerance=FP16 if half else FP32)
