"""The onnx checker, with its strict type and shape inference, on a weight-free skeleton.

:func:`check_onnx` is the last load-time check (:mod:`mapc.ir.validate`) and the check every
compiled model passes before it is written. The skeleton (:func:`checker_skeleton`) keeps the
checker from reading external weights or serializing large ones, types graph outputs declared
without a type or shape (onnxruntime runs such models), and hides default-domain ops onnx has no
schema for but onnxruntime runs (``ImageScaler``). onnx's strict inference also trips on some
valid models (function bodies it cannot infer), so its verdict stands only when onnxruntime
cannot load the skeleton either.
"""

from __future__ import annotations

import onnx
import onnx.checker
import onnx.defs
import onnx.shape_inference

from mapc.ir.errors import ModelError
from mapc.ir.external import tensor_nbytes, uses_external_data
from mapc.ir.runtime_limits import onnxruntime_loads


def check_onnx(proto: onnx.ModelProto) -> None:
    """:class:`ModelError` unless ``proto`` passes the onnx checker on its weight-free skeleton,
    then its ``full_check`` (strict type and shape inference: type mismatches, an invalid
    ``perm``). onnx's strict inference
    also trips on some valid models (function bodies it cannot infer), so a full-check failure
    refuses the model only when onnxruntime cannot load the skeleton either."""
    skeleton = checker_skeleton(proto)
    try:
        onnx.checker.check_model(skeleton)
        try:
            onnx.checker.check_model(skeleton, full_check=True)
        except _CHECKER_ERRORS:
            if not onnxruntime_loads(skeleton):
                raise
    except _CHECKER_ERRORS as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"invalid ONNX model: {first_line}") from None


_CHECKER_ERRORS = (onnx.checker.ValidationError, onnx.defs.SchemaError, onnx.shape_inference.InferenceError, ValueError)


#: In-file initializers above this many bytes are left out of what the onnx checker serializes.
CHECKER_INLINE_BYTES = 1 << 16


def checker_skeleton(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with external and large initializers turned into typed graph inputs, graph
    outputs declared without a type or shape typed by inference (or left out), and default-domain
    ops onnx does not know (but onnxruntime runs) moved to a domain the checker skips.

    The onnx checker resolves external files against the working directory, insists on data for
    every initializer, and serializes the whole model to check it (seconds for a large model);
    mapc has already validated the weights' bytes itself, so the skeleton lets the checker judge
    the rest without reading or copying any weight.
    """
    heavy = [t for t in proto.graph.initializer if uses_external_data(t) or tensor_nbytes(t) > CHECKER_INLINE_BYTES]
    untyped = [v for v in proto.graph.output if not _has_shape(v)]
    opset = next((e.version for e in proto.opset_import if e.domain in ("", "ai.onnx")), 0)
    unknown_to_onnx = [n for n in proto.graph.node if _unknown_to_onnx(n, opset)]
    if not heavy and not untyped and not unknown_to_onnx:
        return proto
    skeleton = onnx.ModelProto()
    _copy_fields(proto, skeleton, skip="graph")
    _copy_fields(proto.graph, skeleton.graph, skip="initializer")
    graph = proto.graph
    heavy_names = {t.name for t in heavy}
    skeleton.graph.initializer.extend(t for t in graph.initializer if t.name not in heavy_names)
    input_names = {v.name for v in skeleton.graph.input}
    for tensor in heavy:
        if tensor.name not in input_names:
            skeleton.graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
    if unknown_to_onnx:  # onnxruntime's own ops in the default domain: the checker skips a domain it does not know
        for node in skeleton.graph.node:
            if _unknown_to_onnx(node, opset):
                node.domain = RUNTIME_ONLY_DOMAIN
        skeleton.opset_import.add(domain=RUNTIME_ONLY_DOMAIN, version=1)
    if untyped:
        _type_outputs(skeleton)
    return skeleton


#: Where the skeleton puts default-domain ops onnx has no schema for (``ImageScaler``), which
#: validation let through because onnxruntime runs them; the checker would refuse or warn.
RUNTIME_ONLY_DOMAIN = "mapc.onnxruntime"


def _unknown_to_onnx(node: onnx.NodeProto, opset: int) -> bool:
    return node.domain in ("", "ai.onnx") and opset > 0 and not onnx.defs.has(node.op_type, opset)


def _has_shape(value: onnx.ValueInfoProto) -> bool:
    kind = value.type.WhichOneof("value")
    tensor = value.type.tensor_type
    return kind is not None and (kind != "tensor_type" or (tensor.elem_type != 0 and tensor.HasField("shape")))


def _type_outputs(skeleton: onnx.ModelProto) -> None:
    """Graph outputs declared without a type or shape (onnxruntime runs such models; the checker
    wants both) take what onnx infers; the checker skips those inference leaves unknown."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton)
    except _CHECKER_ERRORS:
        inferred = skeleton
    known = {v.name: v for v in [*inferred.graph.value_info, *inferred.graph.output] if _has_shape(v)}
    outputs = [known.get(v.name, v) for v in skeleton.graph.output]
    del skeleton.graph.output[:]
    skeleton.graph.output.extend(v for v in outputs if _has_shape(v))


def _copy_fields(source: object, target: object, *, skip: str) -> None:
    """Copy every set field of protobuf message ``source`` into ``target`` except ``skip``."""
    for field, value in source.ListFields():  # type: ignore[attr-defined]
        if field.name == skip:
            continue
        if hasattr(value, "extend"):
            getattr(target, field.name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
