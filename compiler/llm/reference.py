"""Greedy decoding with the original, dynamic-cache export: what a static split must reproduce.

Feeds the export the way its own exporter intended: all tokens of the prompt at once with an
empty past, then one token per step with the grown ``present`` tensors as the next past, an
all-ones padding mask and, when the export takes them, positions ``past .. past+T-1``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from mapc.ir import load, make_session
from mapc.llm.merged import take_cache_branch
from mapc.llm.roles import find_roles


def generate_dynamic(source: str | os.PathLike, prompt_ids: Sequence[int], max_new_tokens: int,
                     roles: dict[str, str] | None = None) -> list[int]:
    """``max_new_tokens`` greedy token ids from the dynamic export at ``source``."""
    return greedy_dynamic(source, prompt_ids, max_new_tokens, roles)[0]


def greedy_dynamic(source: str | os.PathLike, prompt_ids: Sequence[int], max_new_tokens: int,
                   roles: dict[str, str] | None = None) -> tuple[list[int], list[np.ndarray]]:
    """Greedy token ids and, for each, the logits it was chosen from (the last position's)."""
    model = load(source)
    take_cache_branch(model)
    found = find_roles(model, roles)
    dtypes = {t.name: np.dtype(t.dtype) for t in model.graph.inputs}
    session = make_session(model)
    past = {name: np.zeros((1, found.kv_heads, 0, found.head_dim), dtypes[name]) for name in found.past_inputs}
    present_to_past = {layer.present_key: layer.past_key for layer in found.layers}
    present_to_past.update({layer.present_value: layer.past_value for layer in found.layers})
    tokens = [int(t) for t in prompt_ids]
    generated: list[int] = []
    chosen_from: list[np.ndarray] = []
    step = tokens
    length = 0
    while len(generated) < max_new_tokens:
        feeds = {found.input_ids: np.array([step], dtypes[found.input_ids]),
                 found.attention_mask: np.ones((1, length + len(step)), dtypes[found.attention_mask]), **past}
        if found.position_ids is not None:
            feeds[found.position_ids] = np.arange(length, length + len(step), dtype=dtypes[found.position_ids])[None]
        names = [found.logits, *present_to_past]
        values = dict(zip(names, session.run(names, feeds)))
        past = {present_to_past[name]: values[name] for name in present_to_past}
        length += len(step)
        logits = values[found.logits][0, -1]
        token = int(np.argmax(logits))
        generated.append(token)
        chosen_from.append(logits)
        step = [token]
    return generated, chosen_from
