"""The original, dynamic-cache export, run the way its exporter intended: what a static split must reproduce.

:class:`DynamicDecoder` feeds the export tokens with a past (an empty one first), an all-ones
padding mask and, when the export takes them, positions ``past .. past+T-1``; it returns the
logits and the grown ``present`` tensors. :func:`greedy_dynamic` decodes greedily with it: all of
the prompt at once, then one token per step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from mapc.ir import make_session
from mapc.llm.source import load_decoder
from mapc.llm.roles import DecoderRoles, find_roles


class DynamicDecoder:
    """One session of the source export, with its roles."""

    def __init__(self, source: str | os.PathLike, roles: dict[str, str] | None = None) -> None:
        model = load_decoder(source)
        self.roles: DecoderRoles = find_roles(model, roles)
        self.dtypes = {t.name: np.dtype(t.dtype) for t in model.graph.inputs}
        self.session = make_session(model)

    def empty_past(self) -> dict[str, np.ndarray]:
        roles = self.roles
        return {name: np.zeros((1, roles.kv_heads, 0, roles.head_dim), self.dtypes[name]) for name in roles.past_inputs}

    def run(self, tokens: Sequence[int], past: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits ``[1, T, vocab]`` of ``tokens`` after ``past``, and the grown cache (by past input name)."""
        roles = self.roles
        length = next(iter(past.values())).shape[2] if past else 0
        feeds = {roles.input_ids: np.array([list(tokens)], self.dtypes[roles.input_ids]),
                 roles.attention_mask: np.ones((1, length + len(tokens)), self.dtypes[roles.attention_mask]), **past}
        if roles.position_ids is not None:
            feeds[roles.position_ids] = np.arange(length, length + len(tokens), dtype=self.dtypes[roles.position_ids])[None]
        present_to_past = {layer.present_key: layer.past_key for layer in roles.layers}
        present_to_past.update({layer.present_value: layer.past_value for layer in roles.layers})
        names = [roles.logits, *present_to_past]
        values = dict(zip(names, self.session.run(names, feeds)))
        return values[roles.logits], {present_to_past[name]: values[name] for name in present_to_past}


def generate_dynamic(source: str | os.PathLike, prompt_ids: Sequence[int], max_new_tokens: int,
                     roles: dict[str, str] | None = None) -> list[int]:
    """``max_new_tokens`` greedy token ids from the dynamic export at ``source``."""
    return greedy_dynamic(source, prompt_ids, max_new_tokens, roles)[0]


def greedy_dynamic(source: str | os.PathLike | DynamicDecoder, prompt_ids: Sequence[int], max_new_tokens: int,
                   roles: dict[str, str] | None = None) -> tuple[list[int], list[np.ndarray]]:
    """Greedy token ids and, for each, the logits it was chosen from (the last position's)."""
    decoder = source if isinstance(source, DynamicDecoder) else DynamicDecoder(source, roles)
    past = decoder.empty_past()
    step = [int(t) for t in prompt_ids]
    generated: list[int] = []
    chosen_from: list[np.ndarray] = []
    while len(generated) < max_new_tokens:
        logits, past = decoder.run(step, past)
        token = int(np.argmax(logits[0, -1]))
        generated.append(token)
        chosen_from.append(logits[0, -1])
        step = [token]
    return generated, chosen_from
