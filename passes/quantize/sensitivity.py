"""Where the error comes from: per-tensor contributions, and promotion to an accuracy target.

A *unit* is one quantizer that can be switched on alone: an activation tie group (its members
share one quantizer) or a weight (with its biases).

1. **Screening** (only when there are more units than ``limit``): each unit's *local* noise,
   ``Σ (q(x) - x)² / Σ x²`` at the tensor itself, from one float run with the tensors exposed
   (weights need no run). The ``limit`` noisiest units go on to step 2.
2. **Contribution**: a probe model (:func:`.emit.write_probe`) where those units can be switched
   on one at a time, everything else float; each unit's contribution is the noise-to-signal
   ratio of the worst output when it alone is quantized — what the report ranks as offenders.
3. **Promotion** (``accuracy_target``): a second probe, fully quantized, where the promotable
   measured units can be switched to their wider alternative (8 → 16-bit activations, 4 → 8-bit
   weights). The worst offenders are promoted, the fewest at a time whose summed contributions
   would close the gap (noise powers of independent quantizers add), and the real result is
   measured, until the worst output's SQNR reaches the target or nothing is left to promote.

Every probe runs in one onnxruntime session, against float outputs computed once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mapc.ir import Model, Runner
from mapc.passes.quantize.calibrate import chunk_by_size, estimated_sizes
from mapc.passes.quantize.emit import ACTIVATION_SWITCH, WEIGHT_SWITCH

Progress = Callable[[str, int, int], None]


@dataclass
class Unit:
    """One quantizer the analysis can switch: ``kind`` activation (group) or weight."""

    kind: str
    index: int
    label: str
    promotable: bool = False
    local_noise: float | None = None
    contribution: float | None = None

    @property
    def sqnr_db(self) -> float | None:
        """Worst-output SQNR when this unit alone is quantized (None: no error at all)."""
        if self.contribution is None or self.contribution <= 0:
            return None
        return -10.0 * math.log10(self.contribution) if math.isfinite(self.contribution) else -math.inf


class Probe:
    """A probe model in one session, measured against float ``references`` of ``samples``."""

    def __init__(self, model: Model, samples: Sequence[dict[str, np.ndarray]], references: Sequence[dict[str, np.ndarray]], switches: tuple[int, int]) -> None:
        self.runner = Runner(model, optimized=True)
        self.samples = list(samples)
        self.references = list(references)
        self.lengths = (max(switches[0], 1), max(switches[1], 1))
        self.outputs = [n for n in self.references[0] if all(ref[n].dtype.kind == "f" for ref in self.references)] if self.references else []
        self.signal = {n: sum(_power(ref[n]) for ref in self.references) for n in self.outputs}
        self.runs = 0

    def relative_noise(self, activations: np.ndarray, weights: np.ndarray) -> float:
        """The worst float output's Σ (y - y_float)² / Σ y_float² for this switch setting."""
        noise = dict.fromkeys(self.outputs, 0.0)
        feeds = {ACTIVATION_SWITCH: _padded(activations, self.lengths[0]), WEIGHT_SWITCH: _padded(weights, self.lengths[1])}
        for sample, reference in zip(self.samples, self.references):
            outputs = self.runner.run({**sample, **feeds})
            self.runs += 1
            for name in self.outputs:
                expected, actual = reference[name], outputs[name]
                finite = np.isfinite(expected)
                if not np.isfinite(actual[finite]).all():
                    noise[name] = math.inf
                    continue
                difference = actual[finite].astype(np.float64) - expected[finite]
                noise[name] += float(np.dot(difference, difference))
        ratios = [noise[n] / self.signal[n] if self.signal[n] > 0 else (math.inf if noise[n] > 0 else 0.0) for n in self.outputs]
        return max(ratios, default=0.0)


def _power(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)].astype(np.float64)
    return float(np.dot(finite, finite))


def _padded(state: np.ndarray, length: int) -> np.ndarray:
    padded = np.zeros(length, dtype=np.int64)
    padded[: len(state)] = state
    return padded


