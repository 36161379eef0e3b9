"""Helpers shared by the quantize tests: run the pass, check QDQ structure, measure SQNR."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

import mapc
from mapc.ir import Runner, load
from mapc.passes import PassContext
from mapc.passes.pipeline import PassManager, PassRecord
from mapc.passes.quantize.data import open_calibration

#: Integer range of each Q/DQ element type.
TYPE_RANGES = {
    onnx.TensorProto.UINT8: (0, 255),
    onnx.TensorProto.INT8: (-128, 127),
    onnx.TensorProto.UINT16: (0, 65535),
    onnx.TensorProto.INT16: (-32768, 32767),
    onnx.TensorProto.INT32: (-(2**31), 2**31 - 1),
    onnx.TensorProto.INT4: (-8, 7),
    onnx.TensorProto.UINT4: (0, 15),
}


def quantize(proto: onnx.ModelProto, **options) -> tuple[mapc.Model, PassRecord]:
    """Run the quantize pass (random calibration unless given) on a fresh load of ``proto``."""
    options = {"calibration": "random", "random_samples": 6, **options}
    model = load(proto)
    records = PassManager([("quantize", options)]).run(model, PassContext(seed=0))
    return model, records[0]


def structure_problems(proto: onnx.ModelProto) -> list[str]:
    """Everything wrong with the QDQ structure: scales not positive and finite, zero points out
    of range, per-axis parameters whose axis or length do not fit the tensor, or a weight's
    axis that is not the output-channel axis of the op reading it."""
    problems = []
    graph = proto.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, index))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*graph.value_info, *graph.input, *graph.output]}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale = values.get(node.input[1])
        if scale is None:
            problems.append(f"{node.name}: scale is not an initializer")
            continue
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            problems.append(f"{node.name}: scale not positive and finite: {scale.ravel()[:4]}")
        if len(node.input) > 2 and node.input[2] in values:
            zero_tensor = next(t for t in graph.initializer if t.name == node.input[2])
            low, high = TYPE_RANGES[zero_tensor.data_type]
            zero = values[node.input[2]].astype(np.int64)
            if zero.size and (zero.min() < low or zero.max() > high):
                problems.append(f"{node.name}: zero point outside [{low}, {high}]")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        data = values.get(node.input[0])
        shape = list(data.shape) if data is not None else shapes.get(node.input[0])
        if scale.ndim == 0 or scale.size == 1 and "axis" not in attrs:
            continue
        axis = attrs.get("axis", 1)
        if not shape:
            continue
        if not -len(shape) <= axis < len(shape):
            problems.append(f"{node.name}: axis {axis} out of range for rank {len(shape)}")
            continue
        axis %= len(shape)
        if "block_size" in attrs:
            blocks = -(-shape[axis] // attrs["block_size"])
            expected = list(shape)
            expected[axis] = blocks
            if list(scale.shape) != expected:
                problems.append(f"{node.name}: blocked scale shape {list(scale.shape)} != {expected}")
        elif scale.shape != (shape[axis],):
            problems.append(f"{node.name}: per-axis scale length {scale.shape} != dim {shape[axis]} of axis {axis}")
        if node.op_type == "DequantizeLinear" and data is not None and "block_size" not in attrs:
            for reader, index in readers.get(node.output[0], []):
                wrong = _wrong_weight_axis(reader, index, axis, shape)
                if wrong:
                    problems.append(f"{reader.op_type} {reader.name}: {wrong}")
    return problems


def _wrong_weight_axis(node: onnx.NodeProto, index: int, axis: int, shape: list[int]) -> str | None:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if index != 1:
        return None
    if node.op_type == "Conv" and axis != 0:
        return f"weight axis {axis}, expected 0"
    if node.op_type == "ConvTranspose":
        group = attrs.get("group", 1)
        allowed = {1} | ({0} if group > 1 and shape[0] == group else set())
        if axis not in allowed:
            return f"weight axis {axis}, expected {sorted(allowed)}"
    if node.op_type == "Gemm":
        expected = 0 if attrs.get("transB", 0) else 1
        if axis != expected:
            return f"weight axis {axis}, expected {expected} (transB={attrs.get('transB', 0)})"
    if node.op_type == "MatMul" and axis != len(shape) - 1:
        return f"weight axis {axis}, expected the last ({len(shape) - 1})"
    return None


def calibration_samples(proto: onnx.ModelProto, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """The samples ``calibration=random`` gives the pass (same seed and count)."""
    data = open_calibration("random", load(proto), seed=seed, random_samples=count)
    return [data.sample(i) for i in range(count)]


def sqnr_by_output(reference: onnx.ModelProto, quantized: mapc.Model, samples: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """SQNR (dB) of each float output of ``quantized`` against ``reference`` on ``samples``."""
    float_model = load(reference)
    expected_runner, actual_runner = Runner(float_model), Runner(quantized)
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    for feeds in samples:
        expected, actual = expected_runner.run(feeds), actual_runner.run(feeds)
        for name, value in expected.items():
            if value.dtype.kind != "f":
                continue
            a, b = value.astype(np.float64), actual[name].astype(np.float64)
            signal[name] = signal.get(name, 0.0) + float(np.sum(a * a))
            noise[name] = noise.get(name, 0.0) + float(np.sum((a - b) ** 2))
    return {name: (math.inf if noise[name] == 0 else 10 * math.log10(signal[name] / noise[name]) if signal[name] > 0 else -math.inf) for name in signal}


def ops(model: mapc.Model) -> list[str]:
    return [node.op for node in model.graph.nodes]


def dequantize_of(model: mapc.Model, tensor_reader_op: str, index: int = 1) -> list[dict]:
    """The DequantizeLinear nodes feeding input ``index`` of every ``tensor_reader_op`` node,
    with their axis, block size and scale/zero-point values."""
    found = []
    for node in model.graph.nodes:
        if node.op != tensor_reader_op or len(node.inputs) <= index:
            continue
        source = node.inputs[index].inputs[0] if node.inputs[index].inputs else None
        if source is None or source.op != "DequantizeLinear":
            continue
        found.append({
            "node": node,
            "axis": source.attrs.get("axis"),
            "block_size": source.attrs.get("block_size"),
            "codes": np.asarray(source.inputs[0].values),
            "scale": np.asarray(source.inputs[1].values),
            "zero_point": np.asarray(source.inputs[2].values) if len(source.inputs) > 2 else None,
            "domain": source.domain,
        })
    return found
