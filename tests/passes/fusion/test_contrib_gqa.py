"""onnxruntime's contrib GroupQueryAttention -> KV-cache update + standard grouped attention,
checked against its CPU kernel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from mapc.ir.compare import Tolerance

from .common import domains, misses
from .contrib_graphs import F, I32, I64, SCALES, contrib_left, floats, fuse_on_samples, model, to_float16
from .test_contrib_rotary import caches

KERNEL = Tolerance(rtol=1e-4, atol=1e-4)
BATCH, HEADS, KV_HEADS, HEAD = 2, 4, 2, 32  # the kernel's rotary wants cache widths of 8k


def gqa(seq: int, total: int, past: int = 0, packed: bool = False, rotary: int = 0, present_read: bool = True, opset: int = 23,
        batch: int = BATCH, bias: list[int] | None = None, position_ids: bool = False, **attrs):
    """A GroupQueryAttention graph with a constant total_sequence_length (as after fix-shapes)."""
    hq, hk = HEADS * HEAD, KV_HEADS * HEAD
    names = ["q", "" if packed else "k", "" if packed else "v", "pk" if past else "", "pv" if past else "", "seqlens", "total"]
    inputs = [("q", F, [batch, seq, hq + 2 * hk if packed else hq])]
    if not packed:
        inputs += [("k", F, [batch, seq, hk]), ("v", F, [batch, seq, hk])]
    if past:
        inputs += [("pk", F, [batch, KV_HEADS, past, HEAD]), ("pv", F, [batch, KV_HEADS, past, HEAD])]
    inputs.append(("seqlens", I32, [batch]))
    inits = {"total": np.asarray(total, np.int32)}
    if rotary:
        names += ["cos", "sin"]
        inits["cos"], inits["sin"] = caches(rotary // 2)
        attrs["do_rotary"] = 1
    if bias or position_ids:
        names += [""] * (9 - len(names)) + ["pos" if position_ids else ""] + (["bias"] if bias else [])
    if position_ids:
        inputs.append(("pos", I64, [batch, seq]))
    if bias:
        inputs.append(("bias", F, bias))
    outputs = ["y", "present_key", "present_value"] if present_read else ["y"]
    node = helper.make_node("GroupQueryAttention", names, outputs, domain="com.microsoft", num_heads=HEADS, kv_num_heads=KV_HEADS, **attrs)
    return model([node], inputs, inits, outputs, opset=opset), inputs


def samples(inputs, seqlens_options, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for index, seqlens in enumerate(seqlens_options):
        scale = SCALES[index % len(SCALES)]
        feeds = {name: floats(rng, shape, scale) for name, elem, shape in inputs if elem == F}
        feeds["seqlens"] = np.asarray(seqlens, np.int32)
        positions = next((shape for name, _, shape in inputs if name == "pos"), None)
        if positions is not None:  # anywhere in the 32-row rotary cache
            feeds["pos"] = (rng.integers(0, 32 - positions[1], (positions[0], 1)) + np.arange(positions[1])).astype(np.int64)
        out.append(feeds)
    return out


#: (graph arguments, seqlens_k samples the kernel accepts for it)
CASES = {
    "prompt, right padding": (dict(seq=5, total=5), [[4, 4], [4, 1], [0, 2]]),
    "prompt, packed QKV": (dict(seq=5, total=5, packed=True), [[4, 2], [1, 4]]),
    "prompt, rotary": (dict(seq=5, total=5, rotary=HEAD), [[4, 4], [4, 2]]),
    "prompt, partial interleaved rotary": (dict(seq=5, total=5, rotary=16, rotary_interleaved=1), [[4, 3]]),
    "prompt into a cache buffer": (dict(seq=3, total=3, past=6), [[2, 2], [2, 0]]),
    "decode, growing past": (dict(seq=1, total=7, past=6), [[6, 6], [6, 2], [0, 3]]),
    "decode into a static cache buffer": (dict(seq=1, total=8, past=8), [[7, 3], [0, 5]]),
    "decode, rotary": (dict(seq=1, total=7, past=6, rotary=HEAD), [[6, 3], [2, 6]]),
    "chunked prompt, one sequence": (dict(seq=3, total=7, past=4, batch=1), [[6], [5]]),
    "custom scale, presents unread": (dict(seq=4, total=4, scale=0.2, present_read=False), [[3, 1]]),
    "prompt, rotary at given positions": (dict(seq=5, total=5, rotary=HEAD, position_ids=True), [[4, 4], [4, 2]]),
    "decode, rotary at given positions": (dict(seq=1, total=7, past=6, rotary=HEAD, position_ids=True), [[6, 3], [2, 6]]),
    "decode, attention bias": (dict(seq=1, total=7, past=6, bias=[1, HEADS, 1, 7]), [[6, 2]]),
    "prompt, per-sequence attention bias": (dict(seq=5, total=5, bias=[BATCH, 1, 5, 5]), [[4, 2]]),
    "a local window spanning the buffer": (dict(seq=1, total=8, past=8, local_window_size=8), [[7, 3]]),
    "decode, sliding window": (dict(seq=1, total=8, past=8, local_window_size=3), [[7, 3], [0, 2]]),
    "decode, sliding window, rotary": (dict(seq=1, total=7, past=6, local_window_size=4, rotary=HEAD), [[6, 4]]),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_group_query_attention_becomes_grouped_standard_attention(case):
    arguments, seqlens = CASES[case]
    proto, inputs = gqa(**arguments)
    rewritten, record = fuse_on_samples(proto, samples(inputs, seqlens), tolerance=KERNEL)
    assert record.counters["contrib-group-query-attention"] == 1 and record.counters["attention"] == 1
    assert not contrib_left(rewritten)
    (attention,) = [n for n in rewritten.graph.nodes if n.op == "Attention"]
    assert attention.inputs[1].shape[1] == KV_HEADS  # grouped: K/V keep their own heads
    if arguments.get("rotary"):
        assert domains(rewritten)[("", "RotaryEmbedding")] == 2


def test_a_run_time_total_length_is_a_near_miss():
    proto, inputs = gqa(seq=1, total=7, past=6)
    proto.graph.initializer.pop(0)
    proto.graph.input.append(helper.make_tensor_value_info("total", I32, []))
    feeds = samples(inputs, [[6, 3]])[0] | {"total": np.asarray(7, np.int32)}
    rewritten, record = fuse_on_samples(proto, [feeds])
    (miss,) = misses(record, "contrib-group-query-attention")
    assert "computed at run time" in miss["message"] and "fold" in miss["fix"] and contrib_left(rewritten) == ["GroupQueryAttention"]


def test_a_sliding_window_on_a_first_prompt_is_a_near_miss():
    """Rows past a padded sequence's end read stale buffer columns in the kernel: not reproducible."""
    proto, inputs = gqa(seq=6, total=6, past=6, local_window_size=2)
    _, record = fuse_on_samples(proto, samples(inputs, [[5, 5]]))
    (miss,) = misses(record, "contrib-group-query-attention")
    assert "sliding window (2 keys) on a first prompt" in miss["message"]


