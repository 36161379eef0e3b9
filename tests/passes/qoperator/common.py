"""Helpers shared by the qoperator-to-qdq tests: build one-op QOperator models, convert them, and
compare the QDQ model with the QOperator one in onnxruntime.

The tolerance, and why. An integer kernel (QLinearConv, QLinearMatMul, onnxruntime's QLinear*)
accumulates exactly in int32 and rounds once when it requantizes; the QDQ form computes the same
real number in float32 and rounds in QuantizeLinear. The two codes differ only when the exact
result lies within float32 rounding of a half step, and then by one: so every 8-bit output code
must agree within 1, and almost all exactly (at least 99% here: a wrong scale, zero point or
rounding mode moves far more than 1% of the codes). A float output that a DequantizeLinear with
scale ``s`` produces is held to ``s`` (one step); integer outputs of MatMulInteger/ConvInteger
must be identical (the rewrite is exact there); other float outputs (the dynamic quantizer's
float chain) to mapc's float32 tolerance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import Model, check_valid, compare_outputs, constant_value, load, producer, run
from mapc.passes import PassContext, PassManager, PassRecord

PASS = "qoperator-to-qdq"
#: Fraction of 8-bit codes that must agree exactly (the rest within one step).
EXACT_SHARE = 0.99


def convert(proto: onnx.ModelProto, pipeline: str = PASS) -> tuple[Model, PassRecord]:
    """Run the pass; check the result is valid, idempotent and deterministic; return it and its record."""
    model = load(proto)
    records = PassManager(pipeline).run(model, PassContext())
    check_valid(model)
    first = model.to_proto().SerializeToString(deterministic=True)
    again = load(proto)
    PassManager(pipeline).run(again, PassContext())
    assert again.to_proto().SerializeToString(deterministic=True) == first, "not deterministic"
    assert not any(record.changed for record in PassManager(pipeline).run(model, PassContext())), "not idempotent"
    return model, records[-1]


def code_samples(proto: onnx.ModelProto, count: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` feeds: 8-bit inputs over their whole range, float inputs normal at scales 1, 1e-3, 1e3, 10."""
    rng = np.random.default_rng(seed)
    scales = [1.0, 1e-3, 1e3, 10.0]
    samples = []
    for index in range(count):
        feeds = {}
        for value in proto.graph.input:
            dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
            shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
            if dtype.kind in "iu":
                info = np.iinfo(dtype)
                feeds[value.name] = rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
            else:
                feeds[value.name] = (rng.standard_normal(shape) * scales[index % len(scales)]).astype(dtype)
        samples.append(feeds)
    return samples


def assert_matches(reference: onnx.ModelProto, converted: Model, samples: Sequence[Mapping[str, np.ndarray]],
                   exact_share: float = EXACT_SHARE) -> dict[str, float]:
    """Outputs agree as the module doc says, on every sample, with at least ``exact_share`` of
    the 8-bit codes identical; returns that share per output."""
    original = load(reference)
    steps = _dequantize_steps(original)
    shares: dict[str, list[float]] = {}
    for feeds in samples:
        expected, actual = run(original, feeds), run(converted, feeds)
        for name, want in expected.items():
            got = actual[name]
            assert got.dtype == want.dtype and got.shape == want.shape, name
            if want.dtype.kind in "iu" and want.dtype.itemsize == 1:
                codes = np.abs(want.astype(np.int64) - got.astype(np.int64))
                assert codes.max(initial=0) <= 1, f"{name}: codes differ by {codes.max()}"
                shares.setdefault(name, []).append(float(np.mean(codes == 0)))
            elif want.dtype.kind in "iu":
                np.testing.assert_array_equal(got, want, err_msg=name)
            elif name in steps:
                error = np.abs(want.astype(np.float64) - got.astype(np.float64)).max(initial=0)
                assert error <= steps[name] * (1 + 1e-5), f"{name}: {error} exceeds one step {steps[name]}"
                shares.setdefault(name, []).append(float(np.mean(want == got)))
            else:
                (comparison,) = compare_outputs({name: want}, {name: got})
                assert comparison.ok, f"{name}: {comparison.problem}"
    result = {name: float(np.mean(values)) for name, values in shares.items()}
    for name, share in result.items():
        assert share >= exact_share, f"{name}: only {share:.2%} of the codes agree exactly"
    return result


def _dequantize_steps(model: Model) -> dict[str, float]:
    """Graph outputs computed by a per-tensor DequantizeLinear with a constant scale: that scale."""
    steps = {}
    for output in model.graph.outputs:
        source = producer(output)
        if source is not None and source.op == "DequantizeLinear":
            scale = constant_value(source.inputs[1])
            if scale is not None and scale.size == 1:
                steps[output.name] = float(scale.reshape(()))
    return steps


def ops(model: Model) -> Counter:
    return Counter(node.op for node in model.graph.nodes)


def misses(record: PassRecord, rule: str | None = None) -> list[dict]:
    return [miss for name, report in record.details["rules"].items() if rule in (None, name) for miss in report["near_misses"]]


# -- building one-op models ---------------------------------------------------------------------------

ONNX_TYPE = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8, np.dtype(np.int32): TensorProto.INT32,
             np.dtype(np.float32): TensorProto.FLOAT}


class OneOp:
    """A model around one node: graph inputs, constant initializers, one or more outputs."""

    def __init__(self, opset: int = 17) -> None:
        self.inputs: list[onnx.ValueInfoProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.nodes: list[onnx.NodeProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.opset = opset

    def input(self, name: str, dtype: np.dtype, shape: Sequence[int]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, ONNX_TYPE[np.dtype(dtype)], list(shape)))
        return name

    def const(self, name: str, value: np.ndarray | float | int, dtype: np.dtype | type) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], domain: str = "", **attrs) -> None:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), domain=domain or None, **attrs))

    def output(self, name: str, dtype: np.dtype, shape: Sequence[int] | None = None) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, ONNX_TYPE[np.dtype(dtype)], None if shape is None else list(shape)))

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "qoperator", self.inputs, self.outputs, self.inits)
        opsets = [helper.make_opsetid("", self.opset), helper.make_opsetid("com.microsoft", 1)]
        model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
        return model


def quant_params(rng: np.random.Generator, dtype: np.dtype, channels: int | None = None, symmetric: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A realistic scale and a zero point near the middle of the range (one per channel when ``channels``)."""
    shape = () if channels is None else (channels,)
    scale = (rng.uniform(0.5, 2.0, size=shape) * 10.0 ** rng.uniform(-3, -1, size=shape)).astype(np.float32)
    info = np.iinfo(dtype)
    if symmetric:
        zero = np.zeros(shape, dtype)
    else:
        middle = (int(info.min) + int(info.max) + 1) // 2
        zero = rng.integers(middle - 12, middle + 12, size=shape).astype(dtype)
    return scale, zero


def codes(rng: np.random.Generator, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=tuple(shape)).astype(dtype)
