"""Test helpers for the mask passes: an fp16 cast, int8 fake quantization, fully-masked rows, SQNR.

Deliberately small and explicit, so what the tests measure is clear:

* :func:`to_fp16` stores every float tensor of a model in float16 (initializers, Constant and
  ConstantOfShape values, Cast targets, graph inputs and outputs). onnxruntime's CPU kernels then
  compute in float16 (LayerNormalization keeps its float32 ``stash_type``, as NPUs do), so
  finfo(float32).min becomes -inf exactly as on an fp16 device.
* :func:`fake_quantize` puts a per-tensor int8 QuantizeLinear/DequantizeLinear pair (min/max
  calibrated on the given inputs) after named tensors: what a static per-tensor quantizer does
  to the masked scores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import run

FLOAT = TensorProto.FLOAT
HALF = TensorProto.FLOAT16


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with float32 storage turned into float16 everywhere."""
    half = onnx.ModelProto()
    half.CopyFrom(model)
    graph = half.graph
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == FLOAT:
            graph.initializer[index].CopyFrom(_half_tensor(tensor))
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == FLOAT:
                attribute.t.CopyFrom(_half_tensor(attribute.t))
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == FLOAT:
                attribute.i = HALF
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == FLOAT:
            value.type.tensor_type.elem_type = HALF
    del graph.value_info[:]
    return half


def _half_tensor(tensor: TensorProto) -> TensorProto:
    values = numpy_helper.to_array(tensor)
    with np.errstate(over="ignore"):
        return numpy_helper.from_array(values.astype(np.float16), tensor.name)


def half_feeds(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in feeds.items()}


def fake_quantize(model: onnx.ModelProto, names: Iterable[str], feeds: Mapping[str, np.ndarray], bits: int = 8) -> tuple[onnx.ModelProto, dict[str, float]]:
    """``model`` with a per-tensor QDQ pair after each tensor in ``names``, calibrated by min/max
    over ``feeds``; returns the model and each tensor's scale (inf when the range is not finite)."""
    names = list(names)
    ranges = run(model, feeds, outputs=names)
    quantized = onnx.ModelProto()
    quantized.CopyFrom(model)
    graph = quantized.graph
    scales = {}
    low_q, high_q = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    for name in names:
        values = ranges[name].astype(np.float64)
        low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
        scale = (high - low) / (high_q - low_q)
        scales[name] = scale
        if not np.isfinite(scale) or scale == 0:
            scale_value, zero = np.float32(np.inf), 0
        else:
            scale_value = np.float32(scale)
            zero = int(np.clip(round(low_q - low / scale), low_q, high_q))
        renamed = f"{name}__float"
        for node in graph.node:
            for i, tensor in enumerate(node.output):
                if tensor == name:
                    node.output[i] = renamed
        graph.initializer.extend([
            numpy_helper.from_array(np.array(scale_value, np.float32), f"{name}__scale"),
            numpy_helper.from_array(np.array(zero, np.int8 if bits == 8 else np.int16), f"{name}__zero"),
        ])
        graph.node.extend([
            helper.make_node("QuantizeLinear", [renamed, f"{name}__scale", f"{name}__zero"], [f"{name}__q"]),
            helper.make_node("DequantizeLinear", [f"{name}__q", f"{name}__scale", f"{name}__zero"], [name]),
        ])
    del graph.value_info[:]
    _toposort(graph)
    return quantized, scales


def _toposort(graph: onnx.GraphProto) -> None:
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise AssertionError("cycle while inserting QDQ")
        for node in ready:
            ordered.append(node)
            known.update(node.output)
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def sqnr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    """10·log10(signal power / noise power); -inf when ``actual`` is not finite."""
    reference = reference.astype(np.float64)
    actual = actual.astype(np.float64)
    if not np.all(np.isfinite(actual)):
        return float("-inf")
    noise = np.sum((reference - actual) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference**2) / noise))


def padded_mask(batch: int, length: int, side: str, pads: Iterable[int], total: int | None = None) -> np.ndarray:
    """An int64 attention_mask [batch, total]: row b has pads[b] zeros on ``side``."""
    total = total or length
    mask = np.ones((batch, total), np.int64)
    for row, count in enumerate(pads):
        if count:
            if side == "left":
                mask[row, :count] = 0
            else:
                mask[row, total - count:] = 0
    return mask
