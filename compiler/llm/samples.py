"""Realistic inputs of a static step, taken from the source export's own decoding.

A static step's graph reads a KV cache as a graph input, so nothing proves how large its
attention scores get; the attention-mask pass measures them on samples before it replaces the
exporter's mask (:mod:`mapc.passes.attention_mask.exactness`). :func:`step_samples` gives it
inputs like the device will see: seeded prompts over the whole vocabulary are decoded greedily
by the source export, one teacher-forced run over each sequence gives the cache at every
position, and each sample is one step at some fill of the cache (a short prompt left-padded,
a full chunk, a later chunk, decode steps across the cache), in the step's own input names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mapc.llm.prompts import prompts
from mapc.llm.reference import DynamicDecoder, greedy_dynamic
from mapc.llm.static_io import MASK_2D, StaticStep

#: Seeded prompts decoded for samples.
SAMPLE_PROMPTS = 3


def source_sequences(decoder: DynamicDecoder, context: int, prefill: int, seed: int) -> list[tuple[list[int], dict[str, np.ndarray]]]:
    """Sequences the source decodes from seeded prompts (up to the context), each with the cache
    over all of its positions (past input name -> ``[1, kv_heads, L, head_dim]``)."""
    traces = []
    for prompt in prompts(decoder.roles.vocab_size, context, prefill, seed, SAMPLE_PROMPTS):
        length = len(prompt)
        tokens = prompt + greedy_dynamic(decoder, prompt, max(1, min(context, 2 * prefill + 4) - length))[0]
        tokens = tokens[:context]
        _, cache = decoder.run(tokens, decoder.empty_past())
        traces.append((tokens, cache))
    return traces


def step_samples(step: StaticStep, decoder: DynamicDecoder, traces: Sequence[tuple[list[int], dict[str, np.ndarray]]]) -> list[dict[str, np.ndarray]]:
    """Inputs of ``step`` (its names, dtypes and shapes) at several fills of the cache."""
    width, context = step.new_tokens, step.context
    samples = []
    for tokens, cache in traces:
        for start, count in _windows(len(tokens), width, context):
            samples.append(_sample(step, decoder, tokens, cache, start, count))
    return samples


def _windows(length: int, width: int, context: int) -> list[tuple[int, int]]:
    """(cache fill, new tokens) of the steps sampled from a sequence of ``length`` tokens."""
    if width > 1:  # prefill: the first chunk (padded when short), and a later full one
        windows = [(0, min(width, length))]
        if length >= 2 * width and 2 * width <= context:
            windows.append((width, width))
        return windows
    last = min(length, context) - 1
    return sorted({(n, 1) for n in (0, last // 3, 2 * last // 3, last)})


def _sample(step: StaticStep, decoder: DynamicDecoder, tokens: list[int], cache: dict[str, np.ndarray],
            start: int, count: int) -> dict[str, np.ndarray]:
    roles = decoder.roles
    width, context = step.new_tokens, step.context
    pad = width - count
    ids = np.array([[0] * pad + tokens[start: start + count]], np.int64)
    positions = np.array([[0] * pad + list(range(start, start + count))], np.int64)
    mask = np.zeros((1, context), np.int64)
    mask[0, :start] = 1
    mask[0, context - count:] = 1
    values: dict[str, np.ndarray] = {"input_ids": ids, "position_ids": positions, MASK_2D: mask}
    for name, (index_input, table) in step.host_tables.items():
        values[name] = table[ids[0] if index_input == "input_ids" else positions[0]][None]
    for table in step.rope:
        values[table.input] = np.moveaxis(table.table[positions[0]], 0, table.axis).reshape(table.shape)
    for layer in roles.layers:
        for kind, source in (("key", layer.past_key), ("value", layer.past_value)):
            past = np.zeros((1, roles.kv_heads, context - width, roles.head_dim), np.float32)
            past[:, :, :start] = cache[source][:, :, :start]
            values[f"past_{kind}.{layer.index}"] = past
    inputs = {t.name: np.dtype(t.dtype) for t in step.model.graph.inputs}
    return {name: values[name].astype(dtype) for name, dtype in inputs.items() if name in values}
