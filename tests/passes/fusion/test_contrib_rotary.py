"""onnxruntime's contrib RotaryEmbedding -> the standard RotaryEmbedding, checked against its kernel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from mapc.ir.compare import Tolerance

from .common import domains, misses
from .contrib_graphs import F, I64, SCALES, contrib_left, floats, fuse_on_samples, model

KERNEL = Tolerance(rtol=1e-4, atol=1e-5)
BATCH, SEQ, HEADS, HEAD, MAX_POS = 2, 5, 3, 8, 32


def caches(width: int, base: float = 10000.0):
    """cos/sin caches ``[MAX_POS, width]`` as RoPE builds them."""
    inv = 1.0 / base ** (np.arange(width) / width)
    angles = np.arange(MAX_POS)[:, None] * inv[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rotary(rank: int, start: bool, opset: int = 23, **attrs):
    width = attrs.get("rotary_embedding_dim", HEAD) // 2
    cos, sin = caches(width)
    shape = [BATCH, SEQ, HEADS * HEAD] if rank == 3 else [BATCH, HEADS, SEQ, HEAD]
    node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain="com.microsoft", **attrs)
    proto = model([node], [("x", F, shape), ("pos", I64, [1] if start else [BATCH, SEQ])], {"cos": cos, "sin": sin}, ["y"], opset=opset)
    return proto, shape


def samples(shape, start: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for index, scale in enumerate(SCALES):
        positions = np.array([index * 7], np.int64) if start else rng.integers(0, MAX_POS, (BATCH, SEQ)).astype(np.int64)
        out.append({"x": floats(rng, shape, scale), "pos": positions})
    return out


@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("start", [False, True])
@pytest.mark.parametrize("attrs", [{}, {"interleaved": 1}, {"rotary_embedding_dim": 4, "num_heads": HEADS}], ids=["half", "interleaved", "partial"])
def test_contrib_rotary_becomes_the_standard_op(rank, start, attrs):
    proto, shape = rotary(rank, start, **attrs)
    rewritten, record = fuse_on_samples(proto, samples(shape, start), tolerance=KERNEL)
    assert record.counters["contrib-rotary"] == 1 and not contrib_left(rewritten)
    assert domains(rewritten)[("", "RotaryEmbedding")] == 1


def test_contrib_rotary_below_opset_23_asks_for_the_upgrade():
    proto, shape = rotary(3, False, opset=18)
    rewritten, record = fuse_on_samples(proto, samples(shape, False)[:1])
    (miss,) = misses(record, "contrib-rotary")
    assert "opset 23" in miss["message"] and "--target-opset 23" in miss["fix"] and contrib_left(rewritten) == ["RotaryEmbedding"]


def test_contrib_rotary_with_a_scale_is_a_near_miss():
    proto, shape = rotary(4, False, scale=0.5)
    _, record = fuse_on_samples(proto, samples(shape, False)[:1])
    (miss,) = misses(record, "contrib-rotary")
    assert "scaled" in miss["message"]


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([3, 4]), st.booleans(), st.sampled_from([0, 1]), st.sampled_from([0, 4]), st.sampled_from(SCALES), st.integers(0, 1000))
def test_contrib_rotary_matches_the_kernel_on_any_positions(rank, start, interleaved, partial, scale, seed):
    """Any layout, position form, interleaving and partial width computes what the kernel computes."""
    attrs = {"interleaved": interleaved} | ({"rotary_embedding_dim": partial, "num_heads": HEADS} if partial else {})
    proto, shape = rotary(rank, start, **attrs)
    feeds = samples(shape, start, seed)[seed % 3]
    feeds["x"] = feeds["x"] * np.float32(scale)
    rewritten, record = fuse_on_samples(proto, [feeds], tolerance=Tolerance(rtol=1e-4, atol=1e-5))
    assert record.counters["contrib-rotary"] == 1 and not contrib_left(rewritten)
