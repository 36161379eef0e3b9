"""Which tensors are still dynamic, and why; and the ``check-static`` pass that reports them.

:func:`dynamic_tensors` lists every tensor of the main graph whose shape is not fully static,
each with the graph-input dims it depends on (``attention_mask[1] (sequence_length)``) and the
nodes where shape inference stopped: data-dependent ops (``NonZero``), control flow and custom
ops always, and any other node whose inputs have static shapes and depend on no dynamic input
dim but whose output shape is still unknown (a ``Reshape`` whose target is computed from input
values, an op onnx cannot infer).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import CheckFailed, Model, constant_value, is_default_domain, is_static
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES, shape_op_value

#: Ops whose output size depends on the values of their inputs, not only on input shapes.
DATA_DEPENDENT_OPS = frozenset({"NonZero", "Unique", "Compress", "NonMaxSuppression", "StringSplit", "RegexFullMatch"})

#: For ops that take shape-like operands: the input positions whose *values* set the output shape.
SHAPE_OPERANDS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "ConstantOfShape": (0,),
    "Range": (0, 1, 2),
    "Tile": (1,),
    "Slice": (1, 2, 3, 4),
    "Pad": (1, 3),
    "Resize": (2, 3),
    "Upsample": (1,),
    "OneHot": (1,),
    "TopK": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Split": (1,),
    "ReduceSum": (1,),
    "ReduceMean": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "ReduceProd": (1,),
    "ReduceL1": (1,),
    "ReduceL2": (1,),
    "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,),
    "ReduceSumSquare": (1,),
    "CenterCropPad": (1,),
    "GridSample": (1,),
}

#: How many stopping nodes one leftover entry names at most.
MAX_ORIGINS = 3


@dataclass(frozen=True)
class _Flow:
    """What a tensor inherits from its ancestors: dynamic input dims, and stopping nodes."""

    inputs: frozenset[tuple[str, int | None, str]] = frozenset()
    origins: tuple[str, ...] = ()


def dynamic_tensors(model: Model) -> list[dict[str, Any]]:
    """Every tensor of the main graph whose shape is not static, with why (see module doc).

    Uses the shapes annotated on the graph: run :func:`~mapc.ir.infer_shapes` first.
    """
    return dynamic_tensors_in(model.graph)


def dynamic_tensors_in(graph: gs.Graph) -> list[dict[str, Any]]:
    """:func:`dynamic_tensors` of a graph whose shapes are annotated (a target's model view)."""
    flows: dict[int, _Flow] = {}
    why: dict[str, dict[str, str]] = {}
    leftovers: list[dict[str, Any]] = []
    for tensor in graph.inputs:
        if isinstance(tensor, gs.Constant):
            continue
        flows[id(tensor)] = _Flow(frozenset(_dynamic_input_dims(tensor)))
        if not is_static(tensor.shape):
            leftovers.append(_entry(tensor, flows[id(tensor)], why, producer="graph input"))
    for node in graph.nodes:
        read = _read_tensors(node)
        inherited = [flows.get(id(t), _Flow()) for t in read]
        dims = frozenset().union(*(flow.inputs for flow in inherited))
        dynamic_reads = [flow for t, flow in zip(read, inherited) if not _has_static_shape(t)]
        origins = _merge_origins(flow.origins for flow in dynamic_reads)
        outputs = [t for t in node.outputs if not t.is_empty()]
        if any(not is_static(t.shape) for t in outputs) and (_intrinsic_stop(node) or not (dynamic_reads or dims)):
            name = node.name or f"{node.op}->{outputs[0].name}"
            why[name] = {"node": name, "op": node.op, "reason": _stop_reason(node)}
            origins = (name,)
        for tensor in outputs:
            flow = _Flow(dims, origins if not is_static(tensor.shape) else ())
            flows[id(tensor)] = flow
            if not is_static(tensor.shape):
                leftovers.append(_entry(tensor, flow, why, producer=f"{node.op} {node.name}".strip()))
    return leftovers


def summarize_leftovers(leftovers: list[dict[str, Any]]) -> str:
    """One line: how many tensors are dynamic, and the main reasons."""
    if not leftovers:
        return "every tensor has a static shape"
    dims = sorted({d for entry in leftovers for d in entry["depends_on"]})
    stops = sorted({f"{s['op']} {s['node']!r} ({s['reason']})" for entry in leftovers for s in entry["stopped_at"]})
    parts = [f"{len(leftovers)} tensor(s) still have dynamic shapes, e.g. {leftovers[0]['tensor']!r} {leftovers[0]['shape']}"]
    if dims:
        parts.append("they depend on unfixed input dims " + ", ".join(dims))
    if stops:
        parts.append("shape inference stopped at " + "; ".join(stops[:MAX_ORIGINS]) + (" ..." if len(stops) > MAX_ORIGINS else ""))
    return "; ".join(parts)


def inputs_static(graph: gs.Graph) -> bool:
    """Every graph input (initializers aside) has a static shape: fixing shapes is done."""
    return all(is_static(t.shape) for t in graph.inputs if not isinstance(t, gs.Constant))


#: The fix once the input shapes are static but their arithmetic has not been folded yet.
FOLD_FIX = "fold the shape arithmetic first (fold-constants): the input shapes are already static"


def shapes_fix(graph: gs.Graph, fix: str) -> str | None:
    """A fix hint about shapes that never asks for what is done: ``fix`` (give input shapes, run
    fix-shapes and fold-constants) while a graph input still has a dynamic dim. Once every input
    is static: :data:`FOLD_FIX` while a Shape/Size of a static tensor is left to fold (a pipeline
    without fold-constants); else where shape inference stops (at most :data:`MAX_ORIGINS`
    causes), or None when nothing stops it (the shapes are known: the cause lies elsewhere)."""
    if not inputs_static(graph):
        return fix
    if any(shape_op_value(node) is not None for node in graph.nodes):
        return FOLD_FIX
    stops: dict[str, dict[str, str]] = {}
    for entry in dynamic_tensors_in(graph):
        for stop in entry["stopped_at"]:
            stops.setdefault(stop["node"], stop)
    if not stops:
        return None
    where = "; ".join(f"{s['op']} {s['node']!r}: {s['reason']}" for s in list(stops.values())[:MAX_ORIGINS])
    return f"the input shapes are already static; shape inference stops at {where}"


def leftover_notes(leftovers: list[dict[str, Any]], severity: str = "warning") -> list[Note]:
    """Notes grouped by cause: one per unfixed input dim, one per node where inference stopped."""
    notes: list[Note] = []
    by_dim: dict[str, int] = {}
    by_stop: dict[str, tuple[dict[str, str], int]] = {}
    for entry in leftovers:
        for dim in entry["depends_on"]:
            by_dim[dim] = by_dim.get(dim, 0) + 1
        for stop in entry["stopped_at"]:
            previous = by_stop.get(stop["node"], (stop, 0))
            by_stop[stop["node"]] = (stop, previous[1] + 1)
    for dim, count in sorted(by_dim.items()):
        notes.append(Note("check-static.input-dim", f"input dim {dim} is not fixed; {count} tensor(s) depend on it",
                          fix="fix it with --input-shape or --dim", severity=severity))  # type: ignore[arg-type]
    for name, (stop, count) in sorted(by_stop.items()):
        notes.append(Note("check-static.inference-stopped", f"{stop['op']}: {stop['reason']}; {count} tensor(s) stay dynamic",
                          node=name, severity=severity))  # type: ignore[arg-type]
    return notes


@register_pass
class CheckStatic(Pass):
    """Report every tensor whose shape is still dynamic; with ``require``, fail if there is one.

    Matches nothing and changes nothing. Re-infers shapes, then lists each dynamic tensor with the
    graph-input dims it depends on and the node where shape inference stopped (details
    ``dynamic``), and adds one warning per cause. With ``require=true`` (``--require-static``) any
    leftover raises a check failure (exit code 1) naming the first tensor and the causes.
    """

    name = "check-static"
    requires = (SHAPES,)

    @dataclass
    class Options:
        #: Fail (exit code 1) unless every tensor has a static shape.
        require: bool = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        leftovers = dynamic_tensors(model)
        if leftovers and self.options.require:
            raise CheckFailed(f"--require-static: {summarize_leftovers(leftovers)}")
        return PassResult(changed=False, notes=leftover_notes(leftovers), details={"dynamic": leftovers},
                          counters={"dynamic_tensors": len(leftovers)})


# -- helpers ----------------------------------------------------------------------------------------


def _dynamic_input_dims(tensor: gs.Tensor) -> Iterable[tuple[str, int | None, str]]:
    if tensor.shape is None:
        yield (tensor.name, None, "unknown rank")
        return
    for axis, dim in enumerate(tensor.shape):
        if not (isinstance(dim, (int, np.integer)) and dim >= 0):
            yield (tensor.name, axis, str(dim) if isinstance(dim, str) else "?")


def _entry(tensor: gs.Tensor, flow: _Flow, why: dict[str, dict[str, str]], producer: str) -> dict[str, Any]:
    shape = None if tensor.shape is None else [d if isinstance(d, (int, np.integer)) and d >= 0 else (d if isinstance(d, str) else "?") for d in tensor.shape]
    return {
        "tensor": tensor.name,
        "shape": shape,
        "producer": producer,
        "depends_on": sorted(_describe_dim(d) for d in flow.inputs),
        "stopped_at": [why[name] for name in flow.origins if name in why],
    }


def _describe_dim(dim: tuple[str, int | None, str]) -> str:
    name, axis, label = dim
    return f"{name} (unknown rank)" if axis is None else f"{name}[{axis}] ({label})"


def _has_static_shape(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Constant) or tensor.is_empty() or is_static(tensor.shape)


def _merge_origins(groups: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    merged: list[str] = []
    for group in groups:
        for name in group:
            if name not in merged:
                merged.append(name)
    return tuple(merged[:MAX_ORIGINS])


def _read_tensors(node: gs.Node) -> list[gs.Tensor]:
    tensors = [t for t in node.inputs if not t.is_empty()]
    for subgraph in node.subgraphs():
        tensors.extend(subgraph._foreign_tensors().values())
    return tensors


def _intrinsic_stop(node: gs.Node) -> bool:
    """Ops that stop shape inference whatever their inputs: custom, control flow, data-dependent."""
    return not is_default_domain(node) or node.op in DATA_DEPENDENT_OPS or any(True for _ in node.subgraphs())


def _stop_reason(node: gs.Node) -> str:
    if not is_default_domain(node):
        return f"onnx has no shape inference for custom op {node.domain}::{node.op}"
    if any(True for _ in node.subgraphs()):
        return "control flow: shape inference does not see through its subgraphs"
    if node.op in DATA_DEPENDENT_OPS:
        return "its output size depends on input values"
    for position in SHAPE_OPERANDS.get(node.op, ()):
        if position < len(node.inputs) and not node.inputs[position].is_empty() and constant_value(node.inputs[position]) is None:
            operand = node.inputs[position]
            return f"its shape operand {operand.name!r} (input {position}) is computed at run time"
    return "onnx shape inference found no static output shape"
