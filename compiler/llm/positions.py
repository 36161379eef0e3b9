"""Where a decoder computes its token positions, found by evaluating it.

An export without a ``position_ids`` input computes the positions inside the graph, usually
``Range(past_length, past_length + seq)`` from the shape of a past K/V input, or a cumulative sum
of the mask. Once the cache is static that arithmetic folds into constants that are right for
one step only, so the static graphs take the positions as an input instead.

The **position users** are the ``Cos``/``Sin`` of rotary embeddings and the ``Gather`` of a
learned position table. :func:`find_position_cut` evaluates everything those users read at two
probe shapes and finds the tensors that hold ``past, past+1, ..., past+seq-1`` (any dtype, any
leading axes of size 1) in both: the most downstream ones on every path from a graph input to a
user form the cut, where the static graph's ``position_ids`` enters. Exporters differ in how
they compute positions, but every one of them has that tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, UsageError, constant_value, producer, run_nodes, standard_op
from mapc.llm.roles import DecoderRoles, embedding_gather

#: Probe shapes (past length, new tokens): two, so that a coincidence cannot pass for a position.
PROBES = ((5, 3), (2, 4))


@dataclass
class PositionCut:
    """Where positions enter: the tensors to replace, and the nodes that read positions."""

    tensors: list[gs.Tensor]
    users: list[gs.Node]
    #: Every node between the cut and the users (what the position input feeds).
    cone: list[gs.Node]
    #: Dtype and rank of each cut tensor, by name (from the probes: exports often leave them unannotated).
    kinds: dict[str, tuple[np.dtype, int]]

    @property
    def readers(self) -> list[gs.Node]:
        """The nodes that read a cut tensor on the way to the users."""
        inside = {id(node) for node in (*self.cone, *self.users)}
        return [node for tensor in self.tensors for node in tensor.outputs if id(node) in inside]

    @property
    def rotary(self) -> list[gs.Node]:
        return [node for node in self.users if standard_op(node) in ("Cos", "Sin")]


def position_users(model: Model, roles: DecoderRoles) -> list[gs.Node]:
    """Cos/Sin nodes and Gathers of a float table by indices that are not the token ids."""
    tokens = next(t for t in model.graph.inputs if t.name == roles.input_ids)
    embedding = embedding_gather(tokens)
    users = []
    for node in model.graph.nodes:
        op_type = standard_op(node)
        if op_type in ("Cos", "Sin"):
            users.append(node)
        elif op_type == "Gather" and isinstance(node.inputs[0], gs.Constant) and node.inputs[0].shape is not None \
                and len(node.inputs[0].shape) == 2 and np.dtype(node.inputs[0].dtype).kind == "f" \
                and node is not embedding:
            users.append(node)
    return users


def find_position_cut(model: Model, roles: DecoderRoles) -> PositionCut:
    """The cut where a ``position_ids`` input replaces the graph's own position arithmetic."""
    users = position_users(model, roles)
    if not users:
        raise UsageError("cannot find where the model uses token positions (no rotary Cos/Sin, no position-embedding "
                         "Gather); name a position input with --role position_ids=NAME")
    starts = [_position_operand(node) for node in users]
    cone_nodes = _cone(starts)
    if roles.position_ids is not None:
        position_input = next(t for t in model.graph.inputs if t.name == roles.position_ids)
        kinds = {position_input.name: (np.dtype(position_input.dtype), len(position_input.shape or (0, 0)))}
        return PositionCut([position_input], users, _between([position_input], cone_nodes), kinds)
    values = [_evaluate(model, roles, cone_nodes, past, new) for past, new in PROBES]
    candidates = {name for name in values[0] if all(_is_positions(v.get(name), past, new) for v, (past, new) in zip(values, PROBES))}
    cut: dict[int, gs.Tensor] = {}
    seen: set[int] = set()
    stack = list(starts)
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if tensor.name in candidates:
            cut[id(tensor)] = tensor
            continue
        node = producer(tensor)
        if node is None:
            if isinstance(tensor, gs.Constant):
                continue
            raise UsageError(f"cannot find the token positions: {tensor.name!r} reaches a position user without "
                             "passing a tensor that holds them; name a position input with --role position_ids=NAME")
        stack.extend(t for t in node.inputs if not t.is_empty())
    tensors = sorted(cut.values(), key=lambda t: t.name)
    kinds = {t.name: (values[0][t.name].dtype, values[0][t.name].ndim) for t in tensors}
    return PositionCut(tensors, users, _between(tensors, cone_nodes), kinds)


