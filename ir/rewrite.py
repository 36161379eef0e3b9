"""The rewrite engine: rules, the context they edit the graph through, and the one driver.

Every graph rewrite of mapc (peephole simplifications, canonical forms and fusions, the
attention-mask rewrites, cleanup's no-ops) is a :class:`Rule` applied by :func:`apply_rules`.
A rule comes in one of two forms, both reporting the same way:

* an **op-keyed rule**, a function decorated with :func:`rule`::

      @rule("Cast", "CastLike")
      def identity_cast(ctx: RewriteContext, node: gs.Node) -> bool:
          '''Cast or CastLike to the type its input already has: the input.'''
          ...
          return ctx.bypass(node, node.inputs[0])

  It is called with each node of one of its op types and returns True when it rewrote the node
  (through ``ctx``'s edits), False when it does not apply; raising :class:`NearMiss` reports
  why it almost applied;
* a **pattern rule**, a :class:`PatternRule` subclass: a subgraph ``pattern``
  (:mod:`mapc.ir.pattern`), a ``check`` that returns what the rewrite needs or raises
  :class:`NearMiss` / :class:`NoMatch`, and a ``rewrite`` returning the tensor(s) that replace
  the root's outputs.

A *stage* is an ordered list of rules; the order is the list's (no priorities elsewhere).
:func:`apply_rules` runs a stage in one of two schedules: rule by rule (each rule over the
whole graph, roots visited last node first so the largest match wins, optionally repeated in
rounds until nothing fires) or in sweeps (node by node in graph order, the first rule that
fires on a node wins, sweeps repeated until one changes nothing). It returns one
:class:`RuleReport` per rule: how often it fired, and its near-misses as notes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir.graph import SHAPE_READERS, can_take_name, is_default_domain, is_graph_output, replace_all_uses
from mapc.ir.notes import Note
from mapc.ir.pattern import Match, Pattern, find_matches, root_ops

if TYPE_CHECKING:
    from mapc.ir.model import Model

Severity = Literal["info", "warning", "error"]


class NearMiss(Exception):
    """A rule refused a match. ``code`` is stable (``heads-unproven``); ``condition`` says what
    failed in one sentence; ``fix`` what would make the rule fire. ``node`` names the node
    concerned when it is not the one the rule was tried on; ``severity`` is the note's."""

    def __init__(self, code: str, condition: str, fix: str | None = None, *, node: str | None = None, severity: Severity = "warning") -> None:
        super().__init__(condition)
        self.code = code
        self.condition = condition
        self.fix = fix
        self.node = node
        self.severity = severity

    def note(self, node: str | None) -> Note:
        return Note(self.code, self.condition, node=self.node if self.node is not None else node, fix=self.fix, severity=self.severity)


class NoMatch(Exception):
    """A rule found that it simply does not apply here: nothing worth reporting."""


@dataclass
class RuleReport:
    """How often a rule fired, and why it did not where it almost did."""

    fired: int = 0
    near_misses: list[Note] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"fired": self.fired, "near_misses": [note.as_dict() for note in self.near_misses]}


# -- the context --------------------------------------------------------------------------------------


