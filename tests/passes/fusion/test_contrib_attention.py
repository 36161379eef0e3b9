"""onnxruntime's packed-QKV contrib Attention (past/present, unidirectional) -> standard attention."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from mapc.ir.compare import Tolerance

from .common import misses
from .contrib_graphs import F, I32, SCALES, contrib_left, floats, fuse_on_samples, model, padding_masks, to_float16

#: onnxruntime's fused kernels sum in another order than the decomposition.
KERNEL = Tolerance(rtol=1e-4, atol=1e-4)
HIDDEN, HEADS, BATCH, SEQ = 16, 4, 2, 4


def packed_attention(past: int, unidirectional: int, mask: str | None, present_read: bool, seed: int = 0, **attrs):
    rng = np.random.default_rng(seed)
    total = past + SEQ
    names = ["x", "w", "b", "mask" if mask else "", "past" if past else ""]
    while names[-1] == "":
        names.pop()
    outputs = ["y", "present"] if present_read else ["y"]
    node = helper.make_node("Attention", names, outputs, domain="com.microsoft", num_heads=HEADS, unidirectional=unidirectional, **attrs)
    inputs = [("x", F, [BATCH, SEQ, HIDDEN])]
    mask_shape = {"raw": [BATCH, total], "raw3d": [BATCH, SEQ, total], "ends": [BATCH]}
    if mask:
        inputs.append(("mask", I32, mask_shape[mask]))
    if past:
        inputs.append(("past", F, [2, BATCH, HEADS, past, HIDDEN // HEADS]))
    inits = {"w": floats(rng, (HIDDEN, 3 * HIDDEN), 0.3), "b": floats(rng, (3 * HIDDEN,), 0.1)}
    return model([node], inputs, inits, outputs)


def samples(past: int, mask: str | None, seed: int = 0):
    rng = np.random.default_rng(seed)
    total = past + SEQ
    out = []
    for scale, raw in zip(SCALES + (1.0,), padding_masks(BATCH, total)):
        feeds = {"x": floats(rng, (BATCH, SEQ, HIDDEN), scale)}
        if past:
            feeds["past"] = floats(rng, (2, BATCH, HEADS, past, HIDDEN // HEADS), scale)
        if mask == "raw":
            feeds["mask"] = raw
        elif mask == "raw3d":
            feeds["mask"] = np.repeat(raw[:, None, :], SEQ, axis=1) * (rng.random((BATCH, SEQ, total)) > 0.2).astype(np.int32)
        elif mask == "ends":
            feeds["mask"] = raw.sum(axis=1).astype(np.int32) - np.array([0, 1], np.int32)
        out.append(feeds)
    return out


@pytest.mark.parametrize("mask", [None, "raw", "raw3d", "ends"])
@pytest.mark.parametrize(("past", "unidirectional"), [(0, 1), (3, 0), (3, 1)])
def test_packed_attention_with_past_and_causal_mask_becomes_standard_attention(past, unidirectional, mask):
    proto = packed_attention(past, unidirectional, mask, present_read=bool(past))
    rewritten, record = fuse_on_samples(proto, samples(past, mask), tolerance=KERNEL)
    assert record.counters["contrib-attention"] == 1 and record.counters["attention"] == 1
    assert not contrib_left(rewritten)


def test_packed_attention_reads_negative_raw_mask_values_as_masked():
    proto = packed_attention(0, 0, "raw", present_read=False)
    feeds = samples(0, "raw")[1]
    feeds["mask"] = np.where(feeds["mask"] == 0, -1, 1).astype(np.int32)
    rewritten, record = fuse_on_samples(proto, [feeds], tolerance=KERNEL)
    assert record.counters["contrib-attention"] == 1


def test_packed_attention_with_unequal_hidden_sizes():
    rng = np.random.default_rng(3)
    node = helper.make_node("Attention", ["x", "w", "b"], ["y"], domain="com.microsoft", num_heads=2, qkv_hidden_sizes=[8, 8, 12])
    proto = model([node], [("x", F, [BATCH, SEQ, HIDDEN])], {"w": floats(rng, (HIDDEN, 28), 0.3), "b": floats(rng, (28,), 0.1)}, ["y"])
    _, record = fuse_on_samples(proto, [{"x": floats(rng, (BATCH, SEQ, HIDDEN), s)} for s in SCALES], tolerance=KERNEL)
    assert record.counters["contrib-attention"] == 1


def test_packed_attention_with_left_padding_start_positions_is_a_near_miss():
    node = helper.make_node("Attention", ["x", "w", "b", "mask"], ["y"], domain="com.microsoft", num_heads=HEADS)
    rng = np.random.default_rng(0)
    proto = model([node], [("x", F, [BATCH, SEQ, HIDDEN]), ("mask", I32, [2 * BATCH])],
                  {"w": floats(rng, (HIDDEN, 3 * HIDDEN), 0.3), "b": floats(rng, (3 * HIDDEN,), 0.1)}, ["y"])
    feeds = {"x": floats(rng, (BATCH, SEQ, HIDDEN), 1.0), "mask": np.array([4, 4, 1, 0], np.int32)}
    rewritten, record = fuse_on_samples(proto, [feeds])
    (miss,) = misses(record, "contrib-attention")
    assert record.counters["contrib-attention"] == 0 and "start positions" in miss["message"]
    assert contrib_left(rewritten) == ["Attention"]


def test_causal_attention_needs_static_lengths():
    node = helper.make_node("Attention", ["x", "w"], ["y"], domain="com.microsoft", num_heads=HEADS, unidirectional=1)
    rng = np.random.default_rng(0)
    proto = model([node], [("x", F, [BATCH, "seq", HIDDEN])], {"w": floats(rng, (HIDDEN, 3 * HIDDEN), 0.3)}, ["y"])
    _, record = fuse_on_samples(proto, [{"x": floats(rng, (BATCH, SEQ, HIDDEN), 1.0)}])
    (miss,) = misses(record, "contrib-attention")
    assert "static sequence and past" in miss["message"] and miss["fix"]


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([0, 2, 5]), st.sampled_from([0, 1]), st.sampled_from([None, "raw", "ends"]), st.sampled_from(SCALES),
       st.sampled_from([-10000.0, -1e9]), st.integers(0, 1000))
def test_packed_attention_matches_the_kernel_at_any_past_mask_and_scale(past, unidirectional, mask, scale, fill, seed):
    """Whatever the past length, causality, mask layout, fill and input scale, the rewrite computes
    what onnxruntime's Attention kernel computes (the differential check inside ``fuse``)."""
    proto = packed_attention(past, unidirectional, mask, present_read=bool(past), seed=seed, mask_filter_value=fill)
    feeds = samples(past, mask, seed)[seed % 4]
    feeds["x"] = feeds["x"] / np.float32(np.abs(feeds["x"]).max() or 1) * np.float32(scale)
    rewritten, record = fuse_on_samples(proto, [feeds], tolerance=Tolerance(rtol=1e-3, atol=1e-4))
    assert record.counters["contrib-attention"] == 1 and not contrib_left(rewritten)


