"""onnxruntime's contrib MultiHeadAttention -> standard attention, checked against its CPU kernel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from mapc.ir import infer_shapes, load
from mapc.ir.compare import Tolerance
from mapc.passes.base import PassContext
from mapc.passes.fusion.context import FusionSettings
from mapc.passes.fusion.contrib.mha import ContribMultiHeadAttentionToStandard
from mapc.passes.fusion.fuse import run_rules

from .common import misses
from .contrib_graphs import F, I32, SCALES, contrib_left, floats, fuse_on_samples, model, padding_masks, to_float16

KERNEL = Tolerance(rtol=1e-4, atol=1e-4)
HIDDEN, HEADS, BATCH, SEQ = 16, 4, 2, 4
HEAD = HIDDEN // HEADS


def mha(*, kv_seq=SEQ, past=0, mask=None, bias=True, attention_bias=False, unidirectional=0, layout="separate", seed=0, **attrs):
    """A MultiHeadAttention graph; K/V come from projections of ``x``/``memory`` (Whisper's
    decoder: self attention with a past, cross attention on the encoder output)."""
    rng = np.random.default_rng(seed)
    total = past + kv_seq
    names = {"query": "q", "key": "k", "value": "v", "bias": "b" if bias else "", "mask": "mask" if mask else "",
             "attention_bias": "ab" if attention_bias else "", "past_key": "pk" if past else "", "past_value": "pv" if past else ""}
    inputs = [("q", F, [BATCH, SEQ, HIDDEN])]
    if layout == "separate":
        inputs += [("k", F, [BATCH, kv_seq, HIDDEN]), ("v", F, [BATCH, kv_seq, HIDDEN])]
    elif layout == "bnsh":
        inputs += [("k", F, [BATCH, HEADS, kv_seq, HEAD]), ("v", F, [BATCH, HEADS, kv_seq, HEAD])]
    elif layout == "packed_kv":
        inputs += [("k", F, [BATCH, kv_seq, HEADS, 2, HEAD])]
        names["value"] = ""
    else:
        inputs = [("q", F, [BATCH, SEQ, HEADS, 3, HEAD])]
        names["key"] = names["value"] = ""
    if mask:
        inputs.append(("mask", I32, {"raw": [BATCH, total], "raw3d": [BATCH, SEQ, total], "ends": [BATCH]}[mask]))
    if attention_bias:
        inputs.append(("ab", F, [1, HEADS, SEQ, total]))
    if past:
        inputs += [("pk", F, [BATCH, HEADS, past, HEAD]), ("pv", F, [BATCH, HEADS, past, HEAD])]
    slots = list(names.values())
    while slots[-1] == "":
        slots.pop()
    outputs = ["y", "present_key", "present_value"] if layout in ("separate", "packed_kv", "packed_qkv") else ["y"]
    node = helper.make_node("MultiHeadAttention", slots, outputs, domain="com.microsoft", num_heads=HEADS, unidirectional=unidirectional, **attrs)
    inits = {"b": floats(rng, (3 * HIDDEN,), 0.1)} if bias else {}
    return model([node], inputs, inits, outputs), inputs


def samples(inputs, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for index, scale in enumerate(SCALES + (1.0,)):
        feeds = {}
        for name, elem, shape in inputs:
            if name == "mask":
                continue
            feeds[name] = floats(rng, shape, scale)
        mask = next(((n, s) for n, e, s in inputs if n == "mask"), None)
        if mask is not None:
            shape = mask[1]
            total = shape[-1] if len(shape) > 1 else None
            if len(shape) == 1:
                feeds["mask"] = np.array([SEQ, 1 + index % SEQ], np.int32)
            else:
                raw = padding_masks(BATCH, total)[index]
                feeds["mask"] = raw if len(shape) == 2 else np.repeat(raw[:, None], SEQ, axis=1)
        out.append(feeds)
    return out


CASES = {
    "encoder self attention, raw mask": dict(mask="raw"),
    "3-D mask, attention bias": dict(mask="raw3d", attention_bias=True),
    "end positions, no bias": dict(mask="ends", bias=False),
    "decoder self attention with past, causal": dict(past=3, unidirectional=1, mask="raw"),
    "cross attention on a longer memory": dict(kv_seq=6, mask="raw"),
    "cross attention on computed K/V heads": dict(kv_seq=6, layout="bnsh", bias=False),
    "custom scale and fill": dict(mask="raw", scale=0.3, mask_filter_value=-1e9),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_multi_head_attention_becomes_standard_attention(case):
    proto, inputs = mha(**CASES[case])
    rewritten, record = fuse_on_samples(proto, samples(inputs), tolerance=KERNEL)
    assert record.counters["contrib-multi-head-attention"] == 1 and record.counters["attention"] == 1
    assert not contrib_left(rewritten)


def test_multi_head_attention_with_a_beam_search_cache_is_a_near_miss():
    proto, inputs = mha(past=3)
    node = proto.graph.node[0]
    node.input.extend(["", "cache"])
    proto.graph.input.append(helper.make_tensor_value_info("cache", I32, [BATCH, 1, 8]))
    feeds = samples(inputs)[0] | {"cache": np.zeros((BATCH, 1, 8), np.int32)}
    rewritten, record = fuse_on_samples(proto, [feeds])
    (miss,) = misses(record, "contrib-multi-head-attention")
    assert "cache_indirection" in miss["message"] and contrib_left(rewritten) == ["MultiHeadAttention"]


@pytest.mark.parametrize("layout", ["packed_kv", "packed_qkv"])
def test_packed_kv_and_qkv_are_near_misses_onnxruntime_cannot_check(layout):
    """onnxruntime's CPU kernel refuses packed inputs: the rule runs without the differential check."""
    proto, _ = mha(layout=layout, bias=False)
    loaded = load(proto)
    infer_shapes(loaded)
    reports = run_rules(loaded, PassContext(), [ContribMultiHeadAttentionToStandard()], FusionSettings())
    (miss,) = reports["contrib-multi-head-attention"].near_misses
    assert "CPU kernel does not implement" in miss.message and reports["contrib-multi-head-attention"].fired == 0


