"""The attention-mask rules as rules of the one engine: their order, and their per-rule reports."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import infer_shapes, load, remove_dead_nodes
from mapc.ir.rewrite import FunctionRule, apply_rules
from mapc.passes.attention_mask.context import MaskContext
from mapc.passes.attention_mask.detection import find_attentions
from mapc.passes.attention_mask.families import classify
from mapc.passes.attention_mask.stages import CANONICAL, FINITE, STAGES
from tests.conftest import make_model

B, H, S, D = 1, 2, 4, 4


def test_every_rule_runs_once_in_one_written_order_and_says_what_it_does():
    rules = [item for stage in STAGES.values() for item in stage]
    assert [item.name for item in rules] == ["additive-mask", "finite-mask", "finite-fill", "mask-as-input", "nan-guard"]
    assert all(isinstance(item, FunctionRule) and item.describe() for item in rules)


def _guarded_attention_with_a_shared_fill():
    """Softmax(q k^T + raw * one) with a NaN guard, where the -inf mask is also a graph output."""
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Mul", ["raw", "one"], ["mask"], name="scale_mask"),
        helper.make_node("Add", ["scores", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("IsNaN", ["p"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "p"], ["safe"], name="guard"),
        helper.make_node("MatMul", ["safe", "v"], ["out"]),
        helper.make_node("Identity", ["mask"], ["raw_out"], name="leak"),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, H, S, D]) for n in ("q", "k", "v")]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [B, H, S, D]), helper.make_tensor_value_info("raw_out", TensorProto.FLOAT, [1, 1, S, S])]
    raw = np.triu(np.full((S, S), -np.inf, np.float32), 1)[None, None]
    inits = [numpy_helper.from_array(raw, "raw"), numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    return load(make_model(nodes, inputs, outputs, inits))


def test_each_rule_reports_its_own_near_misses_on_the_node_concerned():
    model = _guarded_attention_with_a_shared_fill()
    infer_shapes(model)
    sites = find_attentions(model.graph)
    masks = MaskContext(model, -1e4, 1 << 20, mask_as_input=False, sites=sites, families={id(s): classify(model.graph, s) for s in sites})
    reports = apply_rules(CANONICAL, masks, last_first=False)
    remove_dead_nodes(model.graph)
    apply_rules(FINITE, masks, last_first=False, reports=reports)
    assert reports["additive-mask"].fired == 1 and not reports["additive-mask"].near_misses
    fill_kept = reports["finite-fill"].near_misses
    assert [(m.code, m.node, m.severity) for m in fill_kept] == [("fill-kept", "scale_mask", "warning")]
    assert reports["finite-fill"].fired == 0 and masks.counters["fills_replaced"] == 0
    assert [(m.code, m.node, m.severity) for m in reports["nan-guard"].near_misses] == [("guard-kept", "guard", "info")]
    assert masks.outcomes[id(sites[0])].rewrites == []