@pytest.mark.parametrize(("past", "unidirectional", "mask"), [(0, 0, "raw"), (3, 1, "raw"), (3, 0, "ends")])
def test_float16_packed_attention_is_computed_in_float32_like_the_kernel(past, unidirectional, mask):
    """The kernel projects and attends 16-bit inputs in float32: so does the rewrite (float16
    scores at scale 10 would be off by far more than float16's tolerance)."""
    proto, feeds = to_float16(packed_attention(past, unidirectional, mask, present_read=bool(past)), samples(past, mask))
    rewritten, record = fuse_on_samples(proto, feeds)
    assert record.counters["contrib-attention"] == 1 and record.counters["attention"] == 1 and not contrib_left(rewritten)


def test_a_raw_mask_needs_no_static_sequence():
    """A BERT with symbolic batch and sequence: the raw mask [batch, seq] matches by dim names."""
    node = helper.make_node("Attention", ["x", "w", "b", "mask"], ["y"], domain="com.microsoft", num_heads=HEADS)
    rng = np.random.default_rng(1)
    proto = model([node], [("x", F, ["batch", "seq", HIDDEN]), ("mask", I32, ["batch", "seq"])],
                  {"w": floats(rng, (HIDDEN, 3 * HIDDEN), 0.3), "b": floats(rng, (3 * HIDDEN,), 0.1)}, ["y"])
    rewritten, record = fuse_on_samples(proto, samples(0, "raw"), tolerance=KERNEL)
    assert record.counters["contrib-attention"] == 1 and not contrib_left(rewritten)