def test_rotary_below_opset_23_asks_for_the_upgrade():
    proto, inputs = gqa(seq=1, total=7, past=6, rotary=HEAD, opset=18)
    _, record = fuse_on_samples(proto, samples(inputs, [[6, 3]]))
    (miss,) = misses(record, "contrib-group-query-attention")
    assert "--target-opset 23" in miss["fix"]


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([(4, 0), (1, 5), (1, 6)]), st.booleans(), st.sampled_from([0, HEAD]), st.sampled_from([-1, 2, 5]),
       st.sampled_from(SCALES), st.data())
def test_group_query_attention_matches_the_kernel_for_any_valid_lengths(shape, packed, rotary, window, scale, data):
    """Prompt or decode, any valid per-sequence lengths, packed or not, with or without rotary and
    a sliding window when decoding: the rewrite computes what the kernel computes, present K/V included."""
    seq, past = shape
    window = window if past else -1
    total = seq if not past else past + seq if seq > 1 else past + 1
    if past:
        seqlens = [data.draw(st.integers(0, past)) for _ in range(BATCH)]
    else:
        seqlens = [data.draw(st.integers(0, seq - 1)) for _ in range(BATCH)]
    proto, inputs = gqa(seq=seq, total=total, past=past, packed=packed, rotary=rotary, local_window_size=window)
    feeds = samples(inputs, [seqlens], seed=sum(seqlens))[0]
    feeds = {k: v * np.float32(scale / SCALES[0]) if v.dtype == np.float32 else v for k, v in feeds.items()}
    rewritten, record = fuse_on_samples(proto, [feeds], tolerance=Tolerance(rtol=1e-3, atol=1e-4))
    assert record.counters["contrib-group-query-attention"] == 1 and not contrib_left(rewritten)


@pytest.mark.parametrize("case", ["prompt, right padding", "decode, growing past", "prompt, rotary", "decode into a static cache buffer"])
def test_float16_group_query_attention_matches_the_kernel(case):
    arguments, seqlens = CASES[case]
    proto, inputs = gqa(**arguments)
    proto, feeds = to_float16(proto, samples(inputs, seqlens))
    rewritten, record = fuse_on_samples(proto, feeds)
    assert record.counters["contrib-group-query-attention"] == 1 and not contrib_left(rewritten)


def test_an_attention_bias_narrower_than_the_buffer_is_a_near_miss():
    """A first prompt into a 6-key buffer with a bias over its 3 keys: the kernel indexes the
    bias by absolute position, which the standard op cannot express."""
    proto, inputs = gqa(seq=3, total=3, past=6, bias=[BATCH, 1, 3, 3])
    _, record = fuse_on_samples(proto, samples(inputs, [[2, 2]]))
    (miss,) = misses(record, "contrib-group-query-attention")
    assert "does not span the 6 keys" in miss["message"]
