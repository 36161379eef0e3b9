"""Which output elements a verifier must not compare after attention-mask: fully masked rows.

A query row whose every key is masked (an all-padding sequence, the leading pads of a
left-padded causal model, the last pads of a sliding window) has no defined output: finfo.min
gives a uniform average, -inf gives NaN or the SDPA guard's zeros, the Attention spec gives
zeros, and the rewritten mask gives a softmax of NEG-shifted scores. No consumer reads those
positions. :func:`fully_masked_positions` finds them in the rewritten model from its own masks
and marks, in each output, the elements of those rows (the axis after batch whose length is
the number of queries).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mapc.ir import Model, producer, run
from mapc.passes.attention_mask.detection import find_attentions


def fully_masked_positions(model: Model, feeds: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], neg: float) -> dict[str, np.ndarray]:
    """Per output name, True at elements that belong to a fully masked query row."""
    pairs = _mask_tensors(model)
    if not pairs:
        return {}
    values = run(model, feeds, outputs=sorted({n for pair in pairs for n in pair}))
    rows = None
    for name, scores in pairs:
        mask = np.asarray(values[name])
        queries = values[scores].shape[-2]
        if mask.ndim < 2:
            continue
        mask = np.broadcast_to(mask, mask.shape[:-2] + (queries, mask.shape[-1])) if mask.shape[-2] == 1 else mask
        full = ~np.any(mask, axis=-1) if mask.dtype == np.bool_ else np.all(mask <= neg, axis=-1)
        full = full.reshape((full.shape[0], -1, full.shape[-1])) if full.ndim >= 2 else full[None, None]
        full = full.any(axis=1)  # [B|1, S|1]
        rows = full if rows is None else (rows | full)
    if rows is None or not rows.any():
        return {}
    ignore = {}
    for name, value in outputs.items():
        value = np.asarray(value)
        if value.ndim == 0 or (value.shape[0] != rows.shape[0] and rows.shape[0] != 1):
            continue
        axis = next((a for a in range(1, value.ndim) if value.shape[a] == rows.shape[1]), None)
        if axis is None:
            # No query axis (a pooled or classifier output): it may read any query row, so a
            # batch item with a fully masked row is left out as a whole.
            items = rows.any(axis=1).reshape([rows.shape[0]] + [1] * (value.ndim - 1))
            ignore[name] = np.broadcast_to(items, value.shape)
            continue
        shape = [rows.shape[0]] + [1] * (value.ndim - 1)
        shape[axis] = rows.shape[1]
        ignore[name] = np.broadcast_to(rows.reshape(shape), value.shape)
    return ignore


def _mask_tensors(model: Model) -> list[tuple[str, str]]:
    """(mask, a tensor whose second-to-last axis is the queries) per masked attention."""
    pairs = []
    for site in find_attentions(model.graph):
        if site.kind == "attention-op":
            query = site.node.inputs[0]
            if len(site.node.inputs) > 3 and not site.node.inputs[3].is_empty() and query.shape is not None and len(query.shape) == 4:
                pairs.append((site.node.inputs[3].name, query.name))
            continue
        add = producer(site.node.inputs[0])
        if add is not None and add.op == "Add" and site.contributions and site.contributions[0].kind == "additive":
            pairs.append((site.contributions[0].mask.name, site.node.inputs[0].name))
    return sorted(set(pairs))
