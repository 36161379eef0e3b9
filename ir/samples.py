"""Verification inputs that look like real ones: several samples, each stressing something else.

:func:`verification_samples` makes reproducible samples for a model's graph inputs (the shared
generator of ``--verify``, ``--verify-each`` and ``mapc.testing``). Sample ``k`` of ``count``:

* **token ids** spread over the vocabulary: an integer input that indexes a constant table with
  ``Gather`` (through casts and reshapes: an embedding, a position table) gets ids drawn from
  ``[0, rows of the table)``; other integers stay 0 or 1 (valid indices into any non-empty
  axis, shapes of 1);
* **masks** (an input the caller names, by its role: the inputs attention masks are computed
  from; or an input whose name contains ``mask``): 1/True attend, 0/False masked, along the
  last axis: sample 0 pads the end of the last batch row, sample 1 its start, sample 2 masks the
  last batch row entirely (a fully masked row), sample 3 is random with the first position kept;
  an additive float mask (so named by the caller, or ``additive`` or ``bias`` in its name) holds
  0 or ``finfo.min``;
* **floats** normal, at scale :data:`FLOAT_SCALES` ``[k]`` (1, 1e-3, 1e3, 1; 10 instead of 1e3
  for 16-bit floats), so a rewrite that assumes small or unit-sized values is caught;
* **symbolic dims** the user did not fix take :data:`DIM_VALUES` ``[k]`` (2, 3, 2, 5): the
  fixed values where given, other values elsewhere;
* booleans random.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir.dim_expr import symbols_of
from mapc.ir.evaluate import DEFAULT_DIM, concrete_dim, random_array
from mapc.ir.graph import constant_tensor, standard_op

#: Scale of float inputs per sample (16-bit floats use 10 for 1e3: their range ends at 65504).
FLOAT_SCALES = (1.0, 1e-3, 1e3, 1.0)
#: Value of the symbolic dims nobody fixed, per sample.
DIM_VALUES = (DEFAULT_DIM, 3, DEFAULT_DIM, 5)
#: How each sample pads a mask's last batch row.
MASK_PATTERNS = ("right padding", "left padding", "a fully masked row", "random padding")
#: Ops an index input passes through unchanged on its way to a Gather.
_INDEX_MOVES = frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Expand", "Identity"})


@dataclass(frozen=True)
class Sample:
    """One verification input: the feeds and what they exercise (for messages)."""

    feeds: dict[str, np.ndarray]
    label: str


def verification_samples(
    model: gs.Graph | object,
    *,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
    masks: Mapping[str, str] | None = None,
    count: int = len(FLOAT_SCALES),
    relation: Mapping[str, str] | None = None,
    start: int = 0,
    float_scales: Sequence[float] = FLOAT_SCALES,
) -> list[Sample]:
    """``count`` reproducible samples for ``model`` (a :class:`~mapc.ir.Model` or a gs graph),
    as the module docstring describes. ``dims``/``shapes`` are the values the user fixed;
    ``masks`` names mask inputs by role: ``"keep"`` (1/True attend) or ``"additive"`` (0 or
    ``finfo.min``); ``relation`` gives some free dims as expressions of others
    (``{"total_sequence_length": "past_sequence_length + sequence_length"}``, one of
    :func:`dim_relations`). ``start`` numbers the first sample (sample ``k`` is the same whatever
    ``count``); ``float_scales`` replaces :data:`FLOAT_SCALES` (random calibration keeps floats at
    unit scale and gets realistic token ids and masks)."""
    roles = dict(masks or {})
    graph = model if isinstance(model, gs.Graph) else model.graph  # type: ignore[attr-defined]
    fixed_dims = dict(dims or {})
    fixed_shapes = dict(shapes or {})
    vocab = {t.name: rows for t in graph.inputs if (rows := _vocabulary(t)) is not None}
    samples = []
    for index in range(start, start + count):
        rng = np.random.default_rng([seed, index])
        scale = float_scales[index % len(float_scales)]
        dim_value = DIM_VALUES[index % len(DIM_VALUES)]
        feeds: dict[str, np.ndarray] = {}
        for tensor in graph.inputs:
            if isinstance(tensor, gs.Constant):
                continue
            if tensor.name in fixed_shapes:
                shape = [int(d) for d in fixed_shapes[tensor.name]]
            else:
                free = {s: dim_value for d in (tensor.shape or []) if isinstance(d, str) for s in symbols_of(d)}
                known = {**free, **fixed_dims}
                for symbol, expression in (relation or {}).items():
                    if symbol not in fixed_dims:
                        known[symbol] = concrete_dim(expression, {**{s: dim_value for s in symbols_of(expression)}, **fixed_dims})
                shape = [concrete_dim(d, known) for d in (tensor.shape or [])]
            feeds[tensor.name] = _array(rng, tensor, shape, index, scale, vocab.get(tensor.name), roles.get(tensor.name))
        label = f"sample {index} (floats ×{scale:g}, free dims {dim_value}, masks with {MASK_PATTERNS[index % len(MASK_PATTERNS)]})"
        samples.append(Sample(feeds, label))
    return samples


def dim_relations(model: gs.Graph | object) -> list[dict[str, str]]:
    """Candidate relations between the free dims of ``model``'s inputs, for a model that runs
    only when they hold: each input dim symbol that no dim expression uses, paired with each
    expression of other input symbols the graph's outputs carry (dynamo's KV-cache decoders take
    ``attention_mask [batch, total_sequence_length]`` and return ``past_sequence_length +
    sequence_length`` keys). In a stable order; empty when there is nothing to relate."""
    graph = model if isinstance(model, gs.Graph) else model.graph  # type: ignore[attr-defined]
    bare = {d for t in graph.inputs for d in (t.shape or []) if isinstance(d, str) and symbols_of(d) == {d}}
    expressions = sorted({d for t in graph.outputs for d in (t.shape or []) if isinstance(d, str) and symbols_of(d) != {d}
                          and symbols_of(d) and symbols_of(d) <= bare})
    used = {s for expression in expressions for s in symbols_of(expression)}
    return [{symbol: expression} for symbol in sorted(bare - used) for expression in expressions]


def _array(rng: np.random.Generator, tensor: gs.Tensor, shape: list[int], index: int, scale: float, rows: int | None, role: str | None) -> np.ndarray:
    dtype = np.dtype(tensor.dtype or np.float32)
    name = tensor.name.lower()
    if (role is not None or "mask" in name) and shape:
        return _mask(rng, dtype, shape, index, additive=role == "additive" or any(w in name for w in ("additive", "bias")))
    if np.issubdtype(dtype, np.integer) and rows is not None and rows > 0:
        return rng.integers(0, rows, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        if dtype.itemsize <= 2 and scale > 10:
            scale = 10.0
        return np.asarray(rng.standard_normal(shape) * scale, dtype=dtype)
    return random_array(rng, dtype, shape)


def _mask(rng: np.random.Generator, dtype: np.dtype, shape: list[int], index: int, *, additive: bool) -> np.ndarray:
    keep = np.ones(shape, bool)
    length = shape[-1]
    last = (shape[0] - 1 if shape[0] else 0,) if len(shape) >= 2 else ()
    pattern = index % len(MASK_PATTERNS)
    padded = max(1, length // 3) if length > 1 else 0
    if pattern == 0 and padded:
        keep[last + (..., slice(length - padded, None))] = False
    elif pattern == 1 and padded:
        keep[last + (..., slice(0, padded))] = False
    elif pattern == 2:
        keep[last] = False
    elif pattern == 3:
        keep = rng.random(shape) < 0.7
        keep[..., 0] = True
    if dtype == np.bool_:
        return keep
    if np.issubdtype(dtype, np.floating) and additive:
        return np.where(keep, 0, np.finfo(dtype).min).astype(dtype)
    return keep.astype(dtype)


def _vocabulary(tensor: gs.Tensor) -> int | None:
    """Rows of the smallest constant table ``tensor`` indexes through ``Gather`` (None if none)."""
    rows: list[int] = []
    stack, seen = [tensor], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for reader in current.outputs:
            op = standard_op(reader)
            if op in _INDEX_MOVES and reader.inputs and reader.inputs[0] is current:
                stack.extend(reader.outputs)
            elif op == "Gather" and len(reader.inputs) > 1 and reader.inputs[1] is current:
                table = constant_tensor(reader.inputs[0])
                axis = int(reader.attrs.get("axis", 0))
                if table is not None and table.shape:
                    rows.append(int(table.shape[axis]))
    return min(rows) if rows else None
