"""The quantize report: rounding, labels, offenders, the details sections and the counters."""

from __future__ import annotations

import math

from mapc.passes.quantize.calibrate import Collection
from mapc.passes.quantize.data import CalibrationData
from mapc.passes.quantize.emit import Decisions
from mapc.passes.quantize.params import ActivationParams, Group
from mapc.passes.quantize.placement import Placement, WeightSpec
from mapc.passes.quantize.qtypes import QUANT_TYPES
from mapc.passes.quantize.report import REPORT_LIMIT, counters, details, offenders_section, promotion_section, rounded_db, weight_label
from mapc.passes.quantize.schemes import get_scheme
from mapc.passes.quantize.sensitivity import Promotion, Unit
from mapc.passes.quantize.state import RunState

UINT8 = QUANT_TYPES["uint8"]


def test_rounded_db_keeps_three_decimals_and_maps_infinities():
    assert rounded_db(None) is None
    assert rounded_db(41.23456) == 41.235
    assert rounded_db(-math.inf) == -999.0
    assert rounded_db(math.inf) is None
    assert rounded_db(math.nan) is None


def test_weight_label_names_the_granularity():
    assert weight_label(WeightSpec("w", QUANT_TYPES["int8"], 0)) == "int8 per channel"
    assert weight_label(WeightSpec("w", QUANT_TYPES["int8"], None)) == "int8 per tensor"
    assert weight_label(WeightSpec("w", QUANT_TYPES["int4"], 0, 32)) == "int4 blocks of 32"


def test_offenders_are_ranked_by_contribution_with_their_share():
    units = [Unit("activation", 0, "a", contribution=1e-4), Unit("weight", 0, "w", contribution=3e-4), Unit("activation", 1, "b")]
    section = offenders_section(units, top=2)
    assert [o["tensor"] for o in section] == ["w", "a"]
    assert [o["share"] for o in section] == [0.75, 0.25]
    assert section[0]["sqnr_db_alone"] == rounded_db(-10 * math.log10(3e-4))


def test_promotion_section_pairs_each_promoted_unit_with_its_type():
    promoted = [Unit("activation", 0, "a"), Unit("weight", 1, "w")]
    section = promotion_section(Promotion(40.0, True, 31.23456, 40.5, promoted, 3), ["uint16", "int8"])
    assert section == {
        "target_db": 40.0, "before_db": 31.235, "after_db": 40.5, "evaluations": 3,
        "promoted": [{"tensor": "a", "kind": "activation", "to": "uint16"}, {"tensor": "w", "kind": "weight", "to": "int8"}],
    }


def _run(excluded: int) -> tuple[RunState, Decisions, dict]:
    placement = Placement(nodes=["conv"], activations=["x", "y"], constants=["c"])
    params = ActivationParams(UINT8, 0.1, 0)
    groups = [Group(0, ["x", "y"], params=params, fixed_op="Softmax")]
    groups += [Group(i + 1, [f"f{i}"], excluded="mask") for i in range(excluded)]
    state = RunState(placement, groups=groups)
    final = Decisions(activations={"x": params, "y": params, "c": params}, constant_uses={"c": [("conv", 2)]})
    calibration = {"collection": Collection(chunks=2), "fallbacks": [{"tensor": "t", "reason": "constant"}], "seconds": 1.23456}
    return state, final, calibration


def test_details_sections_and_the_accuracy_target_verdict():
    state, final, calibration = _run(excluded=REPORT_LIMIT + 5)
    data = CalibrationData("3 files", 3, lambda i: {})
    sensitivity = {"offenders": [], "sensitivity": {"samples": 1}, "accuracy_target": {"target_db": 30.0}}
    result = details(
        state, final, scheme=get_scheme("a8w8"), activation_type=UINT8, method="minmax", data=data, calibration=calibration,
        sample_counts=(2, 1), opsets=(13, 21), accuracy={"worst_sqnr_db": 35.0}, sensitivity=sensitivity,
    )
    assert result["calibration"] == {
        "data": "3 files", "random": False, "method": "minmax", "samples": 2, "holdout_samples": 1,
        "fetch_chunks": 2, "seconds": 1.235, "fallbacks": calibration["fallbacks"], "fallbacks_total": 1,
    }
    assert result["opset"] == {"before": 13, "after": 21}
    assert result["placement"]["tied_groups"] == 1 and result["placement"]["fixed_ranges"] == 1
    assert len(result["excluded"]) == REPORT_LIMIT
    assert "bias_adjusted" not in result
    assert result["accuracy_target"]["met"] is True
    sensitivity["accuracy_target"] = {"target_db": 40.0}
    missed = details(
        state, final, scheme=get_scheme("a8w8"), activation_type=None, method="minmax", data=data, calibration=calibration,
        sample_counts=(2, 1), opsets=(13, 13), accuracy={"worst_sqnr_db": 35.0}, sensitivity=sensitivity,
    )
    assert missed["accuracy_target"]["met"] is False and missed["activation_type"] == "float"


def test_counters_count_activations_without_quantized_constants():
    state, final, _ = _run(excluded=2)
    assert counters(state, final, activations_folded=1, calibration_fallbacks=4, details={"accuracy_target": {"promoted": [{}]}}) == {
        "quantized_nodes": 1, "activations_quantized": 2, "weights_quantized": 0, "biases_quantized": 0,
        "activations_folded": 1, "tensors_promoted": 1, "tensors_excluded": 2, "calibration_fallbacks": 4,
    }
    assert counters(state, final, activations_folded=0, calibration_fallbacks=0, details={})["tensors_promoted"] == 0
