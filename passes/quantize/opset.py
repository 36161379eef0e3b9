"""Raising a model's opset so standard Q/DQ can express a scheme, checked by running it.

Per-axis Q/DQ needs opset 13; 16-bit and 4-bit types and ``DequantizeLinear(block_size)`` need
opset 21. :func:`upgrade_opset` converts with onnx's version converter on a weight-free skeleton
(large weights never pass through the converter and are re-attached by name afterwards), then
runs the old and the new model on one sample and adopts the new one only if the outputs agree
within float tolerance. It never lowers an opset.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import version_converter

from mapc.ir import Model, OnnxRuntimeError, run
from mapc.ir.compare import compare_outputs
from mapc.ir.gs_compat import remember_lost_parts
from mapc.ir.shapes import SKELETON_INLINE_BYTES


def upgrade_opset(model: Model, version: int, feeds: Mapping[str, np.ndarray]) -> str | None:
    """Convert ``model`` (in place) to ai.onnx ``version``; None on success, else the reason it
    was left unchanged."""
    if model.opset >= version:
        return None
    candidate = _converted(model, version)
    if isinstance(candidate, str):
        return candidate
    try:
        expected = run(model, feeds)
        actual = run(candidate, feeds)
    except OnnxRuntimeError as error:
        _retire(candidate.graph)
        return f"the converted model does not run ({error})"
    for comparison in compare_outputs(expected, actual):
        if not comparison.ok:
            _retire(candidate.graph)
            return f"the converted model computes {comparison.name!r} differently ({comparison.problem})"
    _retire(model.graph)
    model.graph = candidate.graph
    model.opset_imports = candidate.opset_imports
    model.ir_version = candidate.ir_version
    model.forget_names()
    return None


def _converted(model: Model, version: int) -> Model | str:
    originals = {name: t for name, t in model.graph.tensors().items() if isinstance(t, gs.Constant)}
    skeleton = model.to_proto(weights_above=SKELETON_INLINE_BYTES)
    lifted = {value.name for value in skeleton.graph.input} & set(originals)
    try:
        converted = version_converter.convert_version(skeleton, version)
    except Exception as error:  # the converter raises RuntimeError/ValueError/C++ assertion text
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"onnx's version converter cannot convert it ({text})"
    opsets = [onnx.helper.make_opsetid(d, v) for d, v in ((e.domain, e.version) for e in converted.opset_import)]
    try:
        minimum_ir = onnx.helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    except Exception:  # an opset onnx does not know: keep what the converter wrote
        minimum_ir = converted.ir_version
    converted.ir_version = max(converted.ir_version, model.ir_version, minimum_ir)
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
        functions=model.functions,
        base_dir=model.base_dir,
        source_path=model.source_path,
        external_values=model._external_values,
    )


def _retire(graph: gs.Graph) -> None:
    """Detach the old graph's nodes so shared weights no longer list them as readers."""
    for node in graph.nodes:
        node.inputs.clear()
        node.outputs.clear()
