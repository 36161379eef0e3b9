"""layer-norm and rms-norm: decomposed normalisations -> LayerNormalization / RMSNormalization."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from mapc.ir.compare import Tolerance

from .common import domains, fuse, misses, ops
from .graphs import Graph, NormSpec, layer_norm_model, rms_norm_model

FP16 = Tolerance(rtol=1e-2, atol=1e-3)


def only(model, op_type):
    (node,) = [n for n in model.graph.nodes if n.op == op_type]
    return node


@pytest.mark.parametrize("opset", [11, 13, 17, 18])
def test_layer_norm_fuses_with_scale_and_bias(opset):
    model, record = fuse(layer_norm_model(NormSpec(opset=opset, epsilon=1e-12)))
    node = only(model, "LayerNormalization")
    assert (node.domain or "") == ("" if opset >= 17 else "mapc")
    assert node.attrs["axis"] == -1 and node.attrs["epsilon"] == pytest.approx(1e-12)
    assert len(node.inputs) == 3 and record.counters["layer-norm"] == 1
    assert set(ops(model)) == {"LayerNormalization"}


def test_layer_norm_over_two_axes_without_affine_gets_a_unit_scale():
    model, _ = fuse(layer_norm_model(NormSpec(axes=2, affine=False, opset=18)))
    node = only(model, "LayerNormalization")
    assert node.attrs["axis"] == -2 and node.inputs[1].values.shape == (5, 16)
    assert np.all(node.inputs[1].values == 1) and len(node.inputs) == 2


def test_cast_sandwich_becomes_stash_type():
    model, _ = fuse(layer_norm_model(NormSpec(cast_sandwich=True, opset=18)), tolerance=FP16)
    node = only(model, "LayerNormalization")
    assert node.inputs[0].name == "x" and "stash_type" not in node.attrs  # computed in float32
    assert np.dtype(node.outputs[0].dtype) == np.float16


def test_fp16_layer_norm_centred_before_the_cast_is_one_layer_norm():
    """HF's fp16 LayerNorm: mean and centring in fp16, the variance in fp32: one
    LayerNormalization computing in fp32 (not an RMSNormalization of the centred input)."""
    model, record = fuse(layer_norm_model(NormSpec(cast_sandwich="centered", opset=18)), tolerance=FP16)
    node = only(model, "LayerNormalization")
    assert node.inputs[0].name == "x" and node.attrs.get("stash_type", 1) == TensorProto.FLOAT
    assert "RMSNormalization" not in ops(model) and set(ops(model)) == {"LayerNormalization"}


@pytest.mark.parametrize("inverse", ["reciprocal", "pow"])
def test_tf2onnx_batch_norm_formulation_is_a_layer_norm(inverse):
    """keras2onnx/tf2onnx: f = gamma * rsqrt(var + eps); x * f + (beta - mean * f)."""
    model, record = fuse(layer_norm_model(NormSpec(batch_norm_form=True, inverse=inverse, epsilon=1e-3, opset=17)))
    node = only(model, "LayerNormalization")
    assert node.inputs[0].name == "x" and len(node.inputs) == 3 and node.attrs["epsilon"] == pytest.approx(1e-3)
    assert set(ops(model)) == {"LayerNormalization"} and record.counters["layer-norm-tf"] == 1


def test_rms_norm_fuses_llama_style():
    spec = NormSpec(inverse="reciprocal", square="pow", bias=False, epsilon=1e-6)
    model, record = fuse(rms_norm_model(spec))
    node = only(model, "RMSNormalization")
    assert node.domain == "mapc" and record.details["functions"] == ["RMSNormalization"]
    model23, _ = fuse(rms_norm_model(replace(spec, opset=23)))
    assert (only(model23, "RMSNormalization").domain or "") == ""


def test_rms_norm_with_pow_minus_half():
    model, _ = fuse(rms_norm_model(NormSpec(inverse="pow", opset=23)))
    assert set(ops(model)) == {"RMSNormalization"}


def test_residual_add_after_the_norm_stays_outside():
    g = Graph(18)
    x = g.input("x", [2, 4, 8])
    mean = g.reduce_mean(x, [-1])
    centered = g.op("Sub", x, mean)
    variance = g.reduce_mean(g.op("Mul", centered, centered), [-1])
    normalized = g.op("Div", centered, g.op("Sqrt", g.op("Add", variance, g.const(np.float32(1e-5)))))
    g.output(g.op("Add", g.op("Mul", normalized, g.const(np.full(8, 2.0, np.float32))), x))
    model, record = fuse(g.build())
    assert ops(model) == {"LayerNormalization": 1, "Add": 1} and misses(record) == []


def test_reductions_over_different_axes_are_a_near_miss():
    g = Graph(18)
    x = g.input("x", [2, 4, 8])
    centered = g.op("Sub", x, g.reduce_mean(x, [-1]))
    variance = g.reduce_mean(g.op("Mul", centered, centered), [-2, -1])
    g.output(g.op("Div", centered, g.op("Sqrt", g.op("Add", variance, g.const(np.float32(1e-5))))))
    model, record = fuse(g.build())
    assert [m["code"] for m in misses(record, "layer-norm")] == ["axes"]
    assert "LayerNormalization" not in ops(model)


def test_cast_to_another_type_without_a_sandwich_is_a_near_miss():
    g = Graph(18)
    x = g.input("x", [2, 8])
    ms = g.reduce_mean(g.op("Mul", x, x), [-1])
    normalized = g.op("Div", x, g.op("Sqrt", g.op("Add", ms, g.const(np.float32(1e-6)))))
    g.output(g.op("Cast", normalized, to=TensorProto.FLOAT16), np.float16)
    _, record = fuse(g.build())
    assert [m["code"] for m in misses(record, "rms-norm")] == ["cast"]


@settings(max_examples=60)
@given(
    spec=st.builds(
        NormSpec,
        shape=st.sampled_from([(3, 8), (2, 3, 8), (1, 2, 3, 4)]),
        axes=st.integers(1, 2),
        epsilon=st.sampled_from([1e-12, 1e-6, 1e-5, 0.1]),
        affine=st.booleans(),
        bias=st.booleans(),
        inverse=st.sampled_from(["div", "reciprocal", "pow"]),
        square=st.sampled_from(["mul", "pow"]),
        swap_operands=st.booleans(),
        cast_sandwich=st.sampled_from([False, True, "centered"]),
        batch_norm_form=st.booleans(),
        opset=st.sampled_from([11, 12, 13, 17, 18, 23]),
    ),
    rms=st.booleans(),
)
def test_normalisation_variants_fuse_and_agree(spec, rms):
    if spec.batch_norm_form:  # tf2onnx's form is written in float32, with its own parameters
        spec = replace(spec, cast_sandwich=False, affine=True, bias=True)
        rms = False
    if rms and spec.cast_sandwich == "centered":
        spec = replace(spec, cast_sandwich=True)
    build, op_type, since = (rms_norm_model, "RMSNormalization", 23) if rms else (layer_norm_model, "LayerNormalization", 17)
    model, record = fuse(build(spec), tolerance=FP16 if spec.cast_sandwich else None)
    assert domains(model)[("" if spec.opset >= since else "mapc", op_type)] == 1, misses(record)
