"""Shape and type inference with onnx, keeping symbolic dimensions.

:func:`infer_shapes` runs ``onnx.shape_inference`` (with data propagation, so shape arithmetic
on constants is followed) on a weight-free skeleton of the model and writes the element type
and shape it finds onto every tensor of the graph. Named dims (``batch_size``) flow through;
dims onnx cannot name come back as ``unk__N``. Nothing is copied from the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx.defs
import onnx.shape_inference
import onnx_graphsurgeon as gs

from mapc.ir.model import Model

#: Initializers up to this size travel with the skeleton, so data propagation can read them.
SKELETON_INLINE_BYTES = 1 << 16

Dim = int | str | None


def infer_shapes(
    model: Model, *, forget_existing: bool = False, data_prop: bool = True
) -> bool:
    """Annotate every tensor of ``model.graph`` with the dtype and shape onnx infers (through
    onnxruntime's contrib ops too, with onnxruntime's symbolic shape inference).

    ``forget_existing`` first clears the shapes of intermediate tensors, so that inference starts
    afresh. Where fresh inference can only say "unknown" for a dim, the previous annotation
    survives if it is a *name* the exporter wrote (``batch``, ``s0``): a name is never folded
    into a constant, and it carries what onnx cannot rediscover (that two dims are the same),
    which fusion needs; a previous *number* does not (after ``fix-shapes`` changed the input
    shapes, old numbers are stale). Graph outputs keep a
    declared dim wherever inference knows less, and take the inferred shape where the declared
    one has another rank (a logits output declared as a scalar: onnxruntime merges leniently, QNN
    cannot size the op writing it). Returns False (leaving the model unchanged) if
    onnx's inference itself fails on this model.
    """
    before: dict[str, list[Dim]] = {}
    if forget_existing:
        before = {
            name: list(tensor.shape)
            for name, tensor in model.graph.tensors().items()
            if isinstance(tensor, gs.Variable) and tensor.shape is not None
        }
        forget_intermediate_shapes(model.graph)
    skeleton = model.to_proto(weights_above=SKELETON_INLINE_BYTES)
    for output in skeleton.graph.output:  # inferred afresh, then merged with the declaration below
        output.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, check_type=False, strict_mode=False, data_prop=data_prop)
    except Exception:  # onnx raises a variety of errors (InferenceError, RuntimeError, ...)
        return False
    values = [*inferred.graph.value_info, *inferred.graph.output]
    if any(_onnxruntime_op(node) for node in skeleton.graph.node):
        values = _through_contrib_ops(skeleton, values)
    tensors = model.graph.tensors()
    output_names = {t.name for t in model.graph.outputs}
    for value in values:
        tensor = tensors.get(value.name)
        if not isinstance(tensor, gs.Variable) or not value.type.HasField("tensor_type"):
            continue
        dtype, shape = type_dims(value.type.tensor_type)
        if dtype is not None:
            tensor.dtype = dtype
        if shape is not None:
            if value.name in output_names:
                shape = _merge(tensor.shape, shape)
            elif value.name in before:
                shape = _keep_known(before[value.name], shape)
            tensor.shape = shape
    return True


ORT_DOMAIN = "com.microsoft"


def _onnxruntime_op(node: onnx.NodeProto) -> bool:
    """Whether onnx's inference cannot know ``node`` but onnxruntime's may: a ``com.microsoft``
    op, or a default-domain op onnx has no schema for (``SimplifiedLayerNormalization``, which
    onnxruntime registers in the ai.onnx domain and its transformers optimizer writes there)."""
    return node.domain == ORT_DOMAIN or (node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type))


def _through_contrib_ops(skeleton: onnx.ModelProto, values: list[onnx.ValueInfoProto]) -> list[onnx.ValueInfoProto]:
    """``values`` (onnx's inference) with shapes through onnxruntime's contrib ops (Attention,
    SkipLayerNormalization, GroupQueryAttention...), which onnx's inference does not know, from
    onnxruntime's own symbolic shape inference, made for exactly this.

    Outputs it never sizes (the presents of a GroupQueryAttention without past) are left out of
    its run. When it then infers every tensor its result replaces onnx's; when it infers only
    some (an op it does not know) its results fill only what onnx left unknown. It is driven step by step rather than through its
    ``infer_shapes``, which on an incomplete result writes the model into the working directory
    (``sym_shape_infer_temp.onnx`` and a data file) and raises. onnx's values when it fails.
    """
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inference = SymbolicShapeInference(2**31 - 1, True, False, 0)  # int_max, auto_merge, guess_output_rank, verbose
        inference._preprocess(_without_unsizable_outputs(skeleton))
        complete = False
        while inference.run_:
            complete = inference._infer_impl()
        inference._update_output_from_vi()
        symbolic = [*inference.out_mp_.graph.value_info, *inference.out_mp_.graph.output]
    except Exception:  # its own asserts and KeyErrors on graphs it does not understand, or a changed API
        return values
    if complete:
        return symbolic
    known = {value.name for value in values if value.type.tensor_type.HasField("shape")}
    return values + [value for value in symbolic if value.name not in known and value.type.tensor_type.HasField("shape")]


def _without_unsizable_outputs(skeleton: onnx.ModelProto) -> onnx.ModelProto:
    """``skeleton`` without the outputs onnxruntime's inference never sizes, so that it goes on
    past their node: the present K/V of a GroupQueryAttention without past (their length is the
    run-time total_sequence_length). They stay unknown; the rest of the graph gets its shapes."""
    unsizable = {
        name
        for node in skeleton.graph.node
        if node.domain == ORT_DOMAIN and node.op_type == "GroupQueryAttention" and not (len(node.input) > 3 and node.input[3])
        for name in node.output[1:3]
        if name
    }
    if not unsizable:
        return skeleton
    copy = onnx.ModelProto()
    copy.CopyFrom(skeleton)
    for node in copy.graph.node:
        for index, name in enumerate(node.output):
            if name in unsizable:
                node.output[index] = ""
    kept = [output for output in copy.graph.output if output.name not in unsizable]
    del copy.graph.output[:]
    copy.graph.output.extend(kept)
    return copy


def forget_intermediate_shapes(graph: gs.Graph) -> None:
    """Clear dtype/shape of every tensor that is neither a graph input, output nor constant."""
    keep = {id(t) for t in graph.inputs} | {id(t) for t in graph.outputs}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and id(tensor) not in keep:
            tensor.dtype = None
            tensor.shape = None


def type_dims(tensor_type: onnx.TypeProto.Tensor) -> tuple[np.dtype | None, list[Dim] | None]:
    """The element type and dims of an onnx tensor type (a dim onnx leaves blank is None)."""
    dtype = None
    if tensor_type.elem_type:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    if not tensor_type.HasField("shape"):
        return dtype, None
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dtype, dims


def _merge(declared: Sequence[Dim] | None, inferred: list[Dim]) -> list[Dim]:
    if declared is None or len(declared) != len(inferred):
        return inferred
    merged: list[Dim] = []
    for old, new in zip(declared, inferred):
        weaker_new = new is None or (isinstance(new, str) and new.startswith("unk__"))
        merged.append(old if weaker_new and old is not None else new)
    return merged


def _is_name(dim: Dim) -> bool:
    """A dim named by the model's author (not onnx's ``unk__N`` placeholder)."""
    return isinstance(dim, str) and not dim.startswith("unk__")


def _keep_known(before: list[Dim], inferred: list[Dim]) -> list[Dim]:
    """``inferred``, with ``before``'s names where inference knows nothing."""
    if len(before) != len(inferred):
        return inferred
    kept = []
    for old, new in zip(before, inferred):
        unknown = new is None or (isinstance(new, str) and not _is_name(new))
        kept.append(old if unknown and _is_name(old) else new)
    return kept


def is_static_dim(dim: Dim) -> bool:
    """True for a dim that is a known non-negative integer."""
    return isinstance(dim, (int, np.integer)) and dim >= 0


def is_static(shape: Sequence[Dim] | None) -> bool:
    """True if ``shape`` is known and every dim is a non-negative integer."""
    return shape is not None and all(is_static_dim(d) for d in shape)


def known_shape(tensor: gs.Tensor) -> list[Dim] | None:
    """The annotated shape of ``tensor`` as a list (a constant's is always known), or None."""
    if isinstance(tensor, gs.Constant):
        return [int(d) for d in tensor.shape]
    return None if tensor.shape is None else list(tensor.shape)


def static_shape(tensor: gs.Tensor) -> tuple[int, ...] | None:
    """The shape of ``tensor`` if every dim is a known non-negative integer, else None."""
    shape = known_shape(tensor)
    return tuple(int(d) for d in shape) if is_static(shape) else None


def same_dtype(a: gs.Tensor, b: gs.Tensor) -> bool:
    """True if both tensors have a known element type and it is the same."""
    return a.dtype is not None and b.dtype is not None and np.dtype(a.dtype) == np.dtype(b.dtype)
