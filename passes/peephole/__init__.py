"""``peephole``: local rewrites that remove what static shapes and constants made trivial.

One module per family of rules, each an op-keyed rule of :mod:`mapc.ir.rewrite`:
:mod:`.identities` (ops that compute nothing), :mod:`.chains` (Reshape-like and Transpose
chains), :mod:`.sandwich` (elementwise ops between a Reshape and its inverse),
:mod:`.arithmetic` (neutral constants, constant conditions), :mod:`.reduce` (reductions over
axes of size 1) and :mod:`.legacy` (deprecated ops
onnxruntime still runs, as standard ops). :data:`RULES` is the order they are tried in on each
node.
"""

from __future__ import annotations

from dataclasses import dataclass

from mapc.ir import Model, apply_rules, remove_dead_nodes, rule_details
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.peephole.arithmetic import gemm_of_inner_size_one, log_softmax_of_one, matmul_of_inner_size_one, neutral_operand, sum_as_adds, where_constant_condition
from mapc.passes.peephole.chains import cast_round_trip, reshape_chain, transpose_chain
from mapc.passes.peephole.context import PeepholeContext
from mapc.passes.peephole.identities import IDENTITY_RULES
from mapc.passes.peephole.legacy import LEGACY_RULES
from mapc.passes.peephole.reduce import reduce_over_unit_axes
from mapc.passes.peephole.sandwich import reshape_sandwich
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES

#: Every peephole rule, in the order they are tried on a node (the first that fires wins).
RULES = [*IDENTITY_RULES, reshape_chain, transpose_chain, cast_round_trip, reshape_sandwich, neutral_operand, where_constant_condition, matmul_of_inner_size_one, gemm_of_inner_size_one, log_softmax_of_one, sum_as_adds, reduce_over_unit_axes, *LEGACY_RULES]

#: Sweeps over the graph before the pass gives up on reaching a fixed point (each sweep that
#: changes something shortens some chain, so real graphs settle in two or three).
MAX_SWEEPS = 16


@register_pass
class Peephole(Pass):
    """Remove or merge ops that are trivial once shapes are static and constants are folded.

    Matches, in the main graph (rules in docs/passes/shapes-and-folding.md):
      * identities: Reshape/Expand/Squeeze/Unsqueeze/Flatten to the input's own shape, Cast to
        the input's type, Transpose by the identity permutation, Slice with unit steps keeping
        everything, Concat of one input (and its inputs of size 0 on the axis), Gather/GatherND
        whose constant indices list the input in order, ScatterND whose constant indices cover
        the whole data tensor in order;
      * Transpose that only moves size-1 axes becomes a Reshape;
      * chains: Reshape-like op after Reshape-like op (Reshape, Squeeze, Unsqueeze, Flatten)
        becomes one Reshape; Transpose after Transpose becomes one (or none); a Cast back to the
        type a Cast started from, through a type that holds all its values, is removed;
      * sandwiches: elementwise ops between a Reshape and a Reshape back to the original shape
        run on the original shape, and both Reshapes go;
      * arithmetic: Mul/Div by 1, Add/Sub of 0 when broadcasting keeps the other operand's
        shape; Where with an all-true or all-false constant condition; MatMul or Gemm whose
        inner dimension is 1 becomes the broadcast Mul (Gemm: with alpha and beta·C); Sum
        becomes a chain of Adds in onnxruntime's order (of one input: that input);
      * legacy: the deprecated ImageScaler becomes Mul and Add.
    Every rewrite is exact (see ``signed_zeros`` for the exceptions, ``x + 0.0`` and the
    sum-free MatMul, which may give ``-0.0`` where MatMul gave ``+0.0``). Graph
    outputs keep their names; nodes left without readers are removed.
    """

    name = "peephole"
    requires = (SHAPES,)

    @dataclass
    class Options:
        #: Keep ``x + 0.0`` and ``x - (-0.0)`` for floats, which turn -0.0 into +0.0.
        signed_zeros: bool = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rewrites = PeepholeContext(model, signed_zeros=self.options.signed_zeros)
        reports = apply_rules(RULES, rewrites, sweep=True, rounds=MAX_SWEEPS, after_round=lambda n: ctx.report_progress("peephole sweep", n, None))
        counters = {name: report.fired for name, report in reports.items()}
        fired = sum(counters.values())
        counters["dead_nodes_removed"] = remove_dead_nodes(model.graph) if fired else 0
        return PassResult(changed=bool(fired), counters=counters, details={"rules": rule_details(reports)})
