"""The decoder export as :mod:`mapc.llm` reads it: one with-past decoder whose cache is a rank-4
key and value input per layer.

:func:`load_decoder` takes optimum's merged decoder on its with-past branch
(:func:`~mapc.llm.merged.take_cache_branch`) and splits a legacy GPT-2 cache stacked as
``[2, B, H, S, D]`` per layer into ``NAME.key`` and ``NAME.value`` (the ``split-stacked-kv`` pass);
both are exact, so the reference decoding and the static graphs start from the same function.
"""

from __future__ import annotations

import os

from mapc.ir import Model, UsageError, load
from mapc.llm.merged import take_cache_branch
from mapc.passes import PassContext, PassManager, get_pass


def load_decoder(source: str | os.PathLike) -> Model:
    """The decoder at ``source``, merged branch taken and a stacked cache split; a stacked cache
    the pass cannot split is a :class:`UsageError` naming the reader that keeps it whole."""
    model = load(source)
    take_cache_branch(model)
    if any(tensor.shape is not None and len(tensor.shape) == 5 and tensor.shape[0] == 2 for tensor in model.graph.inputs):
        record = PassManager([get_pass("split-stacked-kv")()]).run(model, PassContext(seed=0))[0]
        if record.notes:
            raise UsageError(f"{record.notes[0].message}; mapc llm needs each layer's keys and values apart")
    return model
