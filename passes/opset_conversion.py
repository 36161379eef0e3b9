"""Moving a model to a newer ai.onnx opset with onnx's version converter, checked by running it.

The one implementation behind both users of the converter:

* the ``upgrade-opset`` pass (:mod:`mapc.passes.upgrade_opset`) converts the whole model with
  :func:`convert_version` (model-local functions included) and :func:`raise_ir_version`, then checks it with :func:`first_difference` and fails loudly when it differs;
* ``quantize`` raises the opset a scheme needs with :func:`upgrade_verified`: the conversion
  runs on a weight-free skeleton (large weights never pass through the converter and are
  re-attached by name afterwards), the old and the new model run on one sample, and the new one
  is adopted only if the outputs agree within float tolerance; otherwise it returns the reason
  and leaves the model as it was. It never lowers an opset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import version_converter

from mapc.ir import SKELETON_INLINE_BYTES, Model, OnnxRuntimeError, OutputComparison, compare_outputs, remember_lost_parts, run


class ConversionError(Exception):
    """onnx's version converter refused the model; the message is the converter's first line."""


def convert_version(proto: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """``proto`` converted to ai.onnx ``version``, its model-local functions included
    (ConversionError if the converter refuses)."""
    try:
        converted = version_converter.convert_version(proto, version)
    except Exception as error:  # the converter raises RuntimeError/ValueError/C++ assertion text
        raise ConversionError(_first_line(error)) from None
    del converted.functions[:]  # the converter drops or keeps them unconverted, depending on the onnx release
    for function in proto.functions:
        body = onnx.FunctionProto()
        body.CopyFrom(function)
        _convert_function(body, version, converted.ir_version)
        converted.functions.append(body)
    return converted


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _convert_function(function: onnx.FunctionProto, version: int, ir_version: int) -> None:
    """Convert a local function's body in place: onnx's converter leaves functions at their old
    opset, which the onnx checker then refuses (and onnxruntime's QNN EP aborts on)."""
    imports = {entry.domain: entry.version for entry in function.opset_import}
    if imports.get("", version) >= version:
        return
    untyped = [onnx.helper.make_value_info(name, onnx.TypeProto()) for name in function.input]
    results = [onnx.helper.make_value_info(name, onnx.TypeProto()) for name in function.output]
    body = onnx.helper.make_model(
        onnx.helper.make_graph(list(function.node), function.name, untyped, results),
        opset_imports=list(function.opset_import), ir_version=ir_version,
    )
    try:
        converted = version_converter.convert_version(body, version)
    except Exception as error:
        raise ConversionError(f"local function {function.domain}::{function.name}: {_first_line(error)}") from None
    del function.node[:]
    function.node.extend(converted.graph.node)
    for entry in function.opset_import:
        if entry.domain == "":
            entry.version = version


def raise_ir_version(converted: onnx.ModelProto, *, at_least: int = 0) -> None:
    """Raise ``converted``'s IR version to what its opsets need (and to ``at_least``); a domain
    onnx does not know (a model-local function's, a vendor's) keeps what the converter wrote."""
    opsets = [onnx.helper.make_opsetid(d, v) for d, v in ((e.domain, e.version) for e in converted.opset_import)]
    try:
        minimum_ir = onnx.helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    except Exception:  # an opset onnx does not know: keep what the converter wrote
        minimum_ir = converted.ir_version
    converted.ir_version = max(converted.ir_version, at_least, minimum_ir)


def first_difference(comparisons: Sequence[OutputComparison]) -> OutputComparison | None:
    """The first output the converted model computes differently, or None."""
    return next((comparison for comparison in comparisons if not comparison.ok), None)


def upgrade_verified(model: Model, version: int, feeds: Mapping[str, np.ndarray]) -> str | None:
    """Convert ``model`` (in place) to ai.onnx ``version``; None on success, else the reason it
    was left unchanged."""
    if model.opset >= version:
        return None
    candidate = _converted_skeleton(model, version)
    if isinstance(candidate, str):
        return candidate
    try:
        expected = run(model, feeds)
        actual = run(candidate, feeds)
    except OnnxRuntimeError as error:
        _retire(candidate.graph)
        return f"the converted model does not run ({error})"
    difference = first_difference(compare_outputs(expected, actual))
    if difference is not None:
        _retire(candidate.graph)
        return f"the converted model computes {difference.name!r} differently ({difference.problem})"
    _retire(model.graph)
    model.graph = candidate.graph
    model.opset_imports = candidate.opset_imports
    model.ir_version = candidate.ir_version
    model.functions = candidate.functions
    model.forget_names()
    return None


def _converted_skeleton(model: Model, version: int) -> Model | str:
    """``model`` converted without passing its large weights through the converter (they are
    re-attached by name), or the converter's reason for refusing."""
    originals = {name: t for name, t in model.graph.tensors().items() if isinstance(t, gs.Constant)}
    skeleton = model.to_proto(weights_above=SKELETON_INLINE_BYTES)
    lifted = {value.name for value in skeleton.graph.input} & set(originals)
    try:
        converted = convert_version(skeleton, version)
    except ConversionError as error:
        return f"onnx's version converter cannot convert it ({error})"
    raise_ir_version(converted, at_least=model.ir_version)
    graph = gs.import_onnx(converted)
    graph.functions = []
    remember_lost_parts(converted.graph, graph)
    for name, tensor in list(graph.tensors().items()):
        original = originals.get(name)
        if original is None or original is tensor or not (isinstance(tensor, gs.Constant) or name in lifted):
            continue
        for node in list(tensor.outputs):
            for index, value in enumerate(node.inputs):
                if value is tensor:
                    node.inputs[index] = original
    graph.inputs = [t for t in graph.inputs if t.name not in lifted]
    header = onnx.ModelProto()
    header.CopyFrom(model._header)
    header.ir_version = converted.ir_version
    opset_imports = {("" if e.domain == "ai.onnx" else e.domain): e.version for e in converted.opset_import}
    return Model(
        graph,
        opset_imports=opset_imports,
        header=header,
        functions=list(converted.functions),
        base_dir=model.base_dir,
        source_path=model.source_path,
        external_values=model._external_values,
    )


def _retire(graph: gs.Graph) -> None:
    """Detach the old graph's nodes so shared weights no longer list them as readers."""
    for node in graph.nodes:
        node.inputs.clear()
        node.outputs.clear()
