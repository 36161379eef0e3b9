"""``attention-mask`` and ``decompose-attention``: attention masks that survive fp16 and int8/int16.

One module per job: :mod:`.detection` finds attentions and their masks, :mod:`.families` names
them, :mod:`.rewrites` applies R1-R5, :mod:`.hoist` R6, :mod:`.decompose` R9, :mod:`.fills` holds
the fill values. See ``docs/passes/attention-mask.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from mapc.ir import Model, infer_shapes, remove_dead_nodes, toposort
from mapc.ir.rewrite import RewriteContext, apply_rules
from mapc.passes.attention_mask import decompose  # noqa: F401  (registers decompose-attention)
from mapc.passes.attention_mask.detection import (
    AttentionSite,
    attentions_in_subgraphs,
    cone,
    find_attentions,
)
from mapc.passes.attention_mask.facts import MASK_INPUTS, MaskInputs
from mapc.passes.attention_mask.families import MaskFamily, classify
from mapc.passes.attention_mask.fills import Precision, resolve_mask_value
from mapc.passes.attention_mask.hoist import drop_orphaned_inputs, hoist_masks
from mapc.passes.attention_mask.rewrites import MaskRewriter, SiteOutcome
from mapc.passes.attention_mask.verification import fully_masked_positions
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.peephole.identities import INDEX_RULES
from mapc.passes.registry import register_pass
from mapc.passes.verify import UNDEFINED_OUTPUTS


def _fully_masked_on(
    snapshot: Model, model: Model, feeds: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], *, neg: float
) -> dict[str, np.ndarray]:
    """``fully_masked_positions`` evaluated on ``snapshot`` rather than the final ``model``."""
    return fully_masked_positions(snapshot, feeds, outputs, neg=neg)


@register_pass
class AttentionMask(Pass):
    """Make every attention mask one finite additive mask (R1-R6), or a host-computed input.

    Matches each attention: a last-axis Softmax over a score spine (the Add/Where chain back to
    the query-key MatMul) or an ONNX Attention op (input 3). Recognises the exporter mask
    families M1-M11 and Intel's causal chains, and rewrites, per attention:
      R1  fills below NEG (-inf, finfo.min, -1e9...) in initializers, Constant and
          ConstantOfShape become NEG, only where every reader lies on a mask path;
      R2  boolean masks (Where on the scores, Where(c, 0, fill)) become Mul(Sub(1, Cast(c)),
          NEG); masks summed are clamped with Max(., NEG); float mask graph inputs get
          Max(., NEG). A native Attention op keeps its bool mask (it needs no fill and gives
          fully masked rows zeros); decompose-attention and mask_as_input make it additive;
      R3  the NaN guard Where(IsNaN(p), 0, p) is removed once the mask is finite;
      R4  uniform masks (all-True, all-zero) are removed, and attn_mask dropped;
      R5  with static shapes, identity Slice/Gather/GatherND/ScatterND chains in the mask
          collapse, and And(constant causal, padding) splits into a constant additive part (up
          to max_constant_mb, else it stays computed) plus the computed padding part;
      R6  with mask_as_input, the whole mask becomes a float graph input [B,1,S,T] (additive,
          values in [NEG, 0]); the report says how to build it on the host.
    NEG is mask_value, or the precision's default (fp16/fp32 -1e4, int16 -50, int8 -20).
    Masks it cannot name are reported as notes, never silently skipped. Attentions inside
    If/Loop bodies are reported and left alone.
    """

    name = "attention-mask"
    provides = (MASK_INPUTS,)

    @dataclass
    class Options:
        #: Activation precision of the target: picks the default fill.
        precision: Precision = "fp16"
        #: The finite fill written at masked positions (default: by precision).
        mask_value: float | None = None
        #: Replace each mask subgraph with a float graph input computed on the host (R6).
        mask_as_input: bool = False
        #: Largest constant mask (MiB) created by folding a constant boolean part (R5).
        max_constant_mb: float = 16.0

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        neg = resolve_mask_value(self.options.precision, self.options.mask_value, self.name)
        infer_shapes(model)
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
        rewriter = MaskRewriter(model, neg, int(self.options.max_constant_mb * (1 << 20)), additive_attention_masks=self.options.mask_as_input)
        outcomes: dict[int, SiteOutcome] = {}
        for index, site in enumerate(sites):
            ctx.report_progress("attention masks", index, len(sites))
            outcome = SiteOutcome()
            if _reads_qk_output(site):
                notes.append(Note("attention-mask.qk-output", "Attention exposes qk_matmul_output; its mask is left alone",
                                  node=site.name, fix="drop the debug output qk_matmul_output"))
            else:
                rewriter.canonicalize(site, outcome)
            outcomes[id(site)] = outcome
        remove_dead_nodes(graph)  # the replaced spine nodes must not count as non-mask readers
        notes += self._replace_fills(rewriter, sites, outcomes)
        readers_before = {id(t): bool(t.outputs) for t in graph.inputs}
        hoisted = []
        if self.options.mask_as_input:
            sinks = [(site, outcomes[id(site)].sink) for site in sites if outcomes[id(site)].sink is not None]
            hoisted = hoist_masks(model, sinks, families, neg, rewriter.clamp)  # type: ignore[arg-type]
            for mask in hoisted:
                for site in sites:
                    if site.name in mask.attentions:
                        outcomes[id(site)].add("R6:hoisted-to-input")
        for site in sites:
            if site.guard is None:
                continue
            if rewriter.is_finite(outcomes[id(site)].sink):
                rewriter.drop_guard(site)
                outcomes[id(site)].add("R3:nan-guard-removed")
            else:
                notes.append(Note("attention-mask.guard-kept", "NaN guard kept: the mask still holds a non-finite or huge fill",
                                  node=site.guard.name, fix="see the attention-mask.fill-kept notes"))
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
        ctx.facts[MASK_INPUTS] = MaskInputs([mask.contract(neg) for mask in hoisted], {mask.input.name: mask.host_model for mask in hoisted})
        toposort(graph)
        for site in sites:
            family = families[id(site)]
            if family.unrecognised:
                notes.append(Note("attention-mask.unrecognised", f"mask {', '.join(family.unrecognised)} matches no known family; generic rewrites only",
                                  node=site.name, fix="hoist it with --mask-as-input, or report the exporter so the family can be added"))
        counters = dict(sorted(rewriter.counters.items()))
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

    def _replace_fills(self, rewriter: MaskRewriter, sites: list[AttentionSite], outcomes: dict[int, SiteOutcome]) -> list[Note]:
        sinks = [outcomes[id(site)].sink for site in sites if outcomes[id(site)].sink is not None]
        replaced, blocked = rewriter.replace_fills(sinks)  # type: ignore[arg-type]
        if replaced:
            fresh = rewriter.created_fills
            for site in sites:
                sink = outcomes[id(site)].sink
                if sink is None:
                    continue
                mask = sink[0].inputs[sink[1]]
                if id(mask) in fresh or any(id(t) in fresh for node in cone([mask]) for t in [*node.inputs, *node.outputs]):
                    outcomes[id(site)].add("R1:finite-fill")
        return [
            Note("attention-mask.fill-kept", f"fill in {tensor.name!r} also reaches {reader}, not only masks; left alone",
                 node=reader, fix="the mask may overflow in fp16 and ruin per-tensor quantization; hoist it with --mask-as-input",
                 severity="warning")
            for tensor, reader in blocked
        ]


def _reads_qk_output(site: AttentionSite) -> bool:
    outputs = site.node.outputs
    return site.kind == "attention-op" and len(outputs) > 3 and not outputs[3].is_empty() and bool(outputs[3].outputs)


def _site_record(site: AttentionSite, family: MaskFamily, outcome: SiteOutcome) -> dict[str, Any]:
    record: dict[str, Any] = {"node": site.name, "kind": site.kind, **family.as_dict(), "rewrites": outcome.rewrites}
    if outcome.sink is not None:
        node, slot = outcome.sink
        record["mask"] = node.inputs[slot].name
    return record
