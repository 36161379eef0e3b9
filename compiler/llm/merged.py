"""optimum's merged decoder: one ``If`` holding the with-past and the without-past decoder.

``decoder_model_merged.onnx`` takes a boolean ``use_cache_branch`` input; its ``If`` runs the
with-past branch when it is true. No NPU runs ``If``, and a static cache always has a past, so
:func:`take_cache_branch` fixes that input to the branch that reads the past K/V inputs (ties
go to ``then``, optimum's with-past branch), removes it from the interface and inlines the
branch; the result is an ordinary with-past decoder.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, standard_op
from mapc.passes import inline_constant_ifs


def take_cache_branch(model: Model) -> str | None:
    """Inline the with-past branch of a merged decoder; the name of the input removed, or None."""
    graph = model.graph
    inputs = {id(t): t for t in graph.inputs}
    for node in graph.nodes:
        if standard_op(node) != "If" or not node.inputs or id(node.inputs[0]) not in inputs:
            continue
        condition = node.inputs[0]
        if condition.dtype is None or np.dtype(condition.dtype) != np.bool_:
            continue
        reads = [_past_inputs_read(node.attrs[branch], graph) for branch in ("then_branch", "else_branch")]
        choice = reads[0] >= reads[1]
        fixed = gs.Constant(model.fresh_name(f"{condition.name}_fixed"), np.array([choice]))
        for reader in list(condition.outputs):
            for slot, tensor in enumerate(reader.inputs):
                if tensor is condition:
                    reader.inputs[slot] = fixed
        graph.inputs = [t for t in graph.inputs if t is not condition]
        inline_constant_ifs(model)
        model.forget_names()
        return condition.name
    return None


def _past_inputs_read(branch: gs.Graph, graph: gs.Graph) -> int:
    """How many rank-4 float graph inputs (the past K/V) ``branch`` reads from the outer scope."""
    past = {id(t) for t in graph.inputs if t.shape is not None and len(t.shape) == 4
            and t.dtype is not None and np.dtype(t.dtype).kind == "f"}
    foreign = branch._foreign_tensors().values()
    return sum(1 for t in foreign if id(t) in past)
