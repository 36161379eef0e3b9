"""Hypothesis properties of attention-mask: outputs preserved outside fully masked rows, at every
score magnitude (a fill rewrite either stays exact or is refused with a near-miss), idempotent,
deterministic; and finite, fp16-safe masks, on random attention graphs."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings

from mapc.ir import load, run
from mapc.passes import SAMPLES, PassContext
from mapc.passes.pipeline import PassManager
from mapc.ir.compare import Tolerance
from mapc.testing import assert_pass_preserves

from .graphs import attention_graphs
from .numerics import half_feeds, to_fp16

FP32 = Tolerance(rtol=1e-4, atol=1e-5)
FP16 = Tolerance(rtol=1e-2, atol=2e-3)


REFUSALS = ("attention-mask.scores-unbounded", "attention-mask.scores-too-wide", "attention-mask.fill-not-masking")


def _refused(record) -> bool:
    return any(note.code in REFUSALS for note in record.notes)


@settings(max_examples=80)
@given(attention_graphs())
def test_attention_mask_preserves_outputs_outside_fully_masked_rows(case):
    """The inputs are also the user's samples, so unbounded scores are measured on them."""
    half = case.feeds["q"].dtype == np.float16
    rewritten, records = assert_pass_preserves(case.model, "attention-mask", feeds=case.feeds, ignore=case.ignore, tolerance=FP16 if half else FP32,
                                               samples=[case.feeds])
    record = records[0]
    if case.magnitude <= 1 and (case.bounded or not case.ignore["out"].all()):
        # small scores: every rewrite is provably exact, or measurably where the samples attend some key
        assert not _refused(record), record.notes
    if _refused(record):
        return
    assert not [n for n in record.notes if n.code in ("attention-mask.unrecognised", "attention-mask.fill-kept", "attention-mask.guard-kept")], record.notes
    if case.family != "float-input":
        ops = {node.op for node in rewritten.graph.nodes}
        assert "IsNaN" not in ops


@settings(max_examples=40)
@given(attention_graphs(magnitudes=(1e-3, 1.0, 30.0)))
def test_rewritten_masks_stay_finite_in_fp16(case):
    """In fp16 the rewritten graph has no NaN/inf anywhere, fully masked rows included (at
    magnitudes whose scores fp16 can hold)."""
    assume(case.feeds["q"].dtype != np.float16 and case.family != "float-input")
    model = load(case.model)
    ctx = PassContext()
    ctx.facts[SAMPLES] = [case.feeds]
    assume(not _refused(PassManager("attention-mask").run(model, ctx)[0]))
    outputs = run(to_fp16(model.to_proto()), half_feeds(case.feeds))
    assert np.all(np.isfinite(outputs["out"].astype(np.float32)))


@settings(max_examples=40)
@given(attention_graphs(families=("one-minus-mask", "index-grid", "bool-attention-mask", "causal-without-input", "window"), magnitudes=(1.0,)))
def test_int16_mask_value_preserves_outputs(case):
    """int16 masks are a deliberate approximation (not checked for exactness): fine at unit scores."""
    half = case.feeds["q"].dtype == np.float16
    assert_pass_preserves(case.model, "attention-mask{precision=int16,mask_value=-1000}", feeds=case.feeds, ignore=case.ignore,
                          tolerance=FP16 if half else FP32)
