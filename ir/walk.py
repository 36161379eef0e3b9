"""Walking a chain of nodes from a tensor: back through its producers, or on through sole readers.

Rules often ask "what is this tensor, looking through casts and reshapes?" or "does it reach a
Softmax through a chain of Adds?". :func:`walk` answers both with one bounded loop: it follows
the chain node by node while ``through`` lets it pass, and says where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from mapc.ir.graph import producer

#: Which tensor the walk continues from after passing a node, or None to stop at that node.
Through = Collection[str] | Callable[[gs.Node], gs.Tensor | None]


@dataclass
class Walk:
    """Where a :func:`walk` ended."""

    #: The last tensor reached.
    tensor: gs.Tensor
    #: The node next to ``tensor`` that the walk did not pass; None when there is none (a graph
    #: input, a constant, a tensor without a sole reader) or when the limit was reached.
    stop: gs.Node | None
    #: The nodes passed, in walking order.
    passed: list[gs.Node]

    def stopped_at(self, *ops: str) -> bool:
        """True if the walk stopped at a node of one of ``ops``."""
        return self.stop is not None and self.stop.op in ops


def sole_reader(tensor: gs.Tensor) -> gs.Node | None:
    """The one node reading ``tensor``, or None if it has none or several."""
    readers = tensor.outputs
    return readers[0] if len(readers) == 1 else None


def walk(tensor: gs.Tensor, through: Through, limit: int | None = None, *, step: Callable[[gs.Tensor], gs.Node | None] = producer) -> Walk:
    """Follow nodes from ``tensor``, at most ``limit`` of them (None: no limit).

    ``step`` gives the next node of a tensor: its :func:`~mapc.ir.graph.producer` (walking
    back, the default) or its :func:`sole_reader` (walking on). ``through`` decides whether the
    walk passes a node: a set of op types (passed nodes continue from their first input, or
    their first output when walking on), or a function returning the tensor to continue from
    (None: stop at this node).
    """
    passed: list[gs.Node] = []
    current = tensor
    while limit is None or len(passed) < limit:
        node = step(current)
        if node is None:
            return Walk(current, None, passed)
        following = through(node) if callable(through) else _first(node, through, step)
        if following is None:
            return Walk(current, node, passed)
        passed.append(node)
        current = following
    return Walk(current, None, passed)


def _first(node: gs.Node, ops: Collection[str], step: Callable[[gs.Tensor], gs.Node | None]) -> gs.Tensor | None:
    if node.op not in ops:
        return None
    return node.inputs[0] if step is producer else node.outputs[0]
