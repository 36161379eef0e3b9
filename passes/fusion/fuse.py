"""The ``canonicalize`` and ``fuse`` passes: run the fusion stages (:mod:`.stages`) and report on each rule."""

from __future__ import annotations

from dataclasses import dataclass, field

from mapc.ir import (
    MAPC_DOMAIN,
    CheckFailed,
    Model,
    Rule,
    RuleReport,
    UsageError,
    apply_rules,
    infer_shapes,
    remove_dead_nodes,
    rule_details,
    rule_names,
    rule_notes,
    toposort,
)
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.fusion.canonical import DivByConstant, restore_divisions
from mapc.passes.fusion.context import FusionContext, FusionSettings
from mapc.passes.fusion.stages import STAGES
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES

#: Canonical rules repeat until nothing changes, at most this many rounds.
MAX_CANONICAL_ROUNDS = 8


def run_rules(model: Model, ctx: PassContext, rules: list[Rule], settings: FusionSettings) -> dict[str, RuleReport]:
    """Canonical rules to a fixed point, then each other rule, in stage order, until it stops
    firing (a fold can enable itself again: Conv -> Add(c) -> Add(c') folds twice).

    Expects annotated shapes (the passes declare :data:`~mapc.passes.shape_ops.SHAPES`) and
    re-infers them after each rule that fired, for the next rule's checks."""
    remove_dead_nodes(model.graph)  # a dead reader would block a fold in this run and not in the next
    canonical_names = {rule.name for rule in STAGES["canonical"]}
    canonical = [rule for rule in rules if rule.name in canonical_names]
    others = [rule for rule in rules if rule.name not in canonical_names]
    fusion = FusionContext(model, settings)
    reports = {rule.name: RuleReport() for rule in rules}

    def refresh(_: object) -> None:
        toposort(model.graph)
        infer_shapes(model)

    apply_rules(canonical, fusion, rounds=MAX_CANONICAL_ROUNDS, reports=reports, after_round=refresh)
    for index, rule in enumerate(others):
        ctx.report_progress(f"fusion: {rule.name}", index, len(others))
        apply_rules([rule], fusion, rounds=MAX_CANONICAL_ROUNDS, reports=reports, after_rule=refresh)
    if any(report.fired for report in reports.values()):
        remove_dead_nodes(model.graph)
        if others and DivByConstant.name in reports:
            # A division no fusion used is the model's own again: not a change.
            reports[DivByConstant.name].fired -= restore_divisions(fusion)
        toposort(model.graph)
    return reports


def select_rules(stages: tuple[str, ...], enable: list[str], disable: list[str], pass_name: str) -> list[Rule]:
    """The rules of ``stages`` (in stage order) that are on by default or named in ``enable``."""
    every = [rule for stage in STAGES.values() for rule in stage]
    known = {rule.name for rule in every}
    for name in [*enable, *disable]:
        if name not in known:
            raise UsageError(f"pass {pass_name!r}: unknown fusion rule {name!r} (rules: {', '.join(rule_names(every))})")
    return [
        rule
        for stage in stages
        for rule in STAGES[stage]
        if rule.name not in disable and (getattr(rule, "default_enabled", True) or rule.name in enable)
    ]


def summarize(reports: dict[str, RuleReport], strict: bool, pass_name: str) -> PassResult:
    counters = {name: report.fired for name, report in reports.items()}
    notes = rule_notes(reports, pass_name)
    if strict and notes:
        first = notes[0]
        where = f" at {first.node!r}" if first.node else ""
        fix = f" (fix: {first.fix})" if first.fix else ""
        raise CheckFailed(
            f"--strict-fusion: {len(notes)} near-miss{'es' if len(notes) > 1 else ''}; first: {first.code}{where}: {first.message}{fix}"
        )
    return PassResult(changed=any(counters.values()), counters=counters, notes=notes, details={"rules": rule_details(reports)})


@register_pass
class Fuse(Pass):
    """Fuse decomposed layers into standard ONNX ops, whichever exporter wrote them.

    Runs, in order: the canonical-form rules to a fixed point (see ``canonicalize``); weight
    folds (Conv+BatchNormalization into the weights, Conv/ConvTranspose/Gemm + bias Add, a lone
    BatchNormalization to Mul+Add, optionally MatMul+Add to Gemm); onnxruntime's contrib ops
    (normalisations, GELUs, EmbedLayerNormalization, Attention, MultiHeadAttention,
    GroupQueryAttention, RotaryEmbedding) rewritten into what their kernels compute; fusions into
    LayerNormalization (opset 17), Gelu (20), RMSNormalization, Attention and RotaryEmbedding
    (23). When the model's opset predates a fused op, the node is ``mapc.<Op>`` calling a
    model-local function whose body is the decomposition written in the model's own opset (at
    opset 11/12 too: axes as attributes, Softmax only over the last axis, where both opsets
    agree; below 11 a near-miss; ``functions=false`` refuses instead; ``--target-opset``
    upgrades the model first). Reports, per rule, how often it fired and its near-misses (node,
    failing condition, fix); ``strict`` makes any near-miss an error.
    """

    name = "fuse"
    requires = (SHAPES,)

    @dataclass
    class Options:
        #: Rules that are off by default to switch on (e.g. matmul-to-gemm).
        enable: list[str] = field(default_factory=list)
        #: Rules to switch off.
        disable: list[str] = field(default_factory=list)
        #: Emit mapc functions when the opset lacks the fused op (else report a near-miss).
        functions: bool = True
        #: Fail (exit 1) when any rule near-missed.
        strict: bool = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rules = select_rules(("canonical", "fold", "fuse"), self.options.enable, self.options.disable, self.name)
        reports = run_rules(model, ctx, rules, FusionSettings(functions=self.options.functions))
        result = summarize(reports, self.options.strict, self.name)
        functions = sorted(f.name + (f"/{f.overload}" if f.overload else "") for f in model.functions if f.domain == MAPC_DOMAIN)
        if functions:
            result.details["functions"] = functions
        return result


@register_pass
class Canonicalize(Pass):
    """Rewrite equivalent spellings into one canonical form, so one fusion pattern fits all.

    Constants become the second operand of commutative ops; Div by a constant becomes Mul by
    its reciprocal; Sub(0, x), Mul(x, -1), Add(x, Neg(y)), Sub(x, Neg(y)) and Neg(Neg(x)) become
    Neg/Sub/Add/x; Pow(x, 2) becomes Mul(x, x) (0.5: Sqrt, -1: Reciprocal); Div(1, y) becomes
    Reciprocal(y) and Mul(x, Reciprocal(y)) becomes Div(x, y); Reshape(Softmax(Flatten(x)))
    over the last axis (onnx's version converter writes it) becomes Softmax(x, axis=-1). In
    attention: the scale is applied
    once, to the scores (factors on Q and K, or split as sqrt(s) on both, move there);
    Reshape-Transpose-Reshape around K becomes one Transpose; masking by Where(cond, scores,
    -inf) becomes an additive mask. Float results may differ in the last bit.
    """

    name = "canonicalize"
    requires = (SHAPES,)

    @dataclass
    class Options:
        #: Canonical rules to switch off.
        disable: list[str] = field(default_factory=list)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rules = select_rules(("canonical",), [], self.options.disable, self.name)
        reports = run_rules(model, ctx, rules, FusionSettings())
        return summarize(reports, False, self.name)
