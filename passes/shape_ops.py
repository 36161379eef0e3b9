"""Shapes for the shape passes: inference only when needed, and Shape/Size replaced by constants.

:func:`ensure_shapes` establishes the :data:`SHAPES` fact that passes declare in ``requires``: it
re-runs onnx shape inference unless the graph is exactly as it was after the last inference in
this compile (passes that only fold or bypass nodes keep annotated
shapes true, but they make more shapes inferable, so any structural change re-infers).

:func:`replace_shape_ops` is shared by ``fix-shapes`` (right after fixing the inputs) and
``fold-constants`` (for models whose shapes were static to begin with). The tensor a Shape reads
is never evaluated or loaded: the answer comes from its annotated shape, so ``Shape(weight)`` of
a 1 GB weight costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, infer_shapes, is_default_domain
from mapc.passes.base import PassContext
from mapc.passes.constants import replace_with_constant
from mapc.passes.facts import Fact


@dataclass(frozen=True)
class ShapeState:
    """The graph's structure when shapes were last inferred, and whether inference succeeded."""

    snapshot: tuple
    ok: bool


def ensure_shapes(model: Model, ctx: PassContext) -> bool:
    """Infer shapes unless the graph is unchanged since the last inference in this compile;
    returns False if onnx's inference failed. Establishes :data:`SHAPES`."""
    if shapes_are_current(model, ctx):
        return ctx.facts[SHAPES].ok
    # Only equivalent rewrites happen between fix-shapes and here, so annotations stay true.
    ok = infer_shapes(model)
    remember_shapes(model, ctx, ok)
    return ok


def shapes_are_current(model: Model, ctx: PassContext) -> bool:
    """True if shapes were inferred in this compile and the graph has not changed since."""
    state = ctx.facts.get(SHAPES)
    return state is not None and _same(state.snapshot, _snapshot(model.graph))


def remember_shapes(model: Model, ctx: PassContext, ok: bool) -> None:
    """Record that the graph's shapes were just inferred (``ok``: inference succeeded)."""
    ctx.facts[SHAPES] = ShapeState(_snapshot(model.graph), ok)


#: Every tensor carries the shape onnx infers for the graph as it is now (``ok`` False: inference
#: failed on this model, annotations are what the exporter wrote).
SHAPES: Fact[ShapeState] = Fact("shapes", "shapes inferred since the graph last changed", establish=ensure_shapes)


def _snapshot(graph: gs.Graph) -> tuple:
    """The graph's structure by object identity (the objects themselves are held, so their ids
    cannot be reused), plus the graph inputs' shapes."""
    interface = (tuple(graph.inputs), tuple(None if t.shape is None else tuple(t.shape) for t in graph.inputs), tuple(graph.outputs))
    return interface, tuple((node, node.op, tuple(node.inputs), tuple(node.outputs)) for node in graph.nodes)


def _same(old: tuple, new: tuple) -> bool:
    (inputs, shapes, outputs), nodes = old
    (inputs2, shapes2, outputs2), nodes2 = new
    if shapes != shapes2 or len(nodes) != len(nodes2) or not _identical(inputs, inputs2) or not _identical(outputs, outputs2):
        return False
    return all(
        a[0] is b[0] and a[1] == b[1] and _identical(a[2], b[2]) and _identical(a[3], b[3]) for a, b in zip(nodes, nodes2)
    )


def _identical(first: tuple, second: tuple) -> bool:
    return len(first) == len(second) and all(x is y for x, y in zip(first, second))


def shape_op_value(node: gs.Node) -> np.ndarray | None:
    """The int64 value a ``Shape`` (with its ``start``/``end``) or ``Size`` node computes, if the
    dims it reads are static; None otherwise."""
    if not is_default_domain(node) or node.op not in ("Shape", "Size") or not node.inputs:
        return None
    shape = _known_shape(node.inputs[0])
    if shape is None:
        return None
    if node.op == "Size":
        return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64) if _static(shape) else None
    rank = len(shape)
    start = _clamp(int(node.attrs.get("start", 0)), rank)
    end = _clamp(int(node.attrs["end"]), rank) if node.attrs.get("end") is not None else rank
    dims = list(shape[start:end])
    return np.array(dims, dtype=np.int64) if _static(dims) else None


def replace_shape_ops(model: Model) -> int:
    """Replace every foldable Shape/Size of the main graph by a constant; return how many.

    A Shape whose output is a graph output becomes ``Identity(constant)``, which keeps the
    output's name and needs no shape at run time. The replaced nodes are removed.
    """
    graph = model.graph
    replaced = []
    for node in graph.nodes:
        value = shape_op_value(node)
        if value is None or not node.outputs:
            continue
        replace_with_constant(model, node.outputs[0], value)
        replaced.append(node)
    if replaced:
        doomed = {id(node) for node in replaced}
        for node in replaced:
            node.inputs.clear()
            node.outputs.clear()
        graph.nodes = [node for node in graph.nodes if id(node) not in doomed]
    return len(replaced)


def _known_shape(tensor: gs.Tensor) -> list | None:
    if isinstance(tensor, gs.Constant):
        return [int(d) for d in tensor.shape]
    return None if tensor.shape is None else list(tensor.shape)


def _static(dims: list) -> bool:
    return all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims)


def _clamp(index: int, rank: int) -> int:
    if index < 0:
        index += rank
    return min(max(index, 0), rank)