class RewriteContext:
    """What a rule may use: the model, the graph being rewritten, and the edits it may make.

    ``graph`` is the model's main graph unless a subgraph is given; ``scope`` (node ids), when
    set, limits the nodes rules are tried on. Nodes a rule removes leave the graph when the
    driver calls :meth:`drop_removed`.
    """

    def __init__(self, model: Model, *, graph: gs.Graph | None = None, scope: Iterable[gs.Node] | None = None) -> None:
        self.model = model
        self.graph = model.graph if graph is None else graph
        self.scope: set[int] | None = None if scope is None else {id(node) for node in scope}
        self.removed: set[int] = set()
        #: Near-misses of a rewrite that still fired (a part it could not do).
        self.remarks: list[NearMiss] = []

    # -- edits ----------------------------------------------------------------------------------
    def bypass(self, node: gs.Node, source: gs.Tensor) -> bool:
        """Readers of ``node``'s output read ``source``; the node goes. False (nothing done) if
        the output is a graph output whose name ``source`` cannot take."""
        result = node.outputs[0]
        if is_graph_output(self.graph, result) and not can_take_name(self.graph, source):
            return False
        replace_all_uses(self.model, result, source, self.graph)
        self.remove(node)
        return True

    def become(self, node: gs.Node, op: str, inputs: Sequence[gs.Tensor], attrs: Mapping[str, Any] | None = None) -> None:
        """Turn ``node`` in place into ``op`` reading ``inputs`` (its output tensor is kept)."""
        node.op = op
        node.domain = None
        node.attrs.clear()
        node.attrs.update(attrs or {})
        node.inputs.clear()
        node.inputs.extend(inputs)

    def reshape(self, node: gs.Node, data: gs.Tensor, shape: Sequence[int]) -> bool:
        """Turn ``node`` into ``Reshape(data, shape)``; False for zero-size shapes (a 0 in a
        Reshape target would mean "copy this dim" rather than "empty")."""
        if 0 in shape:
            return False
        target = gs.Constant(self.model.fresh_name(f"{node.outputs[0].name}_shape"), np.asarray(shape, dtype=np.int64))
        self.become(node, "Reshape", [data, target])
        return True

    def remove(self, node: gs.Node) -> None:
        """Detach ``node``; it leaves the graph at the next :meth:`drop_removed`."""
        node.inputs.clear()
        node.outputs.clear()
        self.removed.add(id(node))

    def drop_removed(self) -> None:
        """Take removed nodes, and nodes a rewrite left without outputs, out of the graph."""
        self.graph.nodes = [n for n in self.graph.nodes if id(n) not in self.removed and n.outputs]
        self.removed.clear()

    # -- building -------------------------------------------------------------------------------
    def remark(self, code: str, condition: str, fix: str | None = None, *, node: str | None = None, severity: Severity = "warning") -> None:
        """Record a part of the rule that could not apply (the rest of the rewrite may still fire)."""
        self.remarks.append(NearMiss(code, condition, fix, node=node, severity=severity))

    def node(
        self,
        op_type: str,
        inputs: Sequence[gs.Tensor],
        *,
        attrs: dict[str, Any] | None = None,
        domain: str = "",
        outputs: int = 1,
        name: str = "",
        dtype: Any = None,
        shape: Sequence[int | str | None] | None = None,
    ) -> gs.Tensor | list[gs.Tensor]:
        """Append a node reading ``inputs``; return its output (or outputs when ``outputs > 1``).

        ``dtype``/``shape`` annotate the (first) output when the caller knows them.
        """
        base = name or op_type.lower()
        results = [gs.Variable(self.model.fresh_name(f"{base}_out")) for _ in range(outputs)]
        if dtype is not None:
            results[0].dtype = dtype
        if shape is not None:
            results[0].shape = list(shape)
        node = gs.Node(op_type, name=self.model.fresh_name(base), attrs=dict(attrs or {}), inputs=list(inputs), outputs=results, domain=domain or None)
        self.graph.nodes.append(node)
        return results[0] if outputs == 1 else results

    def const(self, value: Any, name: str = "const", dtype: Any = None) -> gs.Constant:
        array = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
        return gs.Constant(self.model.fresh_name(name), np.require(array, requirements="C"))


# -- rules ------------------------------------------------------------------------------------------


class Rule:
    """One rewrite: its ``name`` (kebab-case, used in reports and options), the op types it is
    anchored at, and :meth:`attempt`. Use :func:`rule` or :class:`PatternRule` to make one."""

    name: str
    ops: frozenset[str]
    #: Visit this rule's anchors last node first (True) or in graph order (False), whatever the
    #: driver's ``last_first``; None follows the driver. Rule-by-rule schedule only.
    last_first: bool | None = None

    def attempt(self, node: gs.Node, ctx: RewriteContext, report: RuleReport) -> bool:  # pragma: no cover - abstract
        """Try the rule on ``node``; True if it rewrote something (near-misses go to ``report``)."""
        raise NotImplementedError

    def describe(self) -> str:
        """The rule in one sentence (its docstring's first line)."""
        return (self.__doc__ or "").strip().splitlines()[0] if self.__doc__ else self.name


class FunctionRule(Rule):
    """An op-keyed rule made by :func:`rule` from ``function(ctx, node) -> bool``. What the
    function records with ``ctx.remark`` goes to its report, whether it fired or not."""

    def __init__(self, function: Callable[[Any, gs.Node], bool], ops: Iterable[str], name: str, plain: bool, last_first: bool | None = None) -> None:
        self.function = function
        self.ops = frozenset(ops)
        self.name = name
        self.plain = plain
        self.last_first = last_first
        self.__doc__ = function.__doc__

    def attempt(self, node: gs.Node, ctx: RewriteContext, report: RuleReport) -> bool:
        if self.plain and not (is_default_domain(node) and node.inputs and len(node.outputs) == 1):
            return False
        ctx.remarks.clear()
        refusal: list[NearMiss] = []
        try:
            fired = bool(self.function(ctx, node))
        except NoMatch:
            fired = False
        except NearMiss as miss:
            fired, refusal = False, [miss]
        report.near_misses.extend(miss.note(node.name) for miss in [*ctx.remarks, *refusal])
        ctx.remarks.clear()
        return fired

    def __call__(self, ctx: RewriteContext, node: gs.Node) -> bool:
        return bool(self.function(ctx, node))

    def __repr__(self) -> str:
        return f"rule({self.name!r})"


