"""``attention-mask`` and ``decompose-attention``: attention masks that survive fp16 and int8/int16.

One module per job: :mod:`.detection` finds attentions and their masks, :mod:`.families` names
them, :mod:`.rules` holds the rewrites (rules of :mod:`mapc.ir.rewrite`, run in the order of
:mod:`.stages`) on :mod:`.context`'s building blocks, :mod:`.hoist` builds mask-as-input's new
input, :mod:`.decompose` is ``decompose-attention``, :mod:`.fills` holds the fill values. See ``docs/passes/attention-mask.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import onnx

from mapc.ir import Model, RewriteContext, Runner, RuleReport, apply_rules, remove_dead_nodes, toposort
from mapc.passes.attention_mask import decompose  # noqa: F401  (registers decompose-attention)
from mapc.passes.attention_mask.context import MaskContext, SiteOutcome
from mapc.passes.attention_mask.detection import AttentionSite, attentions_in_subgraphs, cone, find_attentions, mask_input_roles
from mapc.passes.attention_mask.exactness import LogitRange, margin, measured_ranges, proven_range
from mapc.passes.attention_mask.facts import MASK_INPUTS, MaskInputs
from mapc.passes.attention_mask.families import MaskFamily, classify
from mapc.passes.attention_mask.fills import FillOptions, resolve_mask_value
from mapc.passes.attention_mask.hoist import drop_orphaned_inputs
from mapc.passes.attention_mask.stages import CANONICAL, FINITE
from mapc.passes.attention_mask.verification import fully_masked_positions
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.flags import flag
from mapc.passes.peephole.identities import INDEX_RULES
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES
from mapc.passes.verify import INTERFACE_CHANGES, SAMPLES, UNDEFINED_OUTPUTS, InterfaceChange

__all__ = ["AttentionMask", "mask_input_roles"]


def _fully_masked_on(
    snapshot: Model, model: Model, feeds: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], *, neg: float
) -> dict[str, np.ndarray]:
    """``fully_masked_positions`` evaluated on ``snapshot`` rather than the final ``model``."""
    return fully_masked_positions(snapshot, feeds, outputs, neg=neg)


class _HostInputs:
    """The hoisted mask inputs computed from a sample's feeds by their host models, each host
    model's onnxruntime session opened once, on first use (``--verify-each`` asks after every pass)."""

    def __init__(self, host_models: Mapping[str, onnx.ModelProto]) -> None:
        self.host_models = dict(host_models)
        self.runners: dict[str, Runner] = {}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = dict(feeds)
        for name, host in self.host_models.items():
            runner = self.runners.get(name) or self.runners.setdefault(name, Runner(host))
            result[name] = runner.run(feeds)[name]
        return result


