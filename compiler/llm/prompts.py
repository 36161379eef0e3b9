"""Seeded prompts over the whole vocabulary, shared by calibration, agreement and score samples."""

from __future__ import annotations

import numpy as np


def prompts(vocab: int, context: int, prefill: int, seed: int, count: int = 3) -> list[list[int]]:
    """Seeded prompts over the whole vocabulary: shorter than a chunk, one chunk, two chunks
    (as far as the cache allows)."""
    rng = np.random.default_rng(seed)
    lengths = [max(1, prefill // 2), prefill, min(context - 2, prefill + max(1, prefill // 2))]
    return [rng.integers(0, vocab, lengths[index % 3]).tolist() for index in range(count)]