def test_causal_cross_attention_is_a_near_miss():
    proto, inputs = mha(kv_seq=6, unidirectional=1)
    rewritten, record = fuse_on_samples(proto, samples(inputs)[:1])
    (miss,) = misses(record, "contrib-multi-head-attention")
    assert "self attention" in miss["message"] and contrib_left(rewritten) == ["MultiHeadAttention"]


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(list(CASES)), st.sampled_from(SCALES), st.integers(0, 1000))
def test_multi_head_attention_matches_the_kernel_on_any_sample(case, scale, seed):
    """Every accepted layout computes what onnxruntime's kernel computes on random samples."""
    proto, inputs = mha(seed=seed, **CASES[case])
    feeds = samples(inputs, seed)[seed % 4]
    feeds = {k: (v * np.float32(scale) if v.dtype == np.float32 else v) for k, v in feeds.items()}
    rewritten, record = fuse_on_samples(proto, [feeds], tolerance=Tolerance(rtol=1e-3, atol=1e-4))
    assert record.counters["contrib-multi-head-attention"] == 1 and not contrib_left(rewritten)


@pytest.mark.parametrize("case", ["encoder self attention, raw mask", "decoder self attention with past, causal",
                                  "cross attention on computed K/V heads", "3-D mask, attention bias"])
def test_float16_multi_head_attention_is_computed_in_float32_like_the_kernel(case):
    """16-bit Q/K/V get their bias and attention in float32, as the kernel computes them."""
    proto, inputs = mha(**CASES[case])
    proto, feeds = to_float16(proto, samples(inputs))
    rewritten, record = fuse_on_samples(proto, feeds)
    assert record.counters["contrib-multi-head-attention"] == 1 and not contrib_left(rewritten)