def rule(
    *ops: str, name: str | None = None, plain: bool = True, last_first: bool | None = None
) -> Callable[[Callable[[Any, gs.Node], bool]], FunctionRule]:
    """Make ``function(ctx, node) -> bool`` an op-keyed rule anchored at ``ops``.

    Its name defaults to the function's with ``_`` as ``-``; its docstring is its description.
    ``plain`` (default) tries it only on default-domain nodes with inputs and one output;
    ``last_first`` fixes the order its anchors are visited in (see :attr:`Rule.last_first`).
    """

    def make(function: Callable[[Any, gs.Node], bool]) -> FunctionRule:
        if not (function.__doc__ or "").strip():
            raise ValueError(f"rule {function.__name__}: a rule needs a docstring saying what it matches and produces")
        return FunctionRule(function, ops, name or function.__name__.replace("_", "-"), plain, last_first)

    return make


class PatternRule(Rule):
    """A rewrite: ``pattern`` + ``check`` (raise :class:`NearMiss`) + ``rewrite``. See the module doc."""

    #: Registered name, used in reports and options (``layer-norm``).
    name: ClassVar[str]
    pattern: ClassVar[Pattern]
    #: Report partial structural matches that got past the pattern node of this name (None: never).
    near_miss_after: ClassVar[str | None] = None
    #: Shown for partial structural matches.
    near_miss_fix: ClassVar[str | None] = None
    #: Never report near-misses (canonical-form rules: not firing is not a problem).
    quiet: ClassVar[bool] = False
    #: Inner nodes of a match may also be read elsewhere (they are then kept for those readers).
    allow_shared: ClassVar[bool] = False

    @property
    def ops(self) -> frozenset[str]:  # type: ignore[override]
        return root_ops(self.pattern)

    def check(self, match: Match, ctx: Any) -> Any:
        return None

    def rewrite(self, match: Match, params: Any, ctx: Any) -> gs.Tensor | Sequence[gs.Tensor] | None:  # pragma: no cover
        """Build the replacement; return the tensor(s) replacing the root's outputs, or None when
        the rewrite edited the matched nodes in place (they are then kept)."""
        raise NotImplementedError

    def describe(self) -> str:
        return (type(self).__doc__ or "").strip().splitlines()[0] if type(self).__doc__ else self.name

    def attempt(self, node: gs.Node, ctx: RewriteContext, report: RuleReport) -> bool:
        """The structural matches rooted at ``node`` are tried in turn; the first whose inner
        nodes are read only inside the match and whose check passes is rewritten. Otherwise the
        first refusal is recorded as a near-miss."""
        if not node.outputs or node.outputs[0].is_empty():
            return False
        matches, deepest = find_matches(self.pattern, node.outputs[0])
        if not matches:
            if not self.quiet and self.near_miss_after is not None and self.near_miss_after in deepest.bound:
                report.near_misses.append(NearMiss("structure", deepest.reason, self.near_miss_fix).note(node.name))
            return False
        refusal: NearMiss | None = None
        for match in matches:
            ctx.remarks.clear()
            try:
                if not self.allow_shared:
                    _check_inner_uses(ctx.graph, match)
                params = self.check(match, ctx)
            except NoMatch:
                continue
            except NearMiss as miss:
                refusal = refusal or miss
                continue
            replacement = self.rewrite(match, params, ctx)
            if replacement is not None:
                for dead in _replace(ctx, match, replacement):
                    ctx.removed.add(id(dead))
            report.near_misses.extend(remark.note(node.name) for remark in ctx.remarks)
            ctx.remarks.clear()
            return True
        ctx.remarks.clear()
        if refusal is not None and not self.quiet:
            report.near_misses.append(refusal.note(node.name))
        return False


def _check_inner_uses(graph: gs.Graph, match: Match) -> None:
    inside = {id(n) for n in match.covered}
    for node in match.covered:
        if node is match.root:
            continue
        for output in node.outputs:
            outside = [c for c in output.outputs if id(c) not in inside]
            if outside or is_graph_output(graph, output):
                user = f"{outside[0].op} {outside[0].name!r}" if outside else "a graph output"
                shape_only = bool(outside) and all(reader.op in SHAPE_READERS for reader in outside)
                raise NearMiss(
                    "shared-intermediate",
                    f"the intermediate {node.op} {node.name!r} is also read by {user}",
                    "only its shape is read: fix the input shapes and fold constants first (fix-shapes, fold-constants)"
                    if shape_only
                    else "fusing would compute it twice; remove or fold that reader first",
                )


