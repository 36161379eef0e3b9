"""quantize: one test per placement rule (a hit and a near miss), masks, biases, opsets, report."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import Runner, toposort
from mapc.ir.errors import ModelError
from mapc.passes import opset_conversion
from mapc.passes.quantize import resolve
from mapc.targets import get_target, load_target_file
from tests.conftest import make_model
from tests.passes.quantize.support import dequantize_of, ops, quantize, sqnr_by_output, structure_problems

F = TensorProto.FLOAT
RNG = np.random.default_rng(1)


def const(name: str, values, dtype=np.float32) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def value(name: str, shape, elem=F):
    return helper.make_tensor_value_info(name, elem, shape)


def qdq_params(model) -> dict[str, tuple[float, int, str]]:
    """QuantizeLinear parameters by the name of the tensor they quantize."""
    found = {}
    for node in model.graph.nodes:
        if node.op == "QuantizeLinear":
            zero = node.inputs[2].values
            found[node.inputs[0].name] = (float(node.inputs[1].values), int(zero), str(zero.dtype))
    return found


def conv_model(*tail, outputs=("y",), shapes=None, extra_inits=()):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), *tail]
    inits = [const("w", RNG.standard_normal((4, 3, 3, 3)) * 0.3), const("b", RNG.standard_normal(4) * 0.1), *extra_inits]
    return make_model(nodes, [value("x", [1, 3, 6, 6])], [value(o, (shapes or {}).get(o, [1, 4, 6, 6])) for o in outputs], inits)


# -- ties ----------------------------------------------------------------------------------------


def test_data_movement_reuses_its_input_parameters():
    proto = conv_model(
        helper.make_node("Reshape", ["c", "shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0]),
        helper.make_node("Sigmoid", ["t"], ["y"]),
        shapes={"y": [144, 1]},
        extra_inits=[const("shape", [1, 144], np.int64)],
    )
    model, _ = quantize(proto)
    params = qdq_params(model)
    assert params["c"] == params["r"] == params["t"]
    assert params["y_float"] != params["c"]


def test_concat_inputs_and_output_share_one_scale_unless_untied():
    proto = make_model(
        [
            helper.make_node("Mul", ["x", "small"], ["a"]),
            helper.make_node("Mul", ["x", "large"], ["b"]),
            helper.make_node("Concat", ["a", "b"], ["y"], axis=1),
        ],
        [value("x", [2, 3])],
        [value("y", [2, 6])],
        [const("small", 0.01), const("large", 10.0)],
    )
    tied = qdq_params(quantize(proto)[0])
    assert tied["a"] == tied["b"] == tied["y_float"]
    untied = qdq_params(quantize(proto, tie_concat=False)[0])
    assert untied["a"][0] < untied["b"][0] / 100


# -- fixed and bounded ranges ------------------------------------------------------------------


@pytest.mark.parametrize("activation_type, scale, zero_point", [("uint8", 1 / 255, 0), ("int8", 1 / 255, -128)])
def test_softmax_output_is_exactly_zero_to_one(activation_type, scale, zero_point):
    proto = conv_model(helper.make_node("Softmax", ["c"], ["y"], axis=1))
    params = qdq_params(quantize(proto, activation_type=activation_type)[0])
    assert params["y_float"][:2] == (pytest.approx(scale), zero_point)


def test_a_softmax_output_read_by_a_concat_keeps_its_fixed_range():
    """The Concat's other inputs and output share one scale; the Softmax output keeps [0, 1]
    (tied, it took the Concat's [-3.4, 3.2], which QNN's uint8 Softmax does not honour)."""
    proto = make_model(
        [helper.make_node("Softmax", ["x"], ["s"], axis=-1), helper.make_node("Mul", ["x", "large"], ["m"]),
         helper.make_node("Concat", ["m", "s"], ["c"], axis=1), helper.make_node("Tanh", ["c"], ["y"])],
        [value("x", [2, 3])],
        [value("y", [2, 6])],
        [const("large", 10.0)],
    )
    params = qdq_params(quantize(proto)[0])
    assert params["s"][:2] == (pytest.approx(1 / 255), 0)
    assert params["m"] == params["c"] and params["m"][0] > 10 / 255


def test_sigmoid_range_is_calibrated_but_capped_unless_fixed():
    proto = make_model([helper.make_node("Sigmoid", ["x"], ["y"])], [value("x", [4, 8])], [value("y", [4, 8])])
    calibrated = qdq_params(quantize(proto)[0])["y_float"]
    assert calibrated[0] < 1 / 255  # random inputs never reach 0 or 1
    fixed = qdq_params(quantize(proto, fixed_range_ops=["Softmax", "Sigmoid"])[0])["y_float"]
    assert fixed[:2] == (pytest.approx(1 / 255), 0)


# -- activation folding --------------------------------------------------------------------------


@pytest.mark.parametrize("activation", [
    helper.make_node("Relu", ["c"], ["y"]),
    helper.make_node("Clip", ["c", "zero", "six"], ["y"]),
])
def test_relu_and_clip_fold_into_the_producer_exactly(activation):
    proto = conv_model(activation, extra_inits=[const("zero", 0.0), const("six", 6.0)])
    folded, record = quantize(proto)
    assert activation.op_type not in ops(folded) and record.counters["activations_folded"] == 1
    [quantizer] = [n for n in folded.graph.nodes if n.op == "QuantizeLinear" and n.inputs[0].inputs and n.inputs[0].inputs[0].op == "Conv"]
    assert int(quantizer.inputs[2].values) == 0  # uint8 qmin: the quantizer clamps where Relu/Clip did
    # putting the activation back in front of its quantizer changes no bit of the output
    restored = folded.copy()
    [q] = [n for n in restored.graph.nodes if n.name == quantizer.name]
    clipped = gs.Variable("clipped", dtype=np.float32)
    bounds = [gs.Constant("lo", np.array(0, np.float32))] + ([gs.Constant("hi", np.array(6, np.float32))] if activation.op_type == "Clip" else [])
    restored.graph.nodes.append(gs.Node("Clip", "clip_back", inputs=[q.inputs[0], *bounds], outputs=[clipped]))
    q.inputs[0] = clipped
    toposort(restored.graph)
    for _ in range(3):
        sample = {"x": RNG.standard_normal((1, 3, 6, 6)).astype(np.float32) * 3}
        np.testing.assert_array_equal(Runner(folded).run(sample)["y"], Runner(restored).run(sample)["y"])


def test_relu_after_a_float_producer_folds_so_its_input_is_not_rounded_twice():
    """A Relu after an op left in float (here excluded) needs no quantizer of its own on its
    input: the output quantizer clamps where the Relu did (ShuffleNet's Sum -> Relu: +1.2 dB)."""
    proto = conv_model(
        helper.make_node("Sum", ["c", "c"], ["s"]),
        helper.make_node("Relu", ["s"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1]),
        extra_inits=[const("w2", RNG.standard_normal((4, 4, 3, 3)) * 0.3)],
    )
    folded, record = quantize(proto, exclude_op_types=["Sum"])
    assert "Relu" not in ops(folded) and record.counters["activations_folded"] == 1
    assert "s" not in qdq_params(folded), "the float Sum output is not quantized before the Relu range"
    assert qdq_params(folded)["r"][1] == 0
    samples = [{"x": RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(4)]
    assert min(sqnr_by_output(proto, folded, samples).values()) > 25


def test_relu_is_kept_when_its_input_has_other_readers_or_activations_are_symmetric():
    shared = conv_model(helper.make_node("Relu", ["c"], ["y"]), helper.make_node("Neg", ["c"], ["z"]), outputs=("y", "z"))
    assert "Relu" in ops(quantize(shared)[0])
    single = conv_model(helper.make_node("Relu", ["c"], ["y"]))
    assert "Relu" in ops(quantize(single, activation_type="int8", symmetric_activations=True)[0])


def test_relu_whose_range_is_widened_by_a_tie_is_not_folded():
    proto = conv_model(
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Neg", ["c"], ["n"]),
        helper.make_node("Concat", ["r", "n"], ["y"], axis=1),
        shapes={"y": [1, 8, 6, 6]},
    )
    model, record = quantize(proto)
    assert "Relu" in ops(model) and record.counters["activations_folded"] == 0


# -- attention-mask paths ----------------------------------------------------------------------------


def masked_attention(fill: float):
    """scores = x·xᵀ; Add(scores, Where(mask, 0, fill)); Softmax."""
    return make_model(
        [
            helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["x", "xt"], ["scores"]),
            helper.make_node("Cast", ["keep"], ["keep_bool"], to=TensorProto.BOOL),
            helper.make_node("Where", ["keep_bool", "zero", "fill"], ["mask"]),
            helper.make_node("Add", ["scores", "mask"], ["masked"]),
            helper.make_node("Softmax", ["masked"], ["y"], axis=-1),
        ],
        [value("x", [1, 6, 4]), value("keep", [1, 1, 6], TensorProto.INT64)],
        [value("y", [1, 6, 6])],
        [const("zero", 0.0), const("fill", fill)],
    )


def mask_group(record) -> list[str]:
    return [name for entry in record.details["excluded"] for name in entry["tensors"]]


@pytest.mark.parametrize("fill", [np.finfo(np.float32).min, -1e9, -np.inf])
def test_huge_mask_fills_leave_the_mask_path_in_float(fill):
    model, record = quantize(masked_attention(fill), random_samples=8)
    assert {"mask", "masked"} <= set(mask_group(record))
    assert any(n.code == "quantize.mask-path" and n.fix for n in record.notes)
    assert "scores" in qdq_params(model)
    outputs = Runner(model).run({"x": RNG.standard_normal((1, 6, 4)).astype(np.float32), "keep": np.array([[[1, 1, 1, 1, 0, 0]]])})
    assert np.isfinite(outputs["y"]).all() and np.allclose(outputs["y"][..., 4:], 0)


def test_a_moderate_fill_gets_sixteen_bits_and_a_small_one_is_quantized_normally():
    model, record = quantize(masked_attention(-1e4), random_samples=8)
    params = qdq_params(model)
    assert params["masked"][2] == "uint16" and params["scores"][2] == "uint8"
    model, record = quantize(masked_attention(-10.0), random_samples=8)
    assert qdq_params(model)["masked"][2] == "uint8" and not record.details["excluded"]


# -- ranges and biases -------------------------------------------------------------------------------


def test_a_constant_zero_tensor_gets_the_minimum_real_range():
    proto = make_model([helper.make_node("Mul", ["x", "zero"], ["y"])], [value("x", [2, 3])], [value("y", [2, 3])], [const("zero", 0.0)])
    for method in ("minmax", "percentile", "entropy", "mse"):
        model, record = quantize(proto, calibration_method=method)
        scale, zero_point, _ = qdq_params(model)["y_float"]
        assert scale == pytest.approx(1e-4 / 255) and zero_point == 0
        assert not structure_problems(model.to_proto())


def test_a_bias_that_would_overflow_int32_raises_its_weight_scale_and_says_so():
    proto = make_model(
        [helper.make_node("Mul", ["x", "tiny"], ["small"]), helper.make_node("Conv", ["small", "w", "b"], ["y"])],
        [value("x", [1, 2, 3, 3])],
        [value("y", [1, 2, 3, 3])],
        [const("tiny", 1e-6), const("w", RNG.standard_normal((2, 2, 1, 1)) * 1e-3), const("b", [5e4, 1e-6])],
    )
    model, record = quantize(proto)
    assert record.details["bias_adjusted"][0]["channels"] == [0]
    assert any(n.code == "quantize.bias-overflow" for n in record.notes)
    [bias] = dequantize_of(model, "Conv", 2)
    assert np.abs(bias["codes"].astype(np.int64)).max() < 2**31 - 1
    restored = bias["codes"].astype(np.float64) * bias["scale"]
    np.testing.assert_allclose(restored, [5e4, 1e-6], rtol=1e-3)


def test_bias_correction_removes_the_mean_shift_of_quantized_weights():
    weight = RNG.standard_normal((8, 1, 3, 3)).astype(np.float32) * 0.3
    proto = make_model(
        [helper.make_node("Add", ["x", "offset"], ["shifted"]), helper.make_node("Conv", ["shifted", "w"], ["y"], group=8)],
        [value("x", [1, 8, 8, 8])],
        [value("y", [1, 8, 6, 6])],
        [const("offset", 5.0), const("w", weight)],
    )
    samples = [{"x": RNG.standard_normal((1, 8, 8, 8)).astype(np.float32)} for _ in range(4)]
    plain, _ = quantize(proto, random_samples=8)
    corrected, record = quantize(proto, random_samples=8, bias_correction=True)
    assert any(n.code == "quantize.bias-corrected" for n in record.notes)
    assert sqnr_by_output(proto, corrected, samples)["y"] > sqnr_by_output(proto, plain, samples)["y"]



def offset_linear(op: str, **attrs):
    """x + 5 (a mean the weight error turns into an output shift) into a 64 -> 32 MatMul or Gemm."""
    rng = np.random.default_rng(7)  # its own stream: the module's RNG feeds the later tests
    weight = rng.standard_normal((32, 64) if attrs.get("transB") else (64, 32)).astype(np.float32) * 0.2
    return make_model(
        [helper.make_node("Add", ["x", "offset"], ["shifted"]), helper.make_node(op, ["shifted", "w"], ["y"], **attrs)],
        [value("x", [4, 64])],
        [value("y", [4, 32])],
        [const("offset", 5.0), const("w", weight)],
    )


def test_bias_correction_gives_a_biasless_gemm_an_int32_bias_that_removes_the_shift():
    proto = offset_linear("Gemm", transB=1)
    rng = np.random.default_rng(8)
    samples = [{"x": rng.standard_normal((4, 64)).astype(np.float32)} for _ in range(4)]
    plain, _ = quantize(proto, random_samples=8)
    corrected, record = quantize(proto, random_samples=8, bias_correction=True)
    assert any(n.code == "quantize.bias-corrected" for n in record.notes)
    [bias] = dequantize_of(corrected, "Gemm", 2)
    assert bias["codes"].dtype == np.int32
    assert sqnr_by_output(proto, corrected, samples)["y"] > sqnr_by_output(proto, plain, samples)["y"]



def test_bias_correction_adds_no_bias_where_the_weight_codes_are_exact():
    """A window of ones (decompose-lrn's channel sum) quantizes without error: no shift, no bias."""
    proto = make_model(
        [helper.make_node("Add", ["x", "offset"], ["shifted"]), helper.make_node("Conv", ["shifted", "w"], ["y"])],
        [value("x", [1, 4, 4, 4])],
        [value("y", [1, 4, 4, 4])],
        [const("offset", 5.0), const("w", np.ones((4, 4, 1, 1)))],
    )
    model, record = quantize(proto, bias_correction=True)
    [conv] = [n for n in model.graph.nodes if n.op == "Conv"]
    assert len(conv.inputs) == 2
    assert not any(n.code == "quantize.bias-corrected" for n in record.notes)


@pytest.mark.parametrize("scheme", ["a8w8", "a16w8", "w4", "a16w4"])
def test_bias_correction_skips_a_matmul_it_has_no_bias_input_for(scheme):
    """A MatMul has no bias input: the correction is not written into it (before, the MatMul got a
    third input and the model was invalid), and nothing claims a correction."""
    proto = offset_linear("MatMul")
    model, record = quantize(proto, scheme=scheme, bias_correction=True)
    [matmul] = [n for n in model.graph.nodes if n.op == "MatMul"]
    assert len(matmul.inputs) == 2
    assert not any(n.code == "quantize.bias-corrected" for n in record.notes)
    assert structure_problems(model.to_proto()) == []


def test_bias_correction_needs_quantized_activations():
    """Weight-only schemes keep float biases (no int32 bias to correct): nothing is claimed."""
    _, record = quantize(offset_linear("Gemm", transB=1), scheme="w4", bias_correction=True)
    assert not any(n.code == "quantize.bias-corrected" for n in record.notes)



def test_a_target_turns_bias_correction_on_qnn_htp_does_and_the_user_can_turn_it_off(tmp_path):
    assert resolve("a8w8", get_target("qnn-htp").quantization)["bias_correction"] is True
    assert resolve("a16w8", get_target("qnn-htp").quantization, bias_correction=False)["bias_correction"] is False
    assert "bias_correction" not in resolve("a8w8", get_target("npu").quantization)
    path = tmp_path / "npu_bc.toml"
    path.write_text('base = "npu"\nname = "npu-bc"\n[quantization]\nbias_correction = true\n')
    assert resolve("a8w8", load_target_file(path).quantization)["bias_correction"] is True


# -- schemes and opsets ---------------------------------------------------------------------------------


def test_sixteen_bit_activations_raise_the_opset_when_the_converter_verifies():
    proto = conv_model(helper.make_node("Relu", ["c"], ["y"]))
    model, record = quantize(proto, scheme="a16w8")
    assert model.opset == 21 and record.details["opset"] == {"before": 18, "after": 21}
    assert {p[2] for p in qdq_params(model).values()} == {"uint16"}
    assert all(node.domain in ("", None) for node in model.graph.nodes)


def test_sixteen_bit_activations_use_contrib_qdq_when_the_opset_stays(monkeypatch):
    proto = conv_model(helper.make_node("Relu", ["c"], ["y"]))
    model, _ = quantize(proto, scheme="a16w8", qdq_domain="com.microsoft")
    assert model.opset == 18
    quantizers = [n for n in model.graph.nodes if n.op == "QuantizeLinear"]
    assert quantizers and all(n.domain == "com.microsoft" for n in quantizers)
    monkeypatch.setattr(opset_conversion, "_converted_skeleton", lambda model, version: "the converter refused")
    model, record = quantize(proto, scheme="a16w8")
    assert model.opset == 18 and any(n.code == "quantize.contrib-qdq" and n.severity == "warning" for n in record.notes)
    Runner(model).run({"x": RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)})
    with pytest.raises(ModelError, match="needs opset 21"):
        quantize(make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [value("x", [2, 64])], [value("y", [2, 4])], [const("w", RNG.standard_normal((64, 4)))]), scheme="w4")


