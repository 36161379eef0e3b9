"""quantized-io: graph I/O as integer codes; the same function, codes in and codes out."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import Runner, load, seeded_inputs
from mapc.ir.compare import check_valid
from mapc.passes import QUANTIZED_IO, PassContext, PassManager
from mapc.testing import onnx_models
from tests.conftest import make_model
from tests.passes.quantize.support import quantize

F = TensorProto.FLOAT


def with_integer_io(model, **options):
    """Run quantized-io on an already quantized model; return it and the published quantizers."""
    ctx = PassContext(seed=0)
    records = PassManager([("quantized-io", options)]).run(model, ctx)
    return records[0], ctx.facts.get(QUANTIZED_IO)


def encode(values, q):
    info = np.iinfo(q.dtype)
    return np.clip(np.rint(np.asarray(values, np.float32) / np.float32(q.scale)) + q.zero_point, info.min, info.max).astype(q.dtype)


def decode(codes, q):
    return (codes.astype(np.int64) - q.zero_point).astype(np.float32) * np.float32(q.scale)


def mlp():
    rng = np.random.default_rng(0)
    return make_model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2, 8])], [helper.make_tensor_value_info("y", F, [2, 4])],
        [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w2")])


def test_inputs_and_outputs_become_codes_and_compute_the_same():
    proto = mlp()
    float_io, _ = quantize(proto, scheme="a16w8")
    integer_io, _ = quantize(proto, scheme="a16w8")
    record, codes = with_integer_io(integer_io)
    assert record.counters == {"inputs_quantized": 1, "outputs_quantized": 1}
    check_valid(integer_io)
    assert [np.dtype(t.dtype).name for t in integer_io.graph.inputs] == [codes["x"].dtype] == ["uint16"]
    assert not [n for n in integer_io.graph.nodes if n.op == "QuantizeLinear" and n.inputs[0].name == "x"]
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32) * 2
    expected = Runner(float_io).run({"x": x})["y"]
    got = decode(Runner(integer_io).run({"x": encode(x, codes["x"])})["y"], codes["y"])
    np.testing.assert_array_equal(got, expected)


def test_a_range_ties_tensors_to_one_quantizer_and_bits_narrow_it():
    model, _ = quantize(mlp(), scheme="a16w8")
    _, codes = with_integer_io(model, ranges={"x": [-3.0, 3.0], "y": [-3.0, 3.0]}, bits={"x": 8, "y": 8})
    assert codes["x"] == codes["y"] and codes["x"].dtype == "uint8"
    assert codes["x"].scale == np.float32(6.0 / 255)
    check_valid(model)
    y = Runner(model).run({"x": encode(np.linspace(-3, 3, 16, dtype=np.float32).reshape(2, 8), codes["x"])})["y"]
    assert y.dtype == np.uint8


def test_only_named_tensors_and_a_note_for_one_that_cannot():
    model, _ = quantize(mlp(), scheme="a8w8")
    record, codes = with_integer_io(model, tensors=["y", "nope"])
    assert set(codes) == {"y"} and np.dtype(model.graph.inputs[0].dtype) == np.float32
    float_model = load(mlp())
    record, codes = with_integer_io(float_model, tensors=["x"])
    assert not codes and record.notes[0].code == "quantized-io.not-quantized"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(onnx_models(families=("elementwise", "unary", "matmul", "conv", "concat", "split", "reshape"), discontinuous=False, symbolic=False))
def test_codes_in_codes_out_compute_what_float_io_did(proto):
    """On any quantized graph: feeding Q(x) and dequantizing the codes out gives, bit for bit,
    what the float-I/O model gives, for every output; integer I/O never breaks validity."""
    float_io, _ = quantize(proto, sensitivity_samples=0)
    integer_io, _ = quantize(proto, sensitivity_samples=0)
    _, codes = with_integer_io(integer_io)
    check_valid(integer_io)
    feeds = seeded_inputs(load(proto), seed=3)
    expected = Runner(float_io).run(feeds)
    fed = {name: encode(value, codes[name]) if name in codes else value for name, value in feeds.items()}
    got = Runner(integer_io).run(fed)
    for name, value in expected.items():
        result = decode(got[name], codes[name]) if name in codes else got[name]
        np.testing.assert_array_equal(result, value, err_msg=name)