def screen(
    model: Model,
    units: Sequence[Unit],
    members: Mapping[int, Sequence[str]],
    local_activation_noise: Callable[[int, Mapping[str, np.ndarray]], tuple[float, float]],
    local_weight_noise: Callable[[int], float],
    samples: Sequence[dict[str, np.ndarray]],
    *,
    memory_budget_mb: float,
    sizes: Mapping[str, int] | None = None,
) -> None:
    """Fill ``unit.local_noise`` for every unit (see module doc, step 1).

    ``members`` maps an activation unit's index to its tensors; ``local_activation_noise(index,
    values)`` returns (noise, signal) of that unit on the given tensor values.
    """
    for unit in units:
        if unit.kind == "weight":
            unit.local_noise = local_weight_noise(unit.index)
    activation_units = [u for u in units if u.kind == "activation"]
    names = list(dict.fromkeys(name for u in activation_units for name in members[u.index]))
    if not names:
        return
    runner = Runner(model, names, optimized=True)
    budget = max(int(memory_budget_mb * (1 << 20)), 1)
    known = {**estimated_sizes(model, names), **(sizes or {})}
    chunks = chunk_by_size(names, known, budget)
    totals = {u.index: [0.0, 0.0] for u in activation_units}
    owner = {name: u.index for u in activation_units for name in members[u.index]}
    for sample in samples:
        for chunk in chunks:
            values = runner.run(sample, chunk)
            by_unit: dict[int, dict[str, np.ndarray]] = {}
            for name in chunk:
                by_unit.setdefault(owner[name], {})[name] = values[name]
            for index, tensors in by_unit.items():
                noise, signal = local_activation_noise(index, tensors)
                totals[index][0] += noise
                totals[index][1] += signal
    for unit in activation_units:
        noise, signal = totals[unit.index]
        unit.local_noise = noise / signal if signal > 0 else (math.inf if noise > 0 else 0.0)


def contributions(probe: Probe, units: Sequence[Unit], progress: Progress | None = None) -> None:
    """Fill ``unit.contribution`` for ``units``, the probe's switchable units in switch order
    (activations first, then weights); see module doc, step 2."""
    activation_units = [u for u in units if u.kind == "activation"]
    weight_units = [u for u in units if u.kind == "weight"]
    total = len(units)
    done = 0
    for position, unit in enumerate(activation_units):
        state = np.zeros(len(activation_units), dtype=np.int64)
        state[position] = 1
        unit.contribution = probe.relative_noise(state, np.zeros(0, dtype=np.int64))
        done += 1
        if progress is not None:
            progress("accuracy: error per tensor", done, total)
    for position, unit in enumerate(weight_units):
        state = np.zeros(len(weight_units), dtype=np.int64)
        state[position] = 1
        unit.contribution = probe.relative_noise(np.zeros(0, dtype=np.int64), state)
        done += 1
        if progress is not None:
            progress("accuracy: error per tensor", done, total)


@dataclass
class Promotion:
    target_db: float
    met: bool
    before_db: float | None
    after_db: float | None
    promoted: list[Unit]
    evaluations: int


def promote_until(probe: Probe, target_db: float, candidates: Sequence[Unit], progress: Progress | None = None) -> Promotion:
    """Promote ``candidates`` (the probe's switchable units in switch order, activations first)
    worst first until the target is met; see module doc, step 3."""
    activation_units = [u for u in candidates if u.kind == "activation"]
    weight_units = [u for u in candidates if u.kind == "weight"]
    position = {id(u): i for i, u in enumerate(activation_units)} | {id(u): i for i, u in enumerate(weight_units)}
    activations = np.ones(len(activation_units), dtype=np.int64)
    weights = np.ones(len(weight_units), dtype=np.int64)
    goal = 10 ** (-target_db / 10)
    current = before = probe.relative_noise(activations, weights)
    evaluations = 1
    queue = sorted(candidates, key=lambda u: -(u.contribution or 0.0))
    promoted: list[Unit] = []
    while current > goal and queue:
        excess = current - goal
        batch, removed = [], 0.0
        for unit in queue:
            batch.append(unit)
            removed += unit.contribution or 0.0
            if removed >= excess:
                break
        queue = queue[len(batch):]
        for unit in batch:
            (activations if unit.kind == "activation" else weights)[position[id(unit)]] = 2
        promoted.extend(batch)
        current = probe.relative_noise(activations, weights)
        evaluations += 1
        if progress is not None:
            progress("accuracy target: promoting", len(promoted), len(promoted) + len(queue))

    def db(relative: float) -> float | None:
        if relative <= 0:
            return None
        return -10 * math.log10(relative) if math.isfinite(relative) else -math.inf

    return Promotion(target_db, current <= goal, db(before), db(current), promoted, evaluations)
