"""``fix-shapes``: give graph inputs the static shapes an NPU needs, and propagate them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import MAX_DIM, Model, UsageError, check_tensor_sizes, evaluate_dim, infer_shapes, solve_dim, symbols_of
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.check_static import dynamic_tensors
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import remember_shapes, replace_shape_ops, shapes_are_current

Dim = int | str | None


@register_pass
class FixShapes(Pass):
    """Fix graph input shapes and symbolic dims, re-infer every shape, replace Shape/Size by constants.

    Takes input shapes by input name (``input_shapes``, CLI ``--input-shape input_ids:1,128``) and
    symbolic dims by name (``dims``, CLI ``--dim batch_size=1``); options left empty are taken from
    the compile (``mapc.compile(input_shapes=..., dims=...)``). A shape given for one input also
    fixes the symbols it names elsewhere (``attention_mask[batch_size, sequence_length]`` follows
    ``input_ids:1,128``). Dims written as expressions (``past_sequence_length + sequence_length``,
    ``2*s0``) are evaluated from the fixed symbols, and a single unknown symbol of an affine
    expression is solved for from a given input shape.

    Produces: graph inputs and outputs with the fixed dims; stale intermediate shapes cleared and
    re-inferred by onnx (with data propagation); every ``Shape``/``Size`` whose dims are now known
    replaced by an initializer. Details ``dims`` (the symbol values used) and ``dynamic`` (every
    tensor still dynamic, the input dims it depends on and the op where inference stopped).
    Run it before ``fold-constants``, which settles the shape arithmetic the fixed inputs
    determine in one sweep (``dynamic_tensors`` here counts before that); ``check-static`` then
    reports what is left.

    Errors (exit code 2): an input name the model does not have, a shape of the wrong rank, a
    dim that contradicts a static dim of the model, one symbol given two different values, a
    dim above 2^40, an inferred tensor larger than half the machine's memory.
    """

    name = "fix-shapes"

    @dataclass
    class Options:
        #: Shapes of graph inputs by name, e.g. ``["input_ids:1,128"]``.
        input_shapes: dict[str, list[int]] = field(default_factory=dict)
        #: Values of symbolic dims by name, e.g. ``[batch_size=1]``.
        dims: dict[str, int] = field(default_factory=dict)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        shapes = {**ctx.input_shapes, **self.options.input_shapes}
        dims = {**ctx.dims, **self.options.dims}
        if not shapes and not dims:
            note = Note("fix-shapes.nothing", "no input shapes or dims were given; nothing to fix",
                        fix="give --input-shape NAME:D1,D2 or --dim NAME=VALUE")
            return PassResult(changed=False, notes=[note])
        values = resolve_dims(model.graph, shapes, dims)
        inputs_fixed = _fix_inputs(model.graph, shapes, values)
        notes: list[Note] = []
        outputs_fixed = 0 if shapes_are_current(model, ctx) else _infer_with_outputs(model, ctx, values, notes)
        check_tensor_sizes(model.graph.tensors().values(), "the fixed shapes")
        replaced = replace_shape_ops(model)
        leftovers = dynamic_tensors(model)
        counters = {"inputs_fixed": inputs_fixed, "outputs_fixed": outputs_fixed, "shape_ops_replaced": replaced, "dynamic_tensors": len(leftovers)}
        details: dict[str, Any] = {"dims": dict(sorted(values.items())), "dynamic": leftovers}
        return PassResult(changed=bool(inputs_fixed or outputs_fixed or replaced), counters=counters, notes=notes, details=details)


def _infer_with_outputs(model: Model, ctx: PassContext, values: Mapping[str, int], notes: list[Note]) -> int:
    """Re-infer every shape; graph outputs take the inferred static dims, elsewhere their declared
    dims with fixed symbols substituted. An output that is an initializer keeps its own shape.
    Returns how many outputs changed."""
    outputs = [t for t in model.graph.outputs if not isinstance(t, gs.Constant)]
    declared = {id(t): _substitute(t.shape, values) for t in outputs}
    before = {id(t): None if t.shape is None else list(t.shape) for t in outputs}
    for tensor in outputs:
        tensor.shape = None  # a stale declared dim must not conflict with what inference finds
    ok = infer_shapes(model, forget_existing=True)
    if not ok:
        notes.append(Note("fix-shapes.inference-failed", "onnx shape inference failed on this model; shapes are only fixed at the inputs and outputs", severity="warning"))
    changed = 0
    for tensor in outputs:
        tensor.shape, conflict = _merge_output(declared[id(tensor)], tensor.shape)
        if conflict:
            notes.append(Note("fix-shapes.output-conflict", f"output {tensor.name!r} was declared {conflict[0]} but infers as {conflict[1]}; using the inferred shape", severity="warning"))
        changed += tensor.shape != before[id(tensor)]
    remember_shapes(model, ctx, ok)
    return changed


def resolve_dims(graph: gs.Graph, shapes: Mapping[str, Sequence[int]], dims: Mapping[str, int]) -> dict[str, int]:
    """Symbol values implied by ``dims`` and the given input ``shapes``; :class:`UsageError` on a
    request that names no input or dim, or contradicts the model or itself."""
    inputs = {t.name: t for t in graph.inputs}
    values: dict[str, int] = {}
    source: dict[str, str] = {}
    for name, value in dims.items():
        values[name] = _dim_value(value, f"--dim {name}")
        source[name] = f"--dim {name}={values[name]}"
    pending: list[tuple[str, int, str]] = []
    for name, shape in shapes.items():
        tensor = inputs.get(name)
        if tensor is None or isinstance(tensor, gs.Constant):
            real = ", ".join(t.name for t in graph.inputs if not isinstance(t, gs.Constant)) or "none"
            what = "an initializer, not an input" if tensor is not None else "not an input of the model"
            raise UsageError(f"--input-shape {name}: {name!r} is {what} (inputs: {real})")
        given = [_dim_value(d, f"--input-shape {name}") for d in shape]
        declared = tensor.shape
        if declared is not None and len(declared) != len(given):
            raise UsageError(f"--input-shape {name}: the model's input {name!r} has {len(declared)} dims {_show(declared)}, not {len(given)}")
        for axis, (dim, size) in enumerate(zip(declared or [None] * len(given), given)):
            if isinstance(dim, (int, np.integer)) and dim >= 0 and dim != size:
                raise UsageError(f"--input-shape {name}:{','.join(map(str, given))} contradicts the model: dim {axis} of {name!r} is {dim}")
            if isinstance(dim, str):
                pending.append((dim, size, f"{name}[{axis}]"))
    progress = True
    while progress:
        progress = False
        for dim, size, where in pending:
            current = evaluate_dim(dim, values)
            if current is not None:
                if current != size:
                    origin = ", ".join(sorted({source[s] for s in symbols_of(dim) if s in source})) or "the other dims"
                    raise UsageError(f"dim {dim!r} is {size} in input {where} but {current} from {origin}")
                continue
            solved = solve_dim(dim, size, values)
            for symbol, value in solved.items():
                values[symbol] = value
                source[symbol] = f"input {where}"
                progress = True
    return values


def check_dim_names(graph: gs.Graph, dims: Mapping[str, int]) -> None:
    """:class:`UsageError` for a dim name that occurs in no input or output dim (a typo).

    Checked once on the model as given (``mapc.compile`` does it), not by the pass itself: after
    a first round the fixed names are gone from the graph.
    """
    named = {symbol for t in [*graph.inputs, *graph.outputs] for d in (t.shape or []) if isinstance(d, str) for symbol in symbols_of(d)}
    unknown = sorted(set(dims) - named)
    if unknown:
        known = ", ".join(sorted(named)) or "none"
        raise UsageError(f"--dim {unknown[0]}: no input or output dim is named {unknown[0]!r} (named dims: {known})")


def check_input_sizes(graph: gs.Graph, shapes: Mapping[str, Sequence[int]], dims: Mapping[str, int]) -> None:
    """:class:`UsageError` before any work when the requested shapes make a graph input larger
    than mapc lets a tensor be (:func:`~mapc.ir.check_tensor_sizes`); fix-shapes checks every
    inferred tensor the same way."""
    if not shapes and not dims:
        return
    values = resolve_dims(graph, shapes, dims)
    fixed = []
    for tensor in graph.inputs:
        if not isinstance(tensor, gs.Constant):
            shape = [int(d) for d in shapes[tensor.name]] if tensor.name in shapes else _substitute(tensor.shape, values)
            fixed.append(gs.Variable(tensor.name, dtype=tensor.dtype, shape=shape))
    check_tensor_sizes(fixed, "--input-shape/--dim")


def _fix_inputs(graph: gs.Graph, shapes: Mapping[str, Sequence[int]], values: Mapping[str, int]) -> int:
    fixed = 0
    for tensor in graph.inputs:
        if isinstance(tensor, gs.Constant):
            continue
        shape = [int(d) for d in shapes[tensor.name]] if tensor.name in shapes else _substitute(tensor.shape, values)
        if shape != (None if tensor.shape is None else list(tensor.shape)):
            tensor.shape = shape
            fixed += 1
    return fixed


def _substitute(shape: Sequence[Dim] | None, values: Mapping[str, int]) -> list[Dim] | None:
    if shape is None:
        return None
    result: list[Dim] = []
    for dim in shape:
        value = evaluate_dim(dim, values) if isinstance(dim, str) else None
        result.append(value if value is not None else (int(dim) if isinstance(dim, (int, np.integer)) else dim))
    return result


def _merge_output(declared: list[Dim] | None, inferred: list[Dim] | None) -> tuple[list[Dim] | None, tuple[Any, Any] | None]:
    """Inferred static dims win; elsewhere keep the declared dim (a name or a number)."""
    if inferred is None or (declared is not None and len(declared) != len(inferred)):
        if inferred is not None and declared is not None:
            return inferred, (_show(declared), _show(inferred))
        return (declared if inferred is None else inferred), None
    if declared is None:
        return inferred, None
    merged: list[Dim] = []
    conflict = None
    for old, new in zip(declared, inferred):
        if isinstance(new, int):
            if isinstance(old, int) and old != new:
                conflict = (_show(declared), _show(inferred))
            merged.append(new)
        elif old is not None and not (isinstance(old, str) and old.startswith("unk__")):
            merged.append(old)
        else:
            merged.append(new)
    return merged, conflict


def _dim_value(value: Any, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {value!r} is not a whole number") from None
    if number < 0 or number != value and not isinstance(value, str):
        raise UsageError(f"{where}: {value!r} is not a dim size (a whole number >= 0)")
    if number > MAX_DIM:
        raise UsageError(f"{where}: {value!r} is not a plausible dim size (at most {MAX_DIM})")
    return number


def _show(shape: Sequence[Dim] | None) -> str:
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