@register_pass
class AttentionMask(Pass):
    """Make every attention mask one finite additive mask, or a host-computed input.

    Matches each attention: a last-axis Softmax over a score spine (the Add/Where chain back to
    the query-key MatMul) or an ONNX Attention op (input 3). Recognises the exporter mask
    families (one-minus-mask, index-grid, causal-buffer, ...; the report names them) and
    Intel's causal chains. With fp32/fp16 masks, every rewrite that changes what a masked
    position holds first checks that the softmax stays exact: the logits' range, proven by
    interval analysis or measured on the user's samples, leaves masked weights at 0; else the
    attention is left alone with a near-miss scores-unbounded / scores-too-wide /
    fill-not-masking. The rules, per attention, in order:
      additive-mask  boolean masks (Where on the scores, Where(c, 0, fill)) become
                     Mul(Sub(1, Cast(c)), NEG); masks summed are clamped with Max(., NEG);
                     float mask graph inputs get Max(., NEG). A native Attention op keeps its
                     bool mask (it needs no fill and gives fully masked rows zeros);
                     decompose-attention and mask_as_input make it additive. Uniform masks
                     (all-True, all-zero) are removed, and attn_mask dropped. With static
                     shapes, identity Slice/Gather/GatherND/ScatterND chains in the mask
                     collapse, and And(constant causal, padding) splits into a constant
                     additive part (up to max_constant_mb, else it stays computed) plus the
                     computed padding part;
      finite-mask,   fills below NEG (-inf, finfo.min, -1e9...) in initializers, Constant and
      finite-fill    ConstantOfShape become NEG, only where every reader lies on a mask path;
      mask-as-input  with mask_as_input, the whole mask becomes a float graph input [B,1,S,T]
                     (additive, values in [NEG, 0]); the report says how to build it on the host;
      nan-guard      the NaN guard Where(IsNaN(p), 0, p) is removed once the mask is finite.
    NEG is mask_value, or the precision's default (fp16/fp32 -1e4, int16 -50, int8 -20).
    Masks it cannot name are reported as notes, never silently skipped. Attentions inside
    If/Loop bodies are reported and left alone.
    """

    name = "attention-mask"
    provides = (MASK_INPUTS,)

    requires = (SHAPES,)

    @dataclass
    class Options(FillOptions):
        #: Replace each mask subgraph with a float graph input computed on the host (mask-as-input).
        mask_as_input: bool = field(default=False, metadata=flag(
            "--mask-as-input", "replace each attention-mask subgraph with a float graph input [B,1,S,T] built on the "
            "host; writes <output stem>.<input>.host.onnx computing it"))
        #: Largest constant mask (MiB) created by folding a constant boolean part (additive-mask).
        max_constant_mb: float = 16.0

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        neg = resolve_mask_value(self.options.precision, self.options.mask_value, self.name)
        graph = model.graph
        notes = [
            Note("attention-mask.in-subgraph", "attention inside a control-flow body is left alone", node=node.name,
                 fix="split If/Loop models into their branches first", severity="warning")
            for node in attentions_in_subgraphs(graph)
        ]
        sites = find_attentions(graph)
        named = {id(site.node): classify(graph, site) for site in sites}
        index_rules = apply_rules(INDEX_RULES, RewriteContext(model, scope=cone([t for site in sites for t in site.mask_tensors()])), sweep=True)
        collapsed = sum(report.fired for report in index_rules.values())
        if collapsed:
            remove_dead_nodes(graph)
            sites = find_attentions(graph)
        families = {id(site): named.get(id(site.node)) or classify(graph, site) for site in sites}
        masks = MaskContext(model, neg, int(self.options.max_constant_mb * (1 << 20)), mask_as_input=self.options.mask_as_input,
                            sites=sites, families=families, ranges=_logit_ranges(model, sites, neg, ctx.facts.get(SAMPLES)),
                            margin=margin(self.options.precision), precision=self.options.precision)
        reports: dict[str, RuleReport] = {}
        ctx.report_progress("attention masks", 0, 2)
        apply_rules(CANONICAL, masks, last_first=False, reports=reports)
        remove_dead_nodes(graph)  # the replaced spine nodes must not count as non-mask readers
        readers_before = {id(t): bool(t.outputs) for t in graph.inputs}
        ctx.report_progress("attention masks", 1, 2)
        apply_rules(FINITE, masks, last_first=False, reports=reports)
        notes += [Note(f"{self.name}.{miss.code}", miss.message, node=miss.node, fix=miss.fix, severity=miss.severity)
                  for report in reports.values() for miss in report.near_misses]
        hoisted, outcomes = masks.hoisted, masks.outcomes
        remove_dead_nodes(graph)
        if sites:
            # Fully masked rows are a property of the inputs and of the masks as rewritten here;
            # later passes may hide the masks (lowering moves them into functions), so the rows
            # are found on a snapshot of this model (structure only: weights are shared).
            snapshot = model.copy()
            ctx.facts.setdefault(UNDEFINED_OUTPUTS, {})[self.name] = partial(_fully_masked_on, snapshot, neg=neg)
        if hoisted:
            drop_orphaned_inputs(model, hoisted, readers_before)
            for mask in hoisted:
                contract = mask.contract(neg)
                notes.append(Note("attention-mask.hoisted-input", f"new input {mask.input.name!r} {contract['shape']}: {contract['host_recipe']}",
                                  node=", ".join(mask.attentions), fix="build this input on the host (see the report's details)", severity="warning"))
        host_models = {mask.input.name: mask.host_model for mask in hoisted if mask.host_model is not None}
        if host_models:
            ctx.facts.setdefault(INTERFACE_CHANGES, {})[self.name] = InterfaceChange(feeds=_HostInputs(host_models))
        ctx.facts[MASK_INPUTS] = MaskInputs([mask.contract(neg) for mask in hoisted], {mask.input.name: mask.host_model for mask in hoisted})
        toposort(graph)
        for site in sites:
            family = families[id(site)]
            if family.unrecognised:
                notes.append(Note("attention-mask.unrecognised", f"mask {', '.join(family.unrecognised)} matches no known family; generic rewrites only",
                                  node=site.name, fix="hoist it with --mask-as-input, or report the exporter so the family can be added"))
        counters = dict(sorted(masks.counters.items()))
        counters["masks_hoisted"] = len(hoisted)
        counters["identity_index_ops_collapsed"] = collapsed
        details: dict[str, Any] = {
            "mask_value": neg,
            "precision": self.options.precision,
            "attentions": [_site_record(site, families[id(site)], outcomes[id(site)]) for site in sites],
        }
        if hoisted:
            details["hoisted_inputs"] = [mask.contract(neg) for mask in hoisted]
        changed = any(value for value in counters.values())
        return PassResult(changed=changed, counters=counters, notes=notes, details=details)


def _logit_ranges(model: Model, sites: list[AttentionSite], neg: float, samples: list[dict[str, np.ndarray]] | None) -> dict[int, LogitRange | None]:
    """Each attention's logit range (by id of its site): proven, else from the user's samples' input ranges."""
    memo: dict[int, Any] = {}
    ranges: dict[int, LogitRange | None] = {id(site): proven_range(site, neg, memo) for site in sites}
    unknown = [site for site in sites if ranges[id(site)] is None]
    if unknown and samples:
        ranges.update(measured_ranges(model, unknown, neg, samples))
    return ranges


def _site_record(site: AttentionSite, family: MaskFamily, outcome: SiteOutcome) -> dict[str, Any]:
    record: dict[str, Any] = {"node": site.name, "kind": site.kind, **family.as_dict(), "rewrites": outcome.rewrites}
    mask = outcome.mask()
    if mask is not None:
        record["mask"] = mask.name
    return record
