"""Putting a computed value in place of a tensor: the step shared by every folding pass."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from mapc.ir import Model, is_graph_output, replace_all_uses


def replace_with_constant(model: Model, tensor: gs.Variable, value: np.ndarray | LazyValues) -> gs.Constant:
    """Make every reader of ``tensor`` read a new initializer holding ``value``.

    The initializer takes ``tensor``'s name (the old tensor, about to lose its producer, is
    renamed), so names stay readable and deterministic. A graph output keeps its name and becomes
    ``Identity(initializer)``. The caller removes the producer of ``tensor``. A ``LazyValues``
    value (a weight not loaded yet) is kept lazy.
    """
    values = value if isinstance(value, LazyValues) else np.asarray(value)
    graph = model.graph
    if is_graph_output(graph, tensor):
        constant = gs.Constant(model.fresh_name(f"{tensor.name}_value"), values)
        replace_all_uses(model, tensor, constant)
        return constant
    name = tensor.name
    tensor.name = model.fresh_name(f"{name}_folded")
    constant = gs.Constant(name, values)
    replace_all_uses(model, tensor, constant)
    return constant