def test_weight_only_schemes_leave_activations_in_float():
    proto = conv_model(helper.make_node("Relu", ["c"], ["y"]))
    model, record = quantize(proto, scheme="w4")
    assert not [n for n in model.graph.nodes if n.op == "QuantizeLinear"]
    [conv] = dequantize_of(model, "Conv")
    assert conv["codes"].dtype == np.int8 and conv["axis"] == 0
    assert record.details["activation_type"] == "float"


def test_excluded_nodes_stay_float():
    proto = conv_model(helper.make_node("Relu", ["c"], ["y"]))
    model, _ = quantize(make_model(list(proto.graph.node), list(proto.graph.input), list(proto.graph.output), list(proto.graph.initializer)), exclude_op_types=["Conv"])
    assert not dequantize_of(model, "Conv")


# -- the report ------------------------------------------------------------------------------------------


def classifier():
    return make_model(
        [
            helper.make_node("Gemm", ["x", "w", "b"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1),
        ],
        [value("x", [1, 16])],
        [value("probs", [1, 10]), value("logits", [1, 10]), value("label", [1, 1], TensorProto.INT64)],
        [const("w", RNG.standard_normal((10, 16))), const("b", RNG.standard_normal(10))],
    )


def test_report_has_every_output_metric_and_the_top_offenders():
    _, record = quantize(classifier(), random_samples=10)
    report = {o["output"]: o for o in record.details["accuracy"]["outputs"]}
    assert record.details["accuracy"]["samples"] == 2
    for name in ("probs", "logits"):
        assert {"sqnr_db", "cosine", "max_abs_error", "top1_agreement"} <= set(report[name])
        assert 0.99 <= report[name]["cosine"] <= 1.0
    assert set(report["label"]) == {"output", "exact_match", "mismatched_elements"}
    offenders = record.details["offenders"]
    assert offenders and {o["kind"] for o in offenders} == {"activation", "weight"}
    assert offenders == sorted(offenders, key=lambda o: o["sqnr_db_alone"] if o["sqnr_db_alone"] is not None else 1e9)
    assert sum(o["share"] for o in offenders) == pytest.approx(1.0, abs=0.01)


def test_accuracy_target_promotes_the_worst_tensors_until_met():
    _, plain = quantize(classifier(), random_samples=10)
    worst = plain.details["accuracy"]["worst_sqnr_db"]
    model, record = quantize(classifier(), random_samples=10, accuracy_target=worst + 4)
    target = record.details["accuracy_target"]
    assert target["met"] and target["promoted"]
    assert record.details["accuracy"]["worst_sqnr_db"] >= worst + 4
    promoted = {p["tensor"].split(" ")[0] for p in target["promoted"]}
    assert all(qdq_params(model)[name if name in qdq_params(model) else f"{name}_float"][2] == "uint16" for name in promoted)


def test_an_unreachable_target_is_reported_not_hidden():
    _, record = quantize(classifier(), random_samples=10, accuracy_target=200)
    assert not record.details["accuracy_target"]["met"]
    assert any(n.code == "quantize.accuracy-target-missed" for n in record.notes)


def test_random_calibration_warns_loudly():
    _, record = quantize(classifier())
    [note] = [n for n in record.notes if n.code == "quantize.random-calibration"]
    assert note.severity == "warning" and "RANDOM" in note.message


# -- folds into tie groups (last: they draw from the module RNG the tests above rely on) --------


def test_relu_after_a_tied_concat_clamps_the_whole_group_exactly():
    """Relu(Concat(a, b)) = Concat(Relu(a), Relu(b)): when a and b feed only the Concat, the tie
    group takes the Relu's range and the Relu goes (ShuffleNet: 29.8 -> 31.0 dB)."""
    proto = conv_model(
        helper.make_node("Conv", ["x", "w2"], ["d"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["c", "d"], ["cat"], axis=1),
        helper.make_node("Relu", ["cat"], ["y"]),
        shapes={"y": [1, 8, 6, 6]},
        extra_inits=[const("w2", RNG.standard_normal((4, 3, 3, 3)) * 0.3)],
    )
    folded, record = quantize(proto)
    assert "Relu" not in ops(folded) and record.counters["activations_folded"] == 1
    params = qdq_params(folded)
    assert params["c"] == params["d"] == params["y_float"] and params["c"][1] == 0, "one clamped group"
    samples = [{"x": RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(4)]
    kept, _ = quantize(proto, fold_activations=False)
    assert min(sqnr_by_output(proto, folded, samples).values()) > min(sqnr_by_output(proto, kept, samples).values())


def test_relu_after_a_tied_concat_whose_input_has_other_readers_is_kept():
    proto = conv_model(
        helper.make_node("Conv", ["x", "w2"], ["d"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["c", "d"], ["cat"], axis=1),
        helper.make_node("Relu", ["cat"], ["y"]),
        helper.make_node("Neg", ["d"], ["z"]),
        outputs=("y", "z"),
        shapes={"y": [1, 8, 6, 6]},
        extra_inits=[const("w2", RNG.standard_normal((4, 3, 3, 3)) * 0.3)],
    )
    model, record = quantize(proto)
    assert "Relu" in ops(model) and record.counters["activations_folded"] == 0


def test_bfloat16_nodes_stay_unquantized_with_a_warning():
    """A Concat in bfloat16 between float32 ops: the float32 ops are quantized, the Concat is not."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Cast", ["r"], ["rb"], to=TensorProto.BFLOAT16),
        helper.make_node("Concat", ["rb", "rb"], ["cb"], axis=0),
        helper.make_node("Cast", ["cb"], ["c"], to=F),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    model, record = quantize(make_model(nodes, [value("x", [2, 3])], [value("y", [4, 3])]))
    (note,) = [n for n in record.notes if n.code == "quantize.not-float32"]
    assert note.severity == "warning" and note.message.startswith("1 node(s) compute in bfloat16 (Concat)")
    concat = next(n for n in model.graph.nodes if n.op == "Concat")
    assert all(t.inputs[0].op == "Cast" for t in concat.inputs)  # no DequantizeLinear feeds it
    assert "QuantizeLinear" in ops(model)


def test_an_inexact_fold_keeps_the_relu_and_quantizes_its_input_with_the_output_parameters():
    """DenseNet's stem: Conv -> Relu -> MaxPool -> Concat with a signed tensor. The Relu output's
    tie group reaches below zero, so the fold is inexact and the Relu stays; its input gets the
    output's quantizer, which costs nothing (Q(Relu(DQ(Q(x)))) = Q(Relu(x)) on that grid) and
    leaves no float tensor between Conv and Relu (QNN builds such a Conv in float and refuses
    its per-channel weight DequantizeLinear)."""
    rng = np.random.default_rng(7)
    proto = conv_model(
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "w2"], ["d"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["p", "d"], ["y"], axis=1),
        shapes={"y": [1, 8, 6, 6]},
        extra_inits=[const("w2", rng.standard_normal((4, 3, 3, 3)) * 0.3)],
    )
    model, record = quantize(proto)
    assert "Relu" in ops(model) and record.counters["activations_folded"] == 0
    params = qdq_params(model)
    assert params["c"] == params["r"] == params["d"] and params["r"][1] > 0, "signed group: zero point above qmin"
    # the Relu's input quantizer changes no bit of the output: drop it and compare
    bare = model.copy()
    [q] = [n for n in bare.graph.nodes if n.op == "QuantizeLinear" and n.inputs[0].name == "c"]
    [dq] = q.outputs[0].outputs
    [relu] = [n for n in bare.graph.nodes if n.op == "Relu"]
    relu.inputs[0] = q.inputs[0]
    q.outputs.clear(), dq.outputs.clear()
    bare.graph.cleanup()
    for scale in (0.5, 1, 4):
        sample = {"x": (rng.standard_normal((1, 3, 6, 6)) * scale).astype(np.float32)}
        np.testing.assert_array_equal(Runner(model).run(sample)["y"], Runner(bare).run(sample)["y"])
