"""The quantize pass's sensitivity step: which tensors cause the error, and promotion to a target.

:func:`find_offenders` builds the units (one per quantized tie group and per weight), screens
them when there are more than ``limit`` (:func:`.sensitivity.screen`), measures each measured
unit's contribution on a probe model where it alone is quantized, and with an accuracy target
promotes offenders on a second, fully quantized probe (:func:`.sensitivity.promote_until`).
The probes come from :func:`.emit.write_probe`; the algorithm is :mod:`.sensitivity`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mapc.ir import Model, Runner
from mapc.passes.base import Note
from mapc.passes.quantize.calibrate import Collection
from mapc.passes.quantize.data import CalibrationData
from mapc.passes.quantize.emit import Decisions, ProbeChoice, ProbeSpec, write_probe
from mapc.passes.quantize.params import Group
from mapc.passes.quantize.qtypes import fake_quantize
from mapc.passes.quantize.report import offenders_section, promotion_section, rounded_db
from mapc.passes.quantize.sensitivity import Probe, Unit, contributions, promote_until, screen
from mapc.passes.quantize.state import RunState, planned_settings


@dataclass(frozen=True)
class SensitivityConfig:
    """The options of the sensitivity step (see the pass's options of the same names)."""

    samples: int
    limit: int
    top_offenders: int
    accuracy_target: float | None
    memory_budget_mb: float


def find_offenders(
    model: Model,
    reference: Model,
    state: RunState,
    decisions: Decisions,
    data: CalibrationData,
    holdout: list[int],
    collection: Collection,
    config: SensitivityConfig,
    progress: Callable | None,
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray] | None]:
    """Per-tensor contributions and, with an accuracy target, promotion (see .sensitivity).
    Returns the report sections (``offenders``, ``sensitivity``, ``accuracy_target``) and the
    switch setting with the promoted units (None without a target)."""
    quantized = state.quantized_groups()
    promote = config.accuracy_target is not None
    if not (config.samples > 0 or promote) or not (quantized or state.weights):
        return {}, None
    samples = [data.sample(i) for i in holdout[: max(config.samples, 1)]]
    float_runner = Runner(reference, optimized=True)
    references = [float_runner.run(sample) for sample in samples]
    units = [Unit("activation", i, _label(g), g.alternative is not None) for i, g in enumerate(quantized)]
    units += [Unit("weight", j, entry.spec.tensor, entry.alternative is not None) for j, entry in enumerate(state.weights)]
    measured = units
    if len(units) > config.limit:
        _screen(model, state, quantized, units, samples, collection, config.memory_budget_mb)
        ranked = sorted(units, key=lambda u: (-(u.local_noise or 0.0), u.kind, u.index))[: config.limit]
        chosen = {id(u) for u in ranked}
        measured = [u for u in units if id(u) in chosen]
    measured_groups = {u.index for u in measured if u.kind == "activation"}
    measured_weights = {u.index for u in measured if u.kind == "weight"}
    probe = Probe(_probe_model(model, state, quantized, decisions, measured_groups, measured_weights, fixed=False), samples, references, (len(measured_groups), len(measured_weights)))
    contributions(probe, measured, progress)
    runs = probe.runs
    result: dict[str, Any] = {
        "offenders": offenders_section(measured, config.top_offenders),
        "sensitivity": {"samples": len(samples), "units": len(units), "measured": len(measured), "screened_out": len(units) - len(measured)},
    }
    settings = None
    if promote:
        candidates = [u for u in measured if u.promotable]
        promotable_groups = {u.index for u in candidates if u.kind == "activation"}
        promotable_weights = {u.index for u in candidates if u.kind == "weight"}
        full = Probe(_probe_model(model, state, quantized, decisions, promotable_groups, promotable_weights, fixed=True), samples, references, (len(promotable_groups), len(promotable_weights)))
        promotion = promote_until(full, float(config.accuracy_target), candidates, progress)
        runs += full.runs
        activation_state, weight_state = planned_settings(state)
        for unit in promotion.promoted:
            (activation_state if unit.kind == "activation" else weight_state)[unit.index] = 2
        settings = (activation_state, weight_state)
        result["accuracy_target"] = promotion_section(promotion, [_promoted_type(u, quantized, state) for u in promotion.promoted])
        if not promotion.met:
            state.notes.append(Note(
                "quantize.accuracy-target-missed",
                f"SQNR target {config.accuracy_target} dB not reached (worst output {rounded_db(promotion.after_db)} dB after promoting {len(promotion.promoted)} tensor(s))",
                fix="exclude the top offenders (exclude_nodes), raise sensitivity_limit, or use a 16-bit scheme",
                severity="warning",
            ))
    result["sensitivity"]["probe_runs"] = runs
    return result, settings


