"""The quantize pass's report: its counters and the sections of its ``details``.

Every number a run reports is assembled here from what the steps found and decided (the
:class:`~.state.RunState`, the final :class:`~.emit.Decisions`, the calibration, the accuracy
and sensitivity measurements): the scheme and types, calibration (method, samples, fallbacks),
opsets, placement counts, exclusions, accuracy per output, the top offenders and the accuracy
target. Long lists keep their first :data:`REPORT_LIMIT` entries; decibels are rounded by
:func:`rounded_db`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mapc.passes.quantize.accuracy import OutputMetrics
from mapc.passes.quantize.calibrate import Collection
from mapc.passes.quantize.data import CalibrationData
from mapc.passes.quantize.emit import Decisions
from mapc.passes.quantize.placement import WeightSpec
from mapc.passes.quantize.qtypes import QuantType
from mapc.passes.quantize.schemes import Scheme
from mapc.passes.quantize.sensitivity import Promotion, Unit
from mapc.passes.quantize.state import RunState

#: How many entries of long lists (fallbacks, exclusions) the report keeps.
REPORT_LIMIT = 50


def rounded_db(value: float | None) -> float | None:
    """``value`` rounded to 3 decimals; -inf as -999.0, +inf and NaN as None."""
    if value is None:
        return None
    if not math.isfinite(value):
        return -999.0 if value < 0 else None
    return round(value, 3)


def weight_label(spec: WeightSpec) -> str:
    """How a weight is quantized, e.g. ``int8 per channel`` or ``int4 blocks of 32``."""
    if spec.block_size is not None:
        return f"{spec.qtype.name} blocks of {spec.block_size}"
    return f"{spec.qtype.name} {'per tensor' if spec.axis is None else 'per channel'}"


def accuracy_section(metrics: OutputMetrics) -> dict[str, Any]:
    """``details.accuracy``: held-out samples, the worst output's SQNR and every output's metrics."""
    return {"samples": metrics.samples, "worst_sqnr_db": rounded_db(metrics.worst_sqnr()), "outputs": metrics.results()}


def offenders_section(measured: Sequence[Unit], top: int) -> list[dict[str, Any]]:
    """``details.offenders``: the ``top`` measured units by contribution, with their share of the total."""
    offenders = sorted(measured, key=lambda u: (-(u.contribution or 0.0), u.kind, u.index))
    total = sum(u.contribution for u in measured if u.contribution and math.isfinite(u.contribution)) or 1.0
    return [
        {"tensor": u.label, "kind": u.kind, "sqnr_db_alone": rounded_db(u.sqnr_db), "share": round(min((u.contribution or 0.0) / total, 1.0), 4)}
        for u in offenders[:top]
    ]


def promotion_section(promotion: Promotion, promoted_to: Sequence[str]) -> dict[str, Any]:
    """``details.accuracy_target`` (without ``met``): the target, SQNR before and after, and each
    promoted tensor with the type ``promoted_to`` names for it."""
    return {
        "target_db": promotion.target_db,
        "before_db": rounded_db(promotion.before_db),
        "after_db": rounded_db(promotion.after_db),
        "evaluations": promotion.evaluations,
        "promoted": [{"tensor": u.label, "kind": u.kind, "to": to} for u, to in zip(promotion.promoted, promoted_to)],
    }


def details(
    state: RunState,
    final: Decisions,
    *,
    scheme: Scheme,
    activation_type: QuantType | None,
    method: str,
    data: CalibrationData,
    calibration: dict[str, Any],
    sample_counts: tuple[int, int],
    opsets: tuple[int, int],
    accuracy: dict[str, Any],
    sensitivity: dict[str, Any],
) -> dict[str, Any]:
    """The pass's ``details`` (all but ``seconds``). ``sample_counts`` is (calibration, held
    out), ``opsets`` (before, after)."""
    placement = state.placement
    fallbacks = calibration["fallbacks"]
    collection: Collection = calibration["collection"]
    excluded = [{"tensors": g.members, "reason": g.excluded} for g in state.groups if g.excluded]
    result: dict[str, Any] = {
        "scheme": scheme.name,
        "activation_type": activation_type.name if activation_type else "float",
        "weight_types": sorted({weight_label(entry.spec) for entry in state.weights}),
        "calibration": {
            "data": data.description,
            "random": data.is_random,
            "method": method,
            "samples": sample_counts[0],
            "holdout_samples": sample_counts[1],
            "fetch_chunks": collection.chunks,
            "seconds": round(calibration["seconds"], 3),
            "fallbacks": fallbacks[:REPORT_LIMIT],
            "fallbacks_total": len(fallbacks),
        },
        "opset": {"before": opsets[0], "after": opsets[1]},
        "placement": {
            "quantized_nodes": len(placement.nodes),
            "activation_tensors": len(placement.activations),
            "constants": len(placement.constants),
            "weights": len(state.weights),
            "biases": len(final.biases),
            "tied_groups": sum(1 for g in state.groups if len(g.members) > 1),
            "fixed_ranges": sum(1 for g in state.groups if g.fixed_op),
            "folded_activations": len(final.folds),
        },
        "excluded": excluded[:REPORT_LIMIT],
        "accuracy": accuracy,
    }
    if state.adjusted:
        result["bias_adjusted"] = state.adjusted[:REPORT_LIMIT]
    for key in ("offenders", "sensitivity", "accuracy_target"):
        if key in sensitivity:
            result[key] = sensitivity[key]
    if "accuracy_target" in result:
        worst = accuracy["worst_sqnr_db"]
        result["accuracy_target"]["met"] = worst is None or worst >= result["accuracy_target"]["target_db"]
    return result


def counters(state: RunState, final: Decisions, *, activations_folded: int, calibration_fallbacks: int, details: dict[str, Any]) -> dict[str, int]:
    """The pass's counters, from the final decisions and the assembled ``details``."""
    return {
        "quantized_nodes": len(state.placement.nodes),
        "activations_quantized": sum(1 for name in final.activations if name not in final.constant_uses),
        "weights_quantized": len(final.weights),
        "biases_quantized": len(final.biases),
        "activations_folded": activations_folded,
        "tensors_promoted": len(details.get("accuracy_target", {}).get("promoted", [])),
        "tensors_excluded": sum(len(g.members) for g in state.groups if g.excluded),
        "calibration_fallbacks": calibration_fallbacks,
    }
