"""What a quantize run found and decided, shared by its steps, and the quantizers it implies.

:class:`RunState` holds the placement, the tie groups with their parameters, every distinct
weight quantization with its promoted variant, the biases and the notes so far.
:func:`decide` turns a setting of the probe's switches (per quantized group and per weight:
1 planned, 2 promoted) into concrete :class:`~.emit.Decisions`: activation parameters, the
chosen weights, int32 biases at the scale each op reads its input at (raising a weight's scales
where a bias would overflow; see :func:`~.params.read_params`) and the
Relu/Clip folds that are exact under the chosen parameters (an inexact fold's input is
quantized with its output's parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mapc.passes.base import Note
from mapc.passes.quantize.emit import BiasDecision, Decisions
from mapc.passes.quantize.params import Group, fold_is_exact, read_params
from mapc.passes.quantize.placement import BiasSpec, Placement, WeightSpec
from mapc.passes.quantize.weights import QuantizedWeight, quantize_bias, requantize


@dataclass
class WeightEntry:
    """One distinct weight quantization, the reads that use it, and its promoted variant."""

    spec: WeightSpec
    uses: list[tuple[str, int]]
    values: np.ndarray
    main: QuantizedWeight
    alternative: QuantizedWeight | None = None


@dataclass
class BiasEntry:
    """One bias read, the weight entry whose scales it follows, and its float values."""

    use: tuple[str, int]
    spec: BiasSpec
    weight: int
    original: np.ndarray | None
    corrected: np.ndarray | None = None


@dataclass
class RunState:
    """What the run found and decided, shared by its steps."""

    placement: Placement
    groups: list[Group] = field(default_factory=list)
    weights: list[WeightEntry] = field(default_factory=list)
    biases: list[BiasEntry] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    #: Biases whose weight scales :func:`decide` raised last (for the report).
    adjusted: list[dict[str, Any]] = field(default_factory=list)

    def quantized_groups(self) -> list[Group]:
        """The groups that get a quantizer (the probe's activation switches, in order)."""
        return [g for g in self.groups if g.params is not None]


def planned_settings(state: RunState) -> tuple[np.ndarray, np.ndarray]:
    """Every switch at 1: each group and weight quantized as planned."""
    return np.ones(len(state.quantized_groups()), dtype=np.int64), np.ones(len(state.weights), dtype=np.int64)


def decide(state: RunState, activation_state: np.ndarray, weight_state: np.ndarray) -> Decisions:
    """The concrete quantizers for a setting of the probe's switches (1 planned, 2 promoted)."""
    decisions = Decisions(constant_uses=dict(state.placement.constant_uses))
    for group, setting in zip(state.quantized_groups(), activation_state):
        params = group.params if setting == 1 else group.alternative
        if setting == 0 or params is None:
            continue
        for member in group.members:
            decisions.activations[member] = params
    chosen: list[QuantizedWeight] = []
    for entry, setting in zip(state.weights, weight_state):
        chosen.append(entry.alternative if setting == 2 and entry.alternative is not None else entry.main)
    adjusted = []
    folded = {fold.source: fold.output for fold in state.placement.folds.values() if fold.source}
    for bias in state.biases:
        weight = chosen[bias.weight]
        values = bias.corrected if bias.corrected is not None else bias.original
        if values is None or weight.spec.block_size is not None:
            continue
        params = decisions.activations.get(bias.spec.activation)
        if params is None:
            continue
        node = bias.use[0]  # the op's key: its first output's name
        params = read_params(params, decisions.activations.get(node) or decisions.activations.get(folded.get(node, "")))
        quantized_bias = quantize_bias(values, params.scale, weight.scale, bias.spec)
        if quantized_bias.new_weight_scale is not None:
            entry = state.weights[bias.weight]
            weight = requantize(entry.values, weight.spec, quantized_bias.new_weight_scale, np.asarray(weight.zero_point).astype(np.int64))
            chosen[bias.weight] = weight
            adjusted.append({"node": bias.use[0], "weight": entry.spec.tensor, "channels": quantized_bias.raised})
        axis = None
        if np.ndim(quantized_bias.scale) > 0:
            axis = 0 if np.ndim(values) == 1 else np.ndim(values) - 1
        decisions.biases[bias.use] = BiasDecision(bias.spec.tensor or None, quantized_bias.codes, quantized_bias.scale, axis, bias.original)
    for entry, weight in zip(state.weights, chosen):
        for use in entry.uses:
            decisions.weights[use] = weight
    for fold in state.placement.folds.values():
        params = decisions.activations.get(fold.output)
        if fold_is_exact(fold, params):
            decisions.folds.append(fold)
        elif params is not None:
            decisions.activations.setdefault(fold.source, params)
    state.adjusted = adjusted
    return decisions
