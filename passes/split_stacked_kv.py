"""``split-stacked-kv``: a KV cache stacked as ``[2, batch, heads, seq, head_dim]`` becomes a key and a value.

Older GPT-2 exports (transformers' tuple cache traced by torch 1.x, onnxruntime's own GPT-2
conversion) pass each layer's cache as one rank-5 input ``past_i = stack(key, value)`` and return
``present_i`` the same way. Rank 5 is above most NPUs' tensor-rank limit, and a device runtime
keeps keys and values apart anyway.

Matches a float graph input of rank 5 whose first dim is 2 and whose every reader takes one half
along axis 0: a ``Gather`` with a constant index on axis 0, a ``Split`` on axis 0 into two halves,
or a ``Slice`` of one element of axis 0. Matches a float graph output of rank 5 whose first dim is
2, produced by a ``Concat`` on axis 0 of two halves. Produces rank-4 inputs ``NAME.key`` and
``NAME.value`` in the place of input ``NAME``, and outputs ``NAME.key`` / ``NAME.value`` in the
place of output ``NAME``; the readers read the half they took (``Unsqueeze``-d where they kept
axis 0). An input or output with any other reader or producer is left alone with a note.

The function is unchanged: every value a reader took from the stacked input is the same half of
the cache, and the two new outputs are exactly the two halves the stacked output concatenated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, consumers, int_constant, optional_input, producer, remove_dead_nodes, remove_nodes, replace_all_uses, standard_op, toposort
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES
from mapc.passes.verify import INTERFACE_CHANGES, InterfaceChange

HALVES = ("key", "value")


@register_pass
class SplitStackedKV(Pass):
    """Stacked ``[2, B, H, S, D]`` cache inputs and outputs become separate key and value tensors.

    Matches rank-5 float graph inputs with a first dim of 2 read only by Gather / Split / Slice
    taking one half of axis 0, and rank-5 outputs with a first dim of 2 made by a Concat on axis 0
    of two halves (``tensors``: only those names; empty: every one). Produces ``NAME.key`` and
    ``NAME.value`` rank-4 inputs/outputs in their place. Changes the model's interface, so it
    runs only when asked (``--split-stacked-kv``, and ``mapc llm`` on such a decoder).
    Counters: ``inputs_split``, ``outputs_split``.
    """

    name = "split-stacked-kv"
    requires = (SHAPES,)

    @dataclass
    class Options:
        #: Graph inputs/outputs to split; empty: every one that matches.
        tensors: list[str] = field(default_factory=list)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        wanted = set(self.options.tensors)
        notes: list[Note] = []
        split_inputs: list[str] = []
        split_outputs: list[str] = []
        for kind, tensors, split, done in (("input", graph.inputs, _split_input, split_inputs),
                                           ("output", graph.outputs, _split_output, split_outputs)):
            for tensor in list(tensors):
                if not _stacked(tensor) or (wanted and tensor.name not in wanted):
                    continue
                refusal = split(model, tensor)
                if refusal is None:
                    done.append(tensor.name)
                else:
                    notes.append(Note(f"split-stacked-kv.{kind}-kept", f"{kind} {tensor.name!r} stays stacked: {refusal}"))
        for name in split_inputs:  # --input-shape of a stacked input fixes both halves
            given = ctx.input_shapes.pop(name, None)
            if given is not None:
                ctx.input_shapes.update({f"{name}.{half}": list(given[1:]) for half in HALVES})
        changed = bool(split_inputs or split_outputs)
        if changed:
            remove_dead_nodes(graph)
            toposort(graph)
            ctx.facts.setdefault(INTERFACE_CHANGES, {})[self.name] = InterfaceChange(
                feeds=partial(_unstacked, split_inputs), outputs=partial(_unstacked, split_outputs, keep=False))
        return PassResult(changed=changed, notes=notes,
                          counters={"inputs_split": len(split_inputs), "outputs_split": len(split_outputs)})


def _unstacked(names: list[str], values: Mapping[str, np.ndarray], *, keep: bool = True) -> dict[str, np.ndarray]:
    """``values`` with each stacked array of ``names`` given as its key and value halves (and
    still whole with ``keep``)."""
    result = dict(values)
    for name in names:
        if name in values:
            stacked = result[name] if keep else result.pop(name)
            for index, half in enumerate(HALVES):
                result[f"{name}.{half}"] = np.ascontiguousarray(stacked[index])
    return result


def _stacked(tensor: gs.Tensor) -> bool:
    """A float rank-5 tensor whose first dim is 2."""
    return (tensor.shape is not None and len(tensor.shape) == 5 and tensor.shape[0] == 2
            and tensor.dtype is not None and np.dtype(tensor.dtype).kind == "f")


def _split_input(model: Model, stacked: gs.Variable) -> str | None:
    """Replace ``stacked`` by two rank-4 inputs; the reason it cannot be, else None."""
    graph = model.graph
    takes = []
    for node in consumers(stacked):
        taken = _halves_taken(node, stacked)
        if taken is None:
            return f"its reader {node.name!r} ({node.op}) does not take one half of axis 0"
        takes.append((node, taken))
    halves = [gs.Variable(f"{stacked.name}.{half}", dtype=stacked.dtype, shape=list(stacked.shape[1:])) for half in HALVES]
    for node, taken in takes:
        for output, (index, keeps_axis) in zip(node.outputs, taken):
            value = halves[index]
            if keeps_axis:
                value = _unsqueeze0(graph, value, f"{output.name}/unstacked", model.opset)
            replace_all_uses(model, output, value)
    remove_nodes(graph, [node for node, _ in takes])
    position = graph.inputs.index(stacked)
    graph.inputs[position:position + 1] = halves
    return None


def _halves_taken(node: gs.Node, stacked: gs.Tensor) -> list[tuple[int, bool]] | None:
    """Per output of ``node``: (which half of axis 0 it is, whether axis 0 is kept), or None."""
    op = standard_op(node)
    if op == "Gather" and node.inputs[0] is stacked and node.attrs.get("axis", 0) in (0, -5):
        index = int_constant(node.inputs[1])
        if index is None or index.size != 1 or index.ndim > 1:
            return None
        return [(int(index.reshape(-1)[0]) % 2, index.ndim == 1)]
    if op == "Split" and node.attrs.get("axis", 0) in (0, -5) and len(node.outputs) == 2:
        sizes = node.attrs.get("split")
        if optional_input(node, 1) is not None:
            sizes = int_constant(node.inputs[1])
        if sizes is not None and [int(size) for size in sizes] != [1, 1]:
            return None
        return [(0, True), (1, True)]
    if op == "Slice":
        return _slice_taken(node)
    return None


def _slice_taken(node: gs.Node) -> list[tuple[int, bool]] | None:
    """The one element of axis 0 a Slice keeps (opset-10+ form with constant inputs), or None."""
    if len(node.inputs) < 3:
        return None
    parts = [int_constant(tensor) if index < len(node.inputs) and not tensor.is_empty() else None
             for index, tensor in enumerate(node.inputs[1:5], start=1)]
    starts, ends, axes, steps = parts + [None] * (4 - len(parts))
    if starts is None or ends is None or starts.size != 1 or (len(node.inputs) > 3 and axes is None):
        return None
    if axes is not None and int(axes.reshape(-1)[0]) not in (0, -5):
        return None
    if len(node.inputs) > 4 and steps is None:
        return None
    step = 1 if steps is None else int(steps.reshape(-1)[0])
    kept = list(range(2))[int(starts[0]):int(ends[0]):step] if step != 0 else []
    return [(kept[0], True)] if len(kept) == 1 else None


def _split_output(model: Model, stacked: gs.Tensor) -> str | None:
    """Replace output ``stacked`` by its two halves; the reason it cannot be, else None."""
    graph, opset = model.graph, model.opset
    source = producer(stacked)
    if source is None or standard_op(source) != "Concat" or source.attrs.get("axis") not in (0, -5) \
            or len(source.inputs) != 2:
        return "it is not a Concat of two halves on axis 0"
    parts = list(source.inputs)
    if any(part.shape is None or len(part.shape) != 5 or part.shape[0] != 1 for part in parts):
        return "the parts it concatenates are not [1, B, H, S, D]"
    halves = []
    for part, half in zip(parts, HALVES):
        name = f"{stacked.name}.{half}"
        inner = _unsqueezed_from(part)
        if inner is not None and producer(inner) is not None and not _in_interface(graph, inner):
            inner.name = name  # the half the exporter unsqueezed becomes the output itself
            halves.append(inner)
            continue
        result = gs.Variable(name, dtype=stacked.dtype, shape=list(stacked.shape[1:]))
        graph.nodes.append(gs.Node("Squeeze", name=f"{name}/squeeze", inputs=_axes_inputs(part, opset, f"{name}/axes"),
                                   outputs=[result], attrs=_axes_attrs(opset)))
        halves.append(result)
    position = graph.outputs.index(stacked)
    graph.outputs[position:position + 1] = halves
    return None


def _unsqueezed_from(tensor: gs.Tensor) -> gs.Tensor | None:
    """The input of the Unsqueeze on axis 0 that made ``tensor``, if one did."""
    source = producer(tensor)
    if source is None or standard_op(source) != "Unsqueeze":
        return None
    axes = source.attrs.get("axes")
    if len(source.inputs) > 1:
        axes = int_constant(source.inputs[1])
    return source.inputs[0] if axes is not None and [int(axis) for axis in np.reshape(axes, -1)] in ([0], [-5]) else None


def _in_interface(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(tensor is other for other in [*graph.inputs, *graph.outputs])


def _unsqueeze0(graph: gs.Graph, tensor: gs.Tensor, name: str, opset: int) -> gs.Variable:
    """``tensor`` with a new leading axis of size 1."""
    result = gs.Variable(name, dtype=tensor.dtype, shape=[1, *tensor.shape])
    graph.nodes.append(gs.Node("Unsqueeze", name=name, inputs=_axes_inputs(tensor, opset, f"{name}/axes"),
                               outputs=[result], attrs=_axes_attrs(opset)))
    return result


def _axes_inputs(tensor: gs.Tensor, opset: int, name: str) -> list[gs.Tensor]:
    """Inputs of a Squeeze/Unsqueeze of axis 0: the axes are an input from opset 13 on."""
    return [tensor, gs.Constant(name, np.array([0], dtype=np.int64))] if opset >= 13 else [tensor]


def _axes_attrs(opset: int) -> dict[str, list[int]]:
    """Attributes of a Squeeze/Unsqueeze of axis 0: the axes are an attribute before opset 13."""
    return {} if opset >= 13 else {"axes": [0]}