def _replace(ctx: RewriteContext, match: Match, replacement: gs.Tensor | Sequence[gs.Tensor]) -> list[gs.Node]:
    """Rewire the root's readers to ``replacement``; detach and return the covered nodes left dead."""
    new_outputs = [replacement] if isinstance(replacement, gs.Tensor) else list(replacement)
    for old, new in zip(match.root.outputs, new_outputs):
        if old is not new:
            replace_all_uses(ctx.model, old, new, ctx.graph)
    dead: list[gs.Node] = []
    pending = list(match.covered)
    progress = True
    while progress:
        progress = False
        for node in list(pending):
            if any(output.outputs or is_graph_output(ctx.graph, output) for output in node.outputs):
                continue
            node.inputs.clear()
            node.outputs.clear()
            dead.append(node)
            pending.remove(node)
            progress = True
    return dead


# -- the driver ---------------------------------------------------------------------------------------


def apply_rules(
    rules: Sequence[Rule],
    ctx: RewriteContext,
    *,
    sweep: bool = False,
    rounds: int = 1,
    last_first: bool = True,
    reports: dict[str, RuleReport] | None = None,
    after_rule: Callable[[Rule], None] | None = None,
    after_round: Callable[[int], None] | None = None,
) -> dict[str, RuleReport]:
    """Apply the stage ``rules`` (in that order) to ``ctx.graph``; one report per rule.

    Rule by rule (default): each rule over every node of its op types (last node first unless
    ``last_first`` is False or the rule fixes its own order), then the next rule;
    ``after_rule(rule)`` runs after a rule that fired. With ``rounds > 1`` the whole list repeats until a round fires nothing.
    ``sweep``: node by node in graph order, the first of the node's rules that fires wins; each
    round is one sweep, repeated until one changes nothing (at most ``rounds``).
    ``after_round(n)`` runs after each round that changed something.
    """
    reports = reports if reports is not None else {}
    for item in rules:
        reports.setdefault(item.name, RuleReport())
    by_op: dict[str, list[Rule]] = {}
    for item in rules:
        for op in item.ops:
            by_op.setdefault(op, []).append(item)
    for round_number in range(1, rounds + 1):
        fired = _sweep(by_op, ctx, reports) if sweep else _rule_by_rule(rules, ctx, reports, last_first, after_rule)
        if not fired:
            break
        if after_round is not None:
            after_round(round_number)
    return reports


def _in_scope(node: gs.Node, ctx: RewriteContext) -> bool:
    return ctx.scope is None or id(node) in ctx.scope


def _rule_by_rule(rules: Sequence[Rule], ctx: RewriteContext, reports: dict[str, RuleReport], last_first: bool, after_rule: Callable[[Rule], None] | None) -> int:
    fired_total = 0
    for item in rules:
        report = reports[item.name]
        anchors = item.ops
        fired = 0
        nodes = list(ctx.graph.nodes)
        backwards = last_first if item.last_first is None else item.last_first
        for node in reversed(nodes) if backwards else nodes:
            if id(node) in ctx.removed or node.op not in anchors or not _in_scope(node, ctx):
                continue
            if item.attempt(node, ctx, report):
                fired += 1
        report.fired += fired
        fired_total += fired
        if fired:
            ctx.drop_removed()
            if after_rule is not None:
                after_rule(item)
    return fired_total


def _sweep(by_op: dict[str, list[Rule]], ctx: RewriteContext, reports: dict[str, RuleReport]) -> int:
    fired = 0
    for node in list(ctx.graph.nodes):
        if id(node) in ctx.removed or not _in_scope(node, ctx):
            continue
        for item in by_op.get(node.op, ()):
            if item.attempt(node, ctx, reports[item.name]):
                reports[item.name].fired += 1
                fired += 1
                break
    ctx.drop_removed()
    return fired


def rule_notes(reports: Mapping[str, RuleReport], prefix: str) -> list[Note]:
    """Every near-miss of ``reports`` as a pass note coded ``<prefix>.<rule>.<code>``."""
    return [
        Note(f"{prefix}.{name}.{miss.code}", miss.message, node=miss.node, fix=miss.fix, severity=miss.severity)
        for name, report in reports.items()
        for miss in report.near_misses
    ]


def rule_details(reports: Mapping[str, RuleReport]) -> dict[str, Any]:
    """The per-rule part of a pass's report details: ``{rule: {fired, near_misses}}``."""
    return {name: report.as_dict() for name, report in reports.items()}


def rule_names(rules: Iterable[Rule]) -> list[str]:
    return [item.name for item in rules]