def _position_operand(node: gs.Node) -> gs.Tensor:
    return node.inputs[1] if standard_op(node) == "Gather" else node.inputs[0]


def _cone(tensors: list[gs.Tensor]) -> list[gs.Node]:
    nodes: dict[int, gs.Node] = {}
    stack = list(tensors)
    while stack:
        node = producer(stack.pop())
        if node is not None and id(node) not in nodes:
            nodes[id(node)] = node
            stack.extend(t for t in node.inputs if not t.is_empty())
    return list(nodes.values())


def _between(cut: list[gs.Tensor], cone_nodes: list[gs.Node]) -> list[gs.Node]:
    """Nodes of ``cone_nodes`` that read (transitively) a tensor of ``cut``."""
    inside = {id(node) for node in cone_nodes}
    reached: dict[int, gs.Node] = {}
    stack = list(cut)
    while stack:
        for node in stack.pop().outputs:
            if id(node) in inside and id(node) not in reached:
                reached[id(node)] = node
                stack.extend(node.outputs)
    return [node for node in cone_nodes if id(node) in reached]


def probe_feeds(model: Model, roles: DecoderRoles, names: set[str], past: int, new: int) -> dict[str, np.ndarray]:
    """Inputs of one probe step: batch 1, ``past`` cached tokens, ``new`` new ones, all attended."""
    feeds: dict[str, np.ndarray] = {}
    for tensor in model.graph.inputs:
        if tensor.name not in names:
            continue
        dtype = np.dtype(tensor.dtype)
        if tensor.name == roles.input_ids:
            feeds[tensor.name] = (np.arange(new) % roles.vocab_size).astype(dtype)[None]
        elif tensor.name == roles.attention_mask:
            feeds[tensor.name] = np.ones((1, past + new), dtype)
        elif tensor.name == roles.position_ids:
            feeds[tensor.name] = np.arange(past, past + new, dtype=dtype)[None]
        elif tensor.name in roles.past_inputs:
            feeds[tensor.name] = np.zeros((1, roles.kv_heads, past, roles.head_dim), dtype)
        else:
            raise UsageError(f"input {tensor.name!r} plays no known role in a decoder")
    return feeds


def _evaluate(model: Model, roles: DecoderRoles, nodes: list[gs.Node], past: int, new: int) -> dict[str, np.ndarray]:
    produced = {id(t) for node in nodes for t in node.outputs}
    read = {t.name: t for node in nodes for t in node.inputs if not t.is_empty() and id(t) not in produced}
    feeds = probe_feeds(model, roles, {name for name, t in read.items() if not isinstance(t, gs.Constant)}, past, new)
    for name, tensor in read.items():
        if isinstance(tensor, gs.Constant):
            feeds[name] = constant_value(tensor)
    order = {id(node): index for index, node in enumerate(model.graph.nodes)}
    nodes = sorted(nodes, key=lambda node: order[id(node)])
    outputs = [t.name for node in nodes for t in node.outputs if not t.is_empty()]
    return run_nodes(nodes, feeds, outputs, opset_imports=model.opset_imports, ir_version=model.ir_version,
                     functions=model.functions)


def _is_positions(value: np.ndarray | None, past: int, new: int) -> bool:
    if value is None or value.size != new or value.dtype.kind not in "iuf" or (value.ndim and value.shape[-1] != new):
        return False
    return bool(np.array_equal(value.reshape(-1), np.arange(past, past + new, dtype=value.dtype)))
