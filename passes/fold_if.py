"""``If`` nodes whose condition is a constant: the chosen branch, inlined into the graph.

Exporters and earlier folding leave ``If(constant, then, else)`` behind (a merged decoder with its
``use_cache_branch`` fixed, a shape check that folded to true). The branch's nodes move into the
main graph in the If's place, its local names made unique there, and readers of the If's outputs
read the branch's results. Branch nodes that read the outer scope keep reading the same tensors.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, constant_value, is_default_domain, replace_all_uses, toposort


def inline_constant_ifs(model: Model) -> int:
    """Inline every top-level ``If`` with a constant condition; return how many."""
    graph = model.graph
    inlined = 0
    for node in list(graph.nodes):
        if node.op != "If" or not is_default_domain(node) or not node.inputs:
            continue
        condition = constant_value(node.inputs[0])
        if condition is None or np.size(condition) != 1:
            continue
        taken = "then_branch" if bool(np.asarray(condition).reshape(-1)[0]) else "else_branch"
        branch = node.attrs[taken]
        if not isinstance(branch, gs.Graph) or len(branch.outputs) != len(node.outputs):
            continue
        _inline(model, node, branch)
        _detach(node.attrs["else_branch" if taken == "then_branch" else "then_branch"])
        inlined += 1
    if inlined:
        toposort(graph)
    return inlined


def _detach(branch: object) -> None:
    """Drop the branch not taken: its nodes would otherwise still count as readers of the outer
    tensors they referenced (a merged decoder's without-past branch reads the padding mask)."""
    if isinstance(branch, gs.Graph):
        for inner in (*branch.nodes, *(n for g in branch.subgraphs(recursive=True) for n in g.nodes)):
            inner.inputs.clear()
            inner.outputs.clear()
        branch.nodes = []


def _inline(model: Model, node: gs.Node, branch: gs.Graph) -> None:
    graph = model.graph
    taken = set(graph.tensors()) | {n.name for n in graph.nodes}
    outer = {id(t) for t in branch._foreign_tensors().values()}
    for tensor in branch.tensors().values():
        if id(tensor) not in outer and tensor.name in taken:
            tensor.name = model.fresh_name(f"{node.name or 'if'}/{tensor.name}")
    for inner in branch.nodes:
        if not inner.name or inner.name in taken:
            inner.name = model.fresh_name(f"{node.name or 'if'}/{inner.name or inner.op}")
    position = next(index for index, candidate in enumerate(graph.nodes) if candidate is node)
    results = list(branch.outputs)
    graph.nodes[position : position + 1] = list(branch.nodes)
    branch.nodes = []
    for output, result in zip(list(node.outputs), results):
        replace_all_uses(model, output, result)
    node.inputs.clear()
    node.outputs.clear()
