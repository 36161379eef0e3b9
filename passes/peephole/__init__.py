"""``peephole``: local rewrites that remove what static shapes and constants made trivial.

One module per family of rules: :mod:`.identities` (ops that compute nothing), :mod:`.chains`
(Reshape-like and Transpose chains), :mod:`.sandwich` (elementwise ops between a Reshape and its
inverse) and :mod:`.arithmetic` (neutral constants, constant conditions); :mod:`.rewrite` holds
what the rules share.
"""

from __future__ import annotations

from dataclasses import dataclass

from mapc.ir import Model, remove_dead_nodes
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.peephole import arithmetic, chains, identities, sandwich
from mapc.passes.peephole.rewrite import Rewriter, Rule
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import ensure_shapes

RULES: list[Rule] = [*identities.RULES, *chains.RULES, *sandwich.RULES, *arithmetic.RULES]

#: Sweeps over the graph before the pass gives up on reaching a fixed point (each sweep that
#: changes something shortens some chain, so real graphs settle in two or three).
MAX_SWEEPS = 16


@register_pass
class Peephole(Pass):
    """Remove or merge ops that are trivial once shapes are static and constants are folded.

    Matches, in the main graph (rules in docs/passes/shapes-and-folding.md):
      * identities: Reshape/Expand/Squeeze/Unsqueeze/Flatten to the input's own shape, Cast to
        the input's type, Transpose by the identity permutation, Slice with unit steps keeping
        everything, Concat of one input, Gather/GatherND whose constant indices list the input
        in order, ScatterND whose constant indices cover the whole data tensor in order;
      * Transpose that only moves size-1 axes becomes a Reshape;
      * chains: Reshape-like op after Reshape-like op (Reshape, Squeeze, Unsqueeze, Flatten)
        becomes one Reshape; Transpose after Transpose becomes one (or none);
      * sandwiches: elementwise ops between a Reshape and a Reshape back to the original shape
        run on the original shape, and both Reshapes go;
      * arithmetic: Mul/Div by 1, Add/Sub of 0 when broadcasting keeps the other operand's
        shape; Where with an all-true or all-false constant condition.
    Every rewrite is exact (see ``signed_zeros`` for the one exception, ``x + 0.0``). Graph
    outputs keep their names; nodes left without readers are removed.
    """

    name = "peephole"

    @dataclass
    class Options:
        #: Keep ``x + 0.0`` and ``x - (-0.0)`` for floats, which turn -0.0 into +0.0.
        signed_zeros: bool = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        ensure_shapes(model, ctx)
        rewriter = Rewriter(model, signed_zeros=self.options.signed_zeros)
        by_op: dict[str, list[Rule]] = {}
        for rule in RULES:
            for op in rule.ops:
                by_op.setdefault(op, []).append(rule)
        counters = {rule.name: 0 for rule in RULES}
        for sweep in range(MAX_SWEEPS):
            changed = 0
            for node in list(model.graph.nodes):
                if id(node) in rewriter.removed:
                    continue
                for rule in by_op.get(node.op, ()):
                    if rule.apply(rewriter, node):
                        counters[rule.name] += 1
                        changed += 1
                        break
            rewriter.drop_removed()
            ctx.report_progress("peephole sweep", sweep + 1, None)
            if not changed:
                break
        rewrites = sum(counters.values())
        counters["dead_nodes_removed"] = remove_dead_nodes(model.graph) if rewrites else 0
        return PassResult(changed=bool(rewrites), counters=counters)
