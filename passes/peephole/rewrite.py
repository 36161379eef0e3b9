"""What every peephole rule uses: shape and constant queries, and the edits a rule may make."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import (
    Model,
    can_take_name,
    constant_value,
    is_graph_output,
    replace_all_uses,
)


def static_shape(tensor: gs.Tensor) -> tuple[int, ...] | None:
    """The shape of ``tensor`` if every dim is a known non-negative integer."""
    if isinstance(tensor, gs.Constant):
        return tuple(int(d) for d in tensor.shape)
    if tensor.shape is None or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in tensor.shape):
        return None
    return tuple(int(d) for d in tensor.shape)


def rank_of(tensor: gs.Tensor) -> int | None:
    if isinstance(tensor, gs.Constant):
        return len(tensor.shape)
    return None if tensor.shape is None else len(tensor.shape)


def same_dtype(a: gs.Tensor, b: gs.Tensor) -> bool:
    return a.dtype is not None and b.dtype is not None and np.dtype(a.dtype) == np.dtype(b.dtype)


def int_constant(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a constant integer tensor (indices, axes, shapes), else None."""
    value = constant_value(tensor) if not tensor.is_empty() else None
    if value is None:
        return None
    array = np.asarray(value)
    return array.astype(np.int64) if array.dtype.kind in "iu" else None


def is_plain(node: gs.Node) -> bool:
    """A node of the default ONNX domain (rules never touch custom ops)."""
    return (node.domain or "") in ("", "ai.onnx")


class Rewriter:
    """The edits peephole rules make; keeps removed nodes out of the graph at the end."""

    def __init__(self, model: Model, *, signed_zeros: bool) -> None:
        self.model = model
        self.graph = model.graph
        self.signed_zeros = signed_zeros
        self.removed: set[int] = set()

    def bypass(self, node: gs.Node, source: gs.Tensor) -> bool:
        """Readers of ``node``'s output read ``source``; the node goes. False (nothing done) if
        the output is a graph output whose name ``source`` cannot take."""
        result = node.outputs[0]
        if is_graph_output(self.graph, result) and not can_take_name(self.graph, source):
            return False
        replace_all_uses(self.model, result, source)
        self.remove(node)
        return True

    def become(self, node: gs.Node, op: str, inputs: Sequence[gs.Tensor], attrs: dict | None = None) -> None:
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
        node.inputs.clear()
        node.outputs.clear()
        self.removed.add(id(node))

    def drop_removed(self) -> None:
        if self.removed:
            self.graph.nodes = [n for n in self.graph.nodes if id(n) not in self.removed]
            self.removed.clear()


@dataclass(frozen=True)
class Rule:
    """One peephole: ``apply(rewriter, node)`` rewrites a matching node and returns True."""

    name: str
    ops: tuple[str, ...]
    apply: Callable[[Rewriter, gs.Node], bool]
