"""Rotary embeddings the host computes: ``rope_cos``/``rope_sin`` inputs and the tables behind them.

For targets without ``Sin``/``Cos`` (the static-LLM ``--rope inputs``), every rotary ``Cos``/``Sin``
of a decoder is replaced by a graph input, and the table the host looks rows up in is computed
by evaluating the graph's own arithmetic from the positions (whatever frequency scheme the
model uses): ``table[position]``, the position axis moved to the input's. When the op reads
``Concat(f, f)`` (HF's ``rotate_half`` layout) the input holds one half and the graph
concatenates it, as Qualcomm AI Hub's LLMs take ``[1, T, head_dim/2]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, UsageError, run_nodes, standard_op
from mapc.llm.graph_edits import rewire
from mapc.llm.positions import PositionCut


@dataclass
class RopeTable:
    """Host-side rotary tables: ``table[position]``, position axis moved to ``axis``, reshaped to the input."""

    input: str
    table: np.ndarray
    axis: int
    shape: list[int]


def replace_rotary(model: Model, cut: PositionCut, positions: gs.Variable, new_tokens: int, context: int) -> list[RopeTable]:
    """Replace every rotary Cos/Sin by a ``rope_cos``/``rope_sin`` input and build the host tables."""
    tables: list[RopeTable] = []
    if not cut.rotary:
        return tables
    read = {id(node): _half_source(node) for node in cut.rotary}
    angles = list({id(tensor): tensor for tensor, _ in read.values()}.values())
    # every angle tensor of every Cos/Sin at once: at the step's positions, and at all of the cache's
    probe = _evaluate_from_positions(model, positions, angles, np.arange(new_tokens))
    full = _evaluate_from_positions(model, positions, angles, np.arange(context))
    for op, name in (("Cos", "rope_cos"), ("Sin", "rope_sin")):
        nodes = [node for node in cut.rotary if standard_op(node) == op]
        if not nodes:
            continue
        sources = [read[id(node)] for node in nodes]
        first = probe[sources[0][0].name]
        if any(not np.array_equal(probe[s.name], first) for s, _ in sources[1:]):
            raise UsageError(f"the model computes several different rotary {op} tables; keep Sin/Cos on the device "
                             "(--rope graph)")
        axis = _position_axis(first.shape, full[sources[0][0].name].shape)
        table = np.moveaxis(np.cos(full[sources[0][0].name]) if op == "Cos" else np.sin(full[sources[0][0].name]), axis, 0)
        rope_input = gs.Variable(name, dtype=np.dtype(table.dtype), shape=list(first.shape))
        model.graph.inputs.append(rope_input)
        tables.append(RopeTable(name, np.ascontiguousarray(table), axis, list(first.shape)))
        for node, (_, halves) in zip(nodes, sources):
            replacement: gs.Tensor = rope_input
            if halves:
                replacement = gs.Variable(model.fresh_name(f"{name}_full"), dtype=rope_input.dtype)
                model.graph.nodes.append(gs.Node("Concat", model.fresh_name(f"{name}_concat"), {"axis": -1},
                                                 inputs=[rope_input, rope_input], outputs=[replacement]))
            output = node.outputs[0]
            for reader in list(output.outputs):
                rewire(reader, output, replacement)
            if output in model.graph.outputs:
                raise UsageError(f"the rotary {op} output {output.name!r} is a graph output; keep Sin/Cos on the device")
    return tables


def _half_source(node: gs.Node) -> tuple[gs.Tensor, bool]:
    """What a Cos/Sin really reads: ``f`` when its input is ``Concat(f, f)`` on the last axis."""
    source = node.inputs[0]
    producer = source.inputs[0] if source.inputs else None
    if producer is not None and standard_op(producer) == "Concat" and len(producer.inputs) == 2 \
            and producer.inputs[0] is producer.inputs[1] and producer.attrs.get("axis") in (-1, len(source.shape or ()) - 1):
        return producer.inputs[0], True
    return source, False


def _evaluate_from_positions(model: Model, positions: gs.Variable, tensors: list[gs.Tensor], values: np.ndarray) -> dict[str, np.ndarray]:
    nodes: dict[int, gs.Node] = {}
    stack = list(tensors)
    while stack:
        tensor = stack.pop()
        node = tensor.inputs[0] if tensor.inputs else None
        if node is not None and id(node) not in nodes:
            nodes[id(node)] = node
            stack.extend(t for t in node.inputs if not t.is_empty())
    order = {id(node): index for index, node in enumerate(model.graph.nodes)}
    ordered = sorted(nodes.values(), key=lambda node: order[id(node)])
    produced = {id(t) for node in ordered for t in node.outputs}
    feeds: dict[str, np.ndarray] = {positions.name: values.astype(np.int32)[None]}
    for node in ordered:
        for tensor in node.inputs:
            if id(tensor) in produced or tensor.is_empty() or tensor.name in feeds:
                continue
            if not isinstance(tensor, gs.Constant):
                raise UsageError(f"the rotary tables depend on {tensor.name!r}, not only on the positions; keep "
                                 "Sin/Cos on the device (--rope graph)")
            feeds[tensor.name] = np.asarray(tensor.values)
    return run_nodes(ordered, feeds, [t.name for t in tensors], opset_imports=model.opset_imports,
                     ir_version=model.ir_version, functions=model.functions)


def _position_axis(step_shape: tuple[int, ...], full_shape: tuple[int, ...]) -> int:
    differing = [axis for axis, (a, b) in enumerate(zip(step_shape, full_shape)) if a != b]
    if len(differing) != 1:
        raise UsageError("cannot tell which axis of the rotary table is the position; keep Sin/Cos on the device "
                         "(--rope graph)")
    return differing[0]
