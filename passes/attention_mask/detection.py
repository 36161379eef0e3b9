"""Finding attentions and the masks that reach them.

An attention is either

* a ``Softmax`` over the last axis whose input is a *score spine*: a chain of ``Add`` and
  ``Where`` nodes ending at the ``MatMul`` of queries and keys (possibly through a scale
  ``Mul``/``Div`` or a ``Cast``). Each ``Add`` on the spine contributes an additive mask (its
  other operand); each ``Where`` that selects between the scores and a negative constant
  contributes a boolean mask (its condition) with that constant as the fill; or
* an ONNX ``Attention`` op, whose mask is input 3 (``attn_mask``).

A ``Where(IsNaN(p), 0, p)`` reading the softmax output ``p`` is the NaN guard (nan-guard).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import MAPC_DOMAIN, SHAPE_READERS, constant_value, is_default_domain, producer, standard_op
from mapc.passes.attention_mask.fills import is_float_dtype, uniform_value

#: Ops that multiply two activations: the query-key product of an attention.
_PRODUCT_OPS = frozenset({"MatMul", "Gemm", "Einsum"})
#: How far back from a spine operand the query-key product may be (scale, cast, transpose...).
_PRODUCT_SEARCH_DEPTH = 6

ContributionKind = Literal["additive", "keep-where", "mask-where", "attn-mask"]


@dataclass
class Contribution:
    """One mask applied to an attention's scores.

    ``additive``: ``Add(scores, mask)``; ``keep-where``: ``Where(mask, scores, fill)``;
    ``mask-where``: ``Where(mask, fill, scores)``; ``attn-mask``: input 3 of ``Attention``.
    """

    kind: ContributionKind
    node: gs.Node
    mask: gs.Tensor
    fill: gs.Tensor | None = None
    spine_slot: int | None = None

    @property
    def is_boolean(self) -> bool:
        return self.kind in ("keep-where", "mask-where") or (
            self.kind == "attn-mask" and self.mask.dtype is not None and np.dtype(self.mask.dtype) == np.bool_
        )


@dataclass
class AttentionSite:
    """An attention: its Softmax or Attention node, the masks reaching it and its NaN guard."""

    node: gs.Node
    kind: Literal["softmax", "attention-op"]
    scores: gs.Tensor | None = None
    contributions: list[Contribution] = field(default_factory=list)
    guard: gs.Node | None = None

    @property
    def name(self) -> str:
        return self.node.name or self.node.outputs[0].name

    def mask_tensors(self) -> list[gs.Tensor]:
        tensors = [c.mask for c in self.contributions]
        tensors += [c.fill for c in self.contributions if c.fill is not None]
        return tensors


def find_attentions(graph: gs.Graph) -> list[AttentionSite]:
    """Every attention of ``graph`` (not of its subgraphs), in graph order."""
    sites = []
    for node in graph.nodes:
        op_type = standard_op(node)
        if op_type == "Softmax":
            site = _softmax_site(node)
        elif op_type == "Attention":  # the ONNX op, or fuse's mapc function standing in for it
            site = _attention_op_site(node)
        else:
            continue
        if site is not None:
            sites.append(site)
    return sites


def attentions_in_subgraphs(graph: gs.Graph) -> list[gs.Node]:
    """Softmax/Attention nodes inside If/Loop/Scan bodies: reported, never rewritten."""
    return [
        node
        for subgraph in graph.subgraphs(recursive=True)
        for node in subgraph.nodes
        if standard_op(node) in ("Softmax", "Attention")
    ]


def _softmax_site(softmax: gs.Node) -> AttentionSite | None:
    source = softmax.inputs[0]
    rank = len(source.shape) if source.shape is not None else None
    axis = softmax.attrs.get("axis", -1)
    if not (axis == -1 or (rank is not None and axis == rank - 1)):
        return None
    contributions: list[Contribution] = []
    tensor = source
    while True:
        step = _spine_step(tensor)
        if step is None:
            break
        contribution, tensor = step
        contributions.append(contribution)
    if _product_depth(tensor) is None:
        return None
    return AttentionSite(softmax, "softmax", scores=tensor, contributions=contributions, guard=_nan_guard(softmax))


def _spine_step(tensor: gs.Tensor) -> tuple[Contribution, gs.Tensor] | None:
    node = producer(tensor)
    if node is None or not is_default_domain(node):
        return None
    if node.op == "Add" and len(node.inputs) == 2:
        side = _score_side(node.inputs[0], node.inputs[1])
        if side is None:
            return None
        return Contribution("additive", node, node.inputs[1 - side], spine_slot=side), node.inputs[side]
    if node.op == "Where":
        side = _score_side(node.inputs[1], node.inputs[2])
        if side is None:
            return None
        fill = node.inputs[2 - side]
        value = uniform_value(fill)
        if value is None or not is_float_dtype(value.dtype) or not float(value) < 0:
            return None
        kind: ContributionKind = "keep-where" if side == 0 else "mask-where"
        return Contribution(kind, node, node.inputs[0], fill=fill, spine_slot=1 + side), node.inputs[1 + side]
    return None


def _score_side(first: gs.Tensor, second: gs.Tensor) -> int | None:
    """Which operand (0 or 1) carries the scores: the one closer to the query-key product."""
    depths = [_product_depth(first), _product_depth(second)]
    if depths[0] is None and depths[1] is None:
        return None
    if depths[1] is None:
        return 0
    if depths[0] is None:
        return 1
    if depths[0] == depths[1]:
        return None
    return 0 if depths[0] < depths[1] else 1


def _product_depth(tensor: gs.Tensor) -> int | None:
    """Steps back from ``tensor`` to a product of two activations, or None within the limit."""
    queue = deque([(tensor, 0)])
    seen = {id(tensor)}
    while queue:
        current, depth = queue.popleft()
        node = producer(current)
        if node is None or node.op in SHAPE_READERS:
            continue
        if node.op in _PRODUCT_OPS and sum(not _is_constant(t) for t in node.inputs if not t.is_empty()) >= 2:
            return depth
        if depth >= _PRODUCT_SEARCH_DEPTH:
            continue
        for source in node.inputs:
            if id(source) not in seen and not _is_constant(source):
                seen.add(id(source))
                queue.append((source, depth + 1))
    return None


def _is_constant(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Constant) or constant_value(tensor) is not None


def _nan_guard(softmax: gs.Node) -> gs.Node | None:
    probabilities = softmax.outputs[0]
    for reader in probabilities.outputs:
        if reader.op != "IsNaN":
            continue
        for where in reader.outputs[0].outputs:
            if (
                where.op == "Where"
                and where.inputs[0] is reader.outputs[0]
                and where.inputs[2] is probabilities
                and _is_zero(where.inputs[1])
            ):
                return where
    return None


def _is_zero(tensor: gs.Tensor) -> bool:
    value = uniform_value(tensor)
    return value is not None and float(value) == 0.0


def _attention_op_site(node: gs.Node) -> AttentionSite:
    site = AttentionSite(node, "attention-op")
    if len(node.inputs) > 3 and not node.inputs[3].is_empty() and not _removed_function_mask(node):
        site.contributions.append(Contribution("attn-mask", node, node.inputs[3], spine_slot=None))
    return site


def _removed_function_mask(node: gs.Node) -> bool:
    """A mapc fused-op function keeps its mask input; a removed mask is a scalar zero there."""
    if node.domain != MAPC_DOMAIN:
        return False
    value = constant_value(node.inputs[3])
    return value is not None and np.ndim(value) == 0 and not np.any(value)


def cone(tensors: Iterable[gs.Tensor]) -> list[gs.Node]:
    """Nodes computing ``tensors``, back to graph inputs and constants, in discovery order."""
    nodes: dict[int, gs.Node] = {}
    stack = [t for t in tensors]
    seen: set[int] = set()
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        node = producer(tensor)
        if node is None or id(node) in nodes:
            continue
        nodes[id(node)] = node
        stack.extend(t for t in node.inputs if not t.is_empty())
    return list(nodes.values())


def mask_input_roles(graph: gs.Graph) -> dict[str, str]:
    """The graph inputs whose values (not only shapes) reach an attention's mask, by name:
    ``"additive"`` for a float mask read as it is (an additive mask input), else ``"keep"``
    (a padding mask: 1 or True where a key is attended)."""
    inputs = {id(t): t for t in graph.inputs}
    roles: dict[str, str] = {}
    for site in find_attentions(graph):
        for contribution in site.contributions:
            direct = contribution.mask
            if id(direct) in inputs and is_float_dtype(direct.dtype):
                roles[direct.name] = "additive"
            nodes = [node for node in cone([contribution.mask]) if node.op not in SHAPE_READERS]
            for tensor in [direct, *(t for node in nodes for t in node.inputs)]:
                if id(tensor) in inputs and tensor.name not in roles:
                    roles[tensor.name] = "keep"
    return dict(sorted(roles.items()))


def cone_inputs(graph: gs.Graph, nodes: Iterable[gs.Node]) -> list[gs.Tensor]:
    """Graph inputs the nodes read."""
    inputs = {id(t): t for t in graph.inputs}
    found: dict[int, gs.Tensor] = {}
    for node in nodes:
        for tensor in node.inputs:
            if id(tensor) in inputs:
                found[id(tensor)] = tensor
    return [t for t in graph.inputs if id(t) in found]