def _screen(model: Model, state: RunState, quantized: list[Group], units: list[Unit], samples: list[dict[str, np.ndarray]], collection: Collection, memory_budget_mb: float) -> None:
    """Local quantization noise of every unit, to pick the ones worth measuring exactly."""
    constants = set(state.placement.constant_uses)
    members = {i: [m for m in g.members if m not in constants] for i, g in enumerate(quantized)}

    def activation_noise(index: int, tensors: dict[str, np.ndarray]) -> tuple[float, float]:
        params = quantized[index].params
        assert params is not None
        noise = signal = 0.0
        for values in tensors.values():
            values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
            error = fake_quantize(values, params.scale, params.zero_point, params.qtype) - values
            noise += float(np.square(error, dtype=np.float64).sum())
            signal += float(np.square(values, dtype=np.float64).sum())
        return noise, signal

    def weight_noise(index: int) -> float:
        entry = state.weights[index]
        error = entry.main.dequantized() - entry.values
        power = float(np.square(entry.values, dtype=np.float64).sum())
        return float(np.square(error, dtype=np.float64).sum()) / power if power > 0 else 0.0

    screen(model, units, members, activation_noise, weight_noise, samples, memory_budget_mb=memory_budget_mb, sizes=collection.sizes)


def _probe_model(model: Model, state: RunState, quantized: list[Group], decisions: Decisions, switchable_groups: set[int], switchable_weights: set[int], *, fixed: bool) -> Model:
    """A copy of the float model with the probe's quantizers: the switchable units, plus
    (``fixed``) every other unit as in the final model; without ``fixed`` the rest is float."""
    spec = ProbeSpec(constant_uses=dict(state.placement.constant_uses))
    for index, group in enumerate(quantized):
        switchable = index in switchable_groups
        if switchable or fixed:
            spec.groups.append((group.members, ProbeChoice(group.params, group.alternative if fixed else None), switchable))
    spec.groups.sort(key=lambda g: not g[2])  # switchable first, in order
    weight_position = {}
    for index, entry in enumerate(state.weights):
        switchable = index in switchable_weights
        if switchable or fixed:
            weight_position[index] = len(spec.weights)
            spec.weights.append((entry.uses, ProbeChoice(decisions.weights[entry.uses[0]], entry.alternative if fixed else None), switchable))
    order = sorted(range(len(spec.weights)), key=lambda i: not spec.weights[i][2])
    remap = {old: new for new, old in enumerate(order)}
    spec.weights = [spec.weights[i] for i in order]
    weight_of_bias = {b.use: b.weight for b in state.biases}
    for use, bias in decisions.biases.items():
        owner = weight_of_bias[use]
        if owner in weight_position:
            spec.biases[use] = (remap[weight_position[owner]], bias)
    probe = model.copy()
    write_probe(probe, spec)
    return probe


def _label(group: Group) -> str:
    """A group's name in the report: its first member, with how many are tied to it."""
    first = group.members[0]
    return first if len(group.members) == 1 else f"{first} (+{len(group.members) - 1} tied)"


def _promoted_type(unit: Unit, quantized: list[Group], state: RunState) -> str:
    """The type a promoted unit went to ("-" if it has no alternative)."""
    if unit.kind == "activation":
        alternative = quantized[unit.index].alternative
        return alternative.qtype.name if alternative else "-"
    alternative = state.weights[unit.index].alternative
    return alternative.spec.qtype.name if alternative else "-"
