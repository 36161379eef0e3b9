"""Activation parameters per tie group: from calibrated ranges to scale and zero point.

Each group of tensors that share parameters (see :mod:`.placement`) gets one quantizer:

* the **union** of its members' ranges (each from the calibration method; constants exactly);
* a **fixed** range when a member is the output of a fixed-range op (Softmax: exactly [0, 1],
  1/255 for uint8) and no member needs more; outputs of other bounded ops (Sigmoid, Tanh) have
  their calibrated range capped to the op's interval;
* **attention-mask paths** — a member whose range is dominated by fills at or below -1e4 — are
  left in float when the fill is huge or infinite (``finfo.min``, -1e9, -inf: no integer grid
  can hold both the fill and the scores), or quantized at 16 bits when the fill is moderate
  (down to -1e5); ``mask_policy`` overrides this;
* tensors holding infinities or NaN that are not mask paths stay in float;
* a group with an 8-bit type also gets a 16-bit **alternative** the accuracy target can promote
  it to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mapc.passes.quantize.calibrate import TensorStats
from mapc.passes.quantize.placement import NATURAL_RANGES, Fold, Placement
from mapc.passes.quantize.qtypes import MIN_REAL_RANGE, QuantType, activation_params, quantize
from mapc.passes.quantize.ranges import RangeChoice

#: Moderate mask fills (down to this) can be represented with 16 bits (attention-mask's finite-fill writes them).
MODERATE_FILL = -1e5
MASK_POLICIES = ("auto", "exclude", "16bit", "quantize")


@dataclass(frozen=True)
class ActivationParams:
    qtype: QuantType
    scale: float
    zero_point: int

    def as_dict(self) -> dict:
        return {"type": self.qtype.name, "scale": self.scale, "zero_point": self.zero_point}


@dataclass
class Group:
    """One quantizer shared by ``members``; ``params`` None means the group stays in float."""

    index: int
    members: list[str]
    low: float = 0.0
    high: float = 0.0
    params: ActivationParams | None = None
    alternative: ActivationParams | None = None
    origin: str = "calibrated"
    excluded: str | None = None
    mask: bool = False
    fixed_op: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParamsConfig:
    activation_type: QuantType
    symmetric: bool = False
    min_range: float = MIN_REAL_RANGE
    mask_policy: str = "auto"
    #: The 16-bit type of mask paths and promotions (None: the activation type's, same signedness).
    wide_type: QuantType | None = None

    def wider(self, qtype: QuantType) -> QuantType:
        return self.wide_type if self.wide_type is not None else qtype.wider()


def assign_groups(
    placement: Placement,
    ranges: dict[str, RangeChoice],
    stats: dict[str, TensorStats],
    config: ParamsConfig,
) -> list[Group]:
    """Parameters for every group of ``placement`` (see module doc). ``stats`` covers calibrated
    tensors and constants alike; ``ranges`` the calibrated ones (constants use their values'
    exact range)."""
    groups = []
    for index, members in enumerate(placement.groups):
        group = Group(index, list(members))
        _assign(group, placement, ranges, stats, config)
        groups.append(group)
    return groups


def _assign(
    group: Group,
    placement: Placement,
    ranges: dict[str, RangeChoice],
    stats: dict[str, TensorStats],
    config: ParamsConfig,
) -> None:
    qtype = config.activation_type
    lows, highs = [], []
    mask_members = [m for m in group.members if m in stats and stats[m].mask_like]
    for member in group.members:
        if member in stats and stats[member].observed:
            member_stats = stats[member]
            if member_stats.nonfinite and not member_stats.mask_like:
                group.excluded = f"{member} holds infinities or NaN"
                return
            choice = ranges.get(member)
            low, high = (choice.low, choice.high) if choice is not None and not member_stats.mask_like else (member_stats.low, member_stats.high)
            if member in placement.bounded:
                bound_low, bound_high = NATURAL_RANGES[placement.bounded[member]]
                low, high = min(max(low, bound_low), bound_high), max(min(high, bound_high), bound_low)
        else:
            continue
        lows.append(low)
        highs.append(high)
    if not lows:
        group.excluded = "no values were observed during calibration"
        return
    group.low, group.high = min(lows), max(highs)
    for member in group.members:
        clamp_low, clamp_high = placement.clamps.get(member, (None, None))
        if clamp_low is not None:
            group.low = min(max(group.low, clamp_low), group.high)
        if clamp_high is not None:
            group.high = max(min(group.high, clamp_high), group.low)
    if mask_members and config.mask_policy != "quantize":
        group.mask = True
        fill = min(stats[m].low for m in mask_members)
        moderate = math.isfinite(fill) and fill >= MODERATE_FILL and not any(stats[m].negative_infinite for m in mask_members)
        if config.mask_policy == "exclude" or (config.mask_policy == "auto" and not moderate):
            group.excluded = f"attention-mask path (fill {fill:.3g}): left in float"
            return
        if not math.isfinite(group.low):
            group.excluded = "attention-mask path with infinite fill: left in float"
            return
        qtype = config.wider(qtype)
        group.origin = f"attention-mask path (fill {fill:.3g}): {qtype.bits}-bit"
    fixed = [placement.fixed[m] for m in group.members if m in placement.fixed]
    if fixed and not group.mask:
        intervals = {NATURAL_RANGES[op] for op in fixed}
        fixed_low, fixed_high = min(i[0] for i in intervals), max(i[1] for i in intervals)
        tolerance = 1e-6 * (fixed_high - fixed_low)
        if group.low >= fixed_low - tolerance and group.high <= fixed_high + tolerance:
            group.low, group.high = fixed_low, fixed_high
            group.fixed_op = fixed[0]
            group.origin = f"fixed ({fixed[0]} output)"
        else:
            group.notes.append(f"tied tensors span [{group.low:.4g}, {group.high:.4g}], beyond the fixed range of {fixed[0]}")
    group.params = _params(group.low, group.high, qtype, config)
    if qtype.bits == 8:
        group.alternative = _params(group.low, group.high, config.wider(qtype), config)


def _params(low: float, high: float, qtype: QuantType, config: ParamsConfig) -> ActivationParams:
    scale, zero_point = activation_params(low, high, qtype, symmetric=config.symmetric, min_range=config.min_range)
    return ActivationParams(qtype, scale, zero_point)


def fold_is_exact(fold: Fold, params: ActivationParams | None) -> bool:
    """True if quantizing with ``params`` already clamps exactly where the Relu/Clip does."""
    if params is None:
        return False
    qtype = params.qtype
    if fold.low is not None and int(quantize(np.float32(fold.low), params.scale, params.zero_point, qtype)) != qtype.qmin:
        return False
    if fold.high is not None and int(quantize(np.float32(fold.high), params.scale, params.zero_point, qtype)) != qtype.qmax:
        return False
    return True


def read_params(input_params: ActivationParams, output_params: ActivationParams | None) -> ActivationParams:
    """The parameters a weighted op reads its input at: the input's own, or, when its output is
    quantized at a wider type, the same grid in that type (scale ``s / f``, zero point ``z * f``),
    since :mod:`mapc.passes.uniform_unit_types` converts the input exactly to the unit's type.
    Its int32 bias must use that scale (``s_in · s_w``)."""
    if output_params is None or output_params.qtype.bits <= input_params.qtype.bits or input_params.qtype.bits != 8:
        return input_params
    factor = input_params.qtype.widening_factor
    scale = float(np.float32(np.float64(np.float32(input_params.scale)) / factor))
    return ActivationParams(input_params.qtype.wider(), scale, input_params.zero_point * factor)
