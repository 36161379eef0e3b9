"""Hypothesis: random small QOperator graphs convert to QDQ models that agree with onnxruntime's integer kernels.

A graph is one to three QOperator nodes, each reading graph inputs of random 8-bit types and
shapes, with random per-tensor or per-channel scales and zero points, biases and attributes.
Every 8-bit output must agree within one quantization step on two samples over the whole code
range; int32 outputs exactly; float outputs (QGemm without output scale, MatMulIntegerToFloat)
within float32 tolerance.
(Nodes are not chained: a one-step difference entering a later op is not bounded by one step of
that op's output, so chains are checked on real quantized models in test_models.py instead. The
share of identical codes is checked on realistic scales in the targeted tests: hypothesis'
round scale ratios make exact ties, where onnxruntime's kernels and QuantizeLinear may round
differently.)
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.passes.qoperator.common import OneOp, assert_matches, code_samples, convert, ops

TYPES = [np.dtype(np.uint8), np.dtype(np.int8)]
MS = "com.microsoft"
LEFT = {"QLinearConv", "QLinearMatMul", "QGemm", "MatMulInteger", "MatMulIntegerToFloat", "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
        "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSoftmax"}


def _scale(draw) -> np.float32:
    return np.float32(draw(st.floats(1e-3, 0.5)))


def _zero(draw, dtype: np.dtype, size: int | None = None) -> np.ndarray:
    info = np.iinfo(dtype)
    values = [draw(st.integers(int(info.min), int(info.max))) for _ in range(size or 1)]
    return np.asarray(values if size else values[0], dtype)


class _Graph:
    """Draws nodes into a :class:`OneOp`; each node gets fresh names with its index."""

    def __init__(self, draw, seed: int) -> None:
        self.draw = draw
        self.b = OneOp()
        self.rng = np.random.default_rng(seed)
        self.index = 0

    def name(self, base: str) -> str:
        return f"{base}{self.index}"

    def params(self, dtype: np.dtype, channels: int | None = None) -> tuple[str, str]:
        per_channel = channels is not None and self.draw(st.booleans())
        scale = np.asarray([_scale(self.draw) for _ in range(channels)], np.float32) if per_channel else _scale(self.draw)
        zero = _zero(self.draw, dtype, channels if per_channel else None)
        tag = f"{len(self.b.inits)}_{self.index}"
        return self.b.const(f"s{tag}", scale, np.float32), self.b.const(f"z{tag}", zero, dtype)

    def weight(self, dtype: np.dtype, shape: tuple[int, ...]) -> str:
        info = np.iinfo(dtype)
        return self.b.const(self.name("w"), self.rng.integers(info.min, int(info.max) + 1, size=shape), dtype)

    def pair(self) -> tuple[np.dtype, np.dtype]:
        """Activation and weight types onnxruntime's kernels take: uint8 with either, int8 with int8."""
        dtype = self.draw(st.sampled_from(TYPES))
        return dtype, (self.draw(st.sampled_from(TYPES)) if dtype == np.uint8 else dtype)

    def conv(self) -> None:
        draw, (dtype, w_type) = self.draw, self.pair()
        channels, out, size, kernel = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(3, 6)), draw(st.sampled_from([1, 3]))
        x = self.b.input(self.name("x"), dtype, [1, channels, size, size])
        inputs = [x, *self.params(dtype), self.weight(w_type, (out, channels, kernel, kernel)), *self.params(w_type, out), *self.params(dtype)]
        if draw(st.booleans()):
            inputs.append(self.b.const(self.name("bias"), self.rng.integers(-5000, 5000, size=out), np.int32))
        pad, stride = draw(st.integers(0, kernel // 2)), draw(st.integers(1, 2))
        self.b.node("QLinearConv", inputs, [self.name("y")], kernel_shape=[kernel, kernel], pads=[pad] * 4, strides=[stride, stride])
        self.b.output(self.name("y"), dtype)

    def matmul(self, op: str) -> None:
        draw, (dtype, b_type) = self.draw, self.pair()
        rows, k, n = draw(st.integers(1, 4)), draw(st.integers(1, 24)), draw(st.integers(1, 6))
        a = self.b.input(self.name("a"), dtype, [rows, k])
        trans = op == "QGemm" and draw(st.booleans())
        weight = self.weight(b_type, (n, k) if trans else (k, n))
        if op == "MatMulInteger":
            zeros = [self.b.const(self.name("az"), _zero(draw, dtype), dtype), self.params(b_type, n)[1]]
            self.b.node(op, [a, weight, *zeros], [self.name("y")])
            self.b.output(self.name("y"), np.dtype(np.int32))
            return
        if op == "MatMulIntegerToFloat":
            (a_scale, a_zero), (b_scale, b_zero) = self.params(dtype), self.params(b_type, n)
            self.b.node(op, [a, weight, a_scale, b_scale, a_zero, b_zero], [self.name("y")], domain=MS)
            self.b.output(self.name("y"), np.dtype(np.float32))
            return
        inputs = [a, *self.params(dtype), weight, *self.params(b_type, n)]
        if op == "QLinearMatMul":
            self.b.node(op, inputs + list(self.params(dtype)), [self.name("y")])
            self.b.output(self.name("y"), dtype)
            return
        quantized = draw(st.booleans())
        inputs.append(self.b.const(self.name("c"), self.rng.integers(-5000, 5000, size=n), np.int32) if draw(st.booleans()) else "")
        if quantized:
            inputs += list(self.params(dtype))
        self.b.node(op, inputs, [self.name("y")], domain=MS, transB=int(trans), alpha=draw(st.sampled_from([1.0, 0.5, 2.0])))
        self.b.output(self.name("y"), dtype if quantized else np.dtype(np.float32))

    def contrib(self, op: str) -> None:
        draw, dtype = self.draw, self.draw(st.sampled_from(TYPES))
        channels_last = op in ("QLinearAveragePool", "QLinearGlobalAveragePool") and draw(st.booleans())
        shape = [1, draw(st.integers(1, 3)), draw(st.integers(2, 5)), draw(st.integers(2, 5))]
        x = self.b.input(self.name("x"), dtype, [1, *shape[2:], shape[1]] if channels_last else shape)
        attrs: dict = {"channels_last": 1} if channels_last else {}
        if op in ("QLinearAdd", "QLinearMul"):
            other = self.b.input(self.name("b"), dtype, draw(st.sampled_from([shape, shape[1:], [shape[-1]], [1]])))
            inputs = [x, *self.params(dtype), other, *self.params(dtype), *self.params(dtype)]
        elif op == "QLinearConcat":
            other = self.b.input(self.name("b"), dtype, [1, draw(st.integers(1, 3)), *shape[2:]])
            inputs = [*self.params(dtype), x, *self.params(dtype), other, *self.params(dtype)]
            attrs = {"axis": 1}
        else:
            inputs = [x, *self.params(dtype), *self.params(dtype)]
            if op == "QLinearLeakyRelu":
                attrs = {"alpha": draw(st.floats(0.0, 0.5))}
            elif op == "QLinearAveragePool":
                attrs |= {"kernel_shape": [2, 2], "strides": [1, draw(st.integers(1, 2))], "count_include_pad": draw(st.integers(0, 1)),
                          "pads": [draw(st.integers(0, 1))] * 4}
            elif op == "QLinearSoftmax":
                attrs = {"axis": -1, "opset": draw(st.sampled_from([12, 13]))}
        self.b.node(op, inputs, [self.name("y")], domain=MS, **attrs)
        self.b.output(self.name("y"), dtype)

    def add(self, op: str) -> None:
        if op == "QLinearConv":
            self.conv()
        elif op in ("QLinearMatMul", "QGemm", "MatMulInteger", "MatMulIntegerToFloat"):
            self.matmul(op)
        else:
            self.contrib(op)
        self.index += 1


@st.composite
def qoperator_graphs(draw):
    graph = _Graph(draw, draw(st.integers(0, 2**16)))
    for op in draw(st.lists(st.sampled_from(sorted(LEFT)), min_size=1, max_size=3)):
        graph.add(op)
    return graph.b.model()


@settings(max_examples=60, deadline=None)
@given(qoperator_graphs())
def test_random_qoperator_graphs_agree_within_one_step(model):
    converted, record = convert(model)
    assert not LEFT & set(ops(converted)), record.details["rules"]
    assert_matches(model, converted, code_samples(model, count=2), exact_share=0.0)
