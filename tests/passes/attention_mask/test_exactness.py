"""The two wrong rewrites of issue 16, rebuilt: each was exact only while the scores stayed far
below the fill, and ``--verify`` (one unit-scale sample) passed them.

* GPT-2's ``Where(causal, scores, -1e4)`` became ``scores + {0, -1e4}``;
* with one large weight (2e5), finite-fill turned the mask's ``finfo.min`` into ``-1e4``.

Now each rewrite proves its precondition (:mod:`mapc.passes.attention_mask.exactness`) or
leaves the mask alone with a near-miss, and the verification samples (floats up to 1e3, padded
masks) catch the old rewrites, injected here as passes of their own.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

import mapc
from mapc.ir import Model, VerificationError, compare_outputs, load, producer, run, seeded_inputs
from mapc.passes import Pass, PassContext, PassManager, PassResult, register_pass
from mapc.passes.attention_mask.exactness import FLOAT_MARGIN

S, D = 6, 16
FMIN = float(np.finfo(np.float32).min)


def block(*, mask: str, layer_norm: bool, weight_scale: float = 1.0, big_weight: float | None = None, seed: int = 0,
          qdq_scale: float | None = None) -> onnx.ModelProto:
    """One attention over hidden states ``x`` [1, S, D], GPT-2 style: optional ``ln_1``, q/k/v
    projections (with ``qdq_scale``: q and k through int8 QuantizeLinear/DequantizeLinear, as a
    quantized export has them), scores / sqrt(D), then the mask: ``where`` (GPT-2's causal buffer:
    ``Where(Slice(tril), scores, -1e4)``) or ``m1`` (``scores + (1 - attention_mask) * finfo.min``)."""
    rng = np.random.default_rng(seed)
    weights = {name: (rng.standard_normal((D, D)) * weight_scale).astype(np.float32) for name in ("wq", "wk", "wv")}
    if big_weight is not None:
        weights["wq"][0, 0] = big_weight
    inits = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    inits += [numpy_helper.from_array(np.array(np.sqrt(D), np.float32), "scale"), numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, S, D])]
    nodes = []
    hidden = "x"
    if layer_norm:
        inits += [numpy_helper.from_array(np.ones(D, np.float32), "gamma"), numpy_helper.from_array(np.zeros(D, np.float32), "beta")]
        nodes.append(helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["h"], axis=-1, name="ln_1"))
        hidden = "h"
    projected = {w[1]: w[1] for w in ("wq", "wk", "wv")}
    if qdq_scale is not None:
        projected.update(q="q_dq", k="k_dq")
        inits += [numpy_helper.from_array(np.array(qdq_scale, np.float32), "qdq_scale"), numpy_helper.from_array(np.array(0, np.int8), "qdq_zero")]
        for name in ("q", "k"):
            nodes += [helper.make_node("QuantizeLinear", [f"{name}_raw", "qdq_scale", "qdq_zero"], [f"{name}_int8"]),
                      helper.make_node("DequantizeLinear", [f"{name}_int8", "qdq_scale", "qdq_zero"], [f"{name}_dq"])]
    raw = {"q": "q_raw", "k": "k_raw"} if qdq_scale is not None else {}
    nodes += [helper.make_node("MatMul", [hidden, w], [raw.get(w[1], w[1])], name=f"proj_{w[1]}") for w in ("wq", "wk", "wv")]
    nodes += [
        helper.make_node("Transpose", [projected["k"]], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", [projected["q"], "kt"], ["qk"]),
        helper.make_node("Div", ["qk", "scale"], ["scores"]),
    ]
    if mask == "where":
        inits += [numpy_helper.from_array(np.tril(np.ones((1, 8, 8), bool)), "bias"), numpy_helper.from_array(np.array(-1e4, np.float32), "fill"),
                  numpy_helper.from_array(np.array([0, 0], np.int64), "starts"), numpy_helper.from_array(np.array([S, S], np.int64), "ends"),
                  numpy_helper.from_array(np.array([1, 2], np.int64), "axes")]
        nodes += [helper.make_node("Slice", ["bias", "starts", "ends", "axes"], ["causal"]),
                  helper.make_node("Where", ["causal", "scores", "fill"], ["masked"], name="causal_where")]
    else:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, S]))
        inits += [numpy_helper.from_array(np.array([1], np.int64), "axis1"), numpy_helper.from_array(np.array(FMIN, np.float32), "fill")]
        nodes += [helper.make_node("Unsqueeze", ["attention_mask", "axis1"], ["mask3"]),
                  helper.make_node("Cast", ["mask3"], ["maskf"], to=TensorProto.FLOAT),
                  helper.make_node("Sub", ["one", "maskf"], ["inverted"]),
                  helper.make_node("Mul", ["inverted", "fill"], ["additive"]),
                  helper.make_node("Add", ["scores", "additive"], ["masked"])]
    nodes += [helper.make_node("Softmax", ["masked"], ["p"], axis=-1, name="softmax"), helper.make_node("MatMul", ["p", "v"], ["out"])]
    graph = helper.make_graph(nodes, "gpt2_block", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, S, D])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def realistic(model: onnx.ModelProto, scale: float, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {"x": (rng.standard_normal((1, S, D)) * scale).astype(np.float32)}
    if any(i.name == "attention_mask" for i in model.graph.input):
        feeds["attention_mask"] = np.array([[1, 1, 1, 1, 0, 0]], np.int64)
    return feeds


def same_outputs(original: onnx.ModelProto, rewritten: Model | onnx.ModelProto, feeds: dict[str, np.ndarray]) -> bool:
    return all(c.ok for c in compare_outputs(run(original, feeds), run(rewritten, feeds)))


# -- the old rewrites, injected: what attention-mask did before it checked anything -------------


class UncheckedWhereToAdd(Pass):
    """Test only: Where(c, scores, fill) before a Softmax becomes scores + (1 - Cast(c)) * fill."""

    name = "test-unchecked-where-to-add"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        changed = 0
        for node in [n for n in graph.nodes if n.op == "Softmax"]:
            where = producer(node.inputs[0])
            if where is None or where.op != "Where":
                continue
            condition, scores, fill = where.inputs
            out = [_variable(model, name) for name in ("as_float", "dropped", "additive", "sum")]
            graph.nodes += [
                _node("Cast", [condition], [out[0]], to=TensorProto.FLOAT),
                _node("Sub", [_const(model, 1.0), out[0]], [out[1]]),
                _node("Mul", [out[1], fill], [out[2]]),
                _node("Add", [scores, out[2]], [out[3]]),
            ]
            node.inputs[0] = out[3]
            changed += 1
        graph.cleanup().toposort()
        return PassResult(changed=bool(changed))


class UncheckedFiniteFill(Pass):
    """Test only: every finfo.min constant becomes -1e4 (finite-fill without its precondition)."""

    name = "test-unchecked-finite-fill"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        changed = 0
        for tensor in list(model.graph.tensors().values()):
            if hasattr(tensor, "values") and tensor.values.dtype == np.float32 and tensor.values.size == 1 and float(tensor.values.reshape(-1)[0]) == FMIN:
                tensor.values = np.array(-1e4, np.float32)
                changed += 1
        return PassResult(changed=bool(changed))


def _variable(model: Model, base: str) -> gs.Variable:
    return gs.Variable(model.fresh_name(base), dtype=np.float32)


def _const(model: Model, value: float) -> gs.Constant:
    return gs.Constant(model.fresh_name("one"), np.array(value, np.float32))


def _node(op: str, inputs: list, outputs: list, **attrs: object) -> gs.Node:
    return gs.Node(op, inputs=inputs, outputs=outputs, attrs=attrs)


@pytest.fixture
def old_rewrites(registry):
    """The old rewrites as passes, registered for one test."""
    register_pass(UncheckedWhereToAdd)
    register_pass(UncheckedFiniteFill)


# -- GPT-2's Where(causal, scores, -1e4) ----------------------------------------------------------


def test_the_old_where_rewrite_is_wrong_on_realistic_inputs_and_one_unit_sample_missed_it(old_rewrites):
    model = block(mask="where", layer_norm=False, weight_scale=10.0)
    wrong = load(model)
    PassManager("test-unchecked-where-to-add").run(wrong)
    assert same_outputs(model, wrong, seeded_inputs(load(model)))  # what --verify used to run: passes
    errors = [np.abs(run(model, f)["out"] - run(wrong, f)["out"]).max() for f in (realistic(model, 3.0, seed) for seed in range(5))]
    assert max(errors) > 100  # hidden states x3: off by hundreds (the issue saw 319)
    with pytest.raises(VerificationError, match="on sample"):  # the new samples catch it
        mapc.compile(model, passes="test-unchecked-where-to-add", verify=True)


def test_where_on_unbounded_scores_is_left_alone_with_a_near_miss():
    model = block(mask="where", layer_norm=False, weight_scale=10.0)
    result = mapc.compile(model, verify=True)
    notes = [n for r in result.passes for n in r.notes if n.code == "attention-mask.scores-unbounded"]
    assert notes and "--verify-inputs" in notes[0].fix and notes[0].node == "softmax"
    assert "--input-shape" not in notes[0].fix  # the inputs are static: never ask for shapes again (issue 16)
    assert "Where" in {n.op for n in result.model.graph.nodes}
    for scale in (1.0, 3.0, 1e3):
        for seed in range(5):
            assert same_outputs(model, result.model, realistic(model, scale, seed))


def test_where_after_a_layernorm_is_rewritten_and_exact_at_every_input_scale():
    """ln_1 bounds every score whatever the input, so the rewrite is proven exact."""
    model = block(mask="where", layer_norm=True, weight_scale=1.0)
    result = mapc.compile(model, verify=True)
    record = next(r for r in result.passes if r.name == "attention-mask")
    assert record.details["attentions"][0]["rewrites"] == ["bool-to-additive"]
    assert not [n for n in record.notes if n.code.startswith("attention-mask.scores")]
    for scale in (1e-3, 1.0, 3.0, 1e3):
        assert same_outputs(model, result.model, realistic(model, scale))


def test_measured_scores_from_the_users_samples_allow_the_rewrite():
    model = block(mask="where", layer_norm=False, weight_scale=0.5)
    samples = [realistic(model, 1.0, seed) for seed in range(3)]
    result = mapc.compile(model, verify=True, verify_inputs=samples)
    attention = next(r for r in result.passes if r.name == "attention-mask").details["attentions"][0]
    assert attention["rewrites"] == ["bool-to-additive"]
    assert result.verification["ok"] and result.verification["samples"] == 3


def test_a_quantized_export_is_bounded_by_its_qdq_scales_and_refused_when_that_is_too_wide(old_rewrites):
    """The issue's quantized attention export: scores up to ~3e4 on realistic inputs. The Q/DQ
    pairs prove a bound (int8 range times the scale), too wide for -1e4, so the Where stays."""
    model = block(mask="where", layer_norm=False, weight_scale=10.0, qdq_scale=4.0)
    wrong = load(model)
    PassManager("test-unchecked-where-to-add").run(wrong)
    errors = [np.abs(run(model, f)["out"] - run(wrong, f)["out"]).max() for f in (realistic(model, 3.0, seed) for seed in range(5))]
    assert max(errors) > 100
    result = mapc.compile(model, verify=True)
    notes = [n for r in result.passes for n in r.notes if n.code in ("attention-mask.scores-too-wide", "attention-mask.fill-not-masking")]
    assert notes and "proven" in notes[0].message
    for seed in range(5):
        assert same_outputs(model, result.model, realistic(model, 3.0, seed))


# -- one large weight: finfo.min became -1e4 -------------------------------------------------------


def test_the_old_fill_rewrite_is_wrong_with_a_large_weight_and_verify_now_catches_it(old_rewrites):
    model = block(mask="m1", layer_norm=True, big_weight=2e5)
    wrong = load(model)
    PassManager("test-unchecked-finite-fill").run(wrong)
    errors = [np.abs(run(model, f)["out"] - run(wrong, f)["out"]).max() for f in (realistic(model, 1.0, seed) for seed in range(8))]
    assert max(errors) > 0.1  # the issue saw up to 1.1
    with pytest.raises(VerificationError):
        mapc.compile(model, passes="test-unchecked-finite-fill", verify=True)


def test_a_large_weight_makes_the_fill_rewrite_refuse_and_name_the_fill_that_would_work():
    model = block(mask="m1", layer_norm=True, big_weight=2e5)
    result = mapc.compile(model, verify=True)
    notes = [n for r in result.passes for n in r.notes if n.code == "attention-mask.scores-too-wide"]
    assert notes and "(proven)" in notes[0].message
    assert "--mask-value -" in notes[0].fix and "--mask-precision fp32" in notes[0].fix
    fills = [float(t.values.reshape(-1)[0]) for t in result.model.graph.tensors().values() if hasattr(t, "values") and t.values.size == 1]
    assert FMIN in fills
    for seed in range(8):
        assert same_outputs(model, result.model, realistic(model, 1.0, seed))


def test_the_suggested_fill_makes_the_rewrite_exact():
    model = block(mask="m1", layer_norm=True, big_weight=2e5)
    note = next(n for r in mapc.compile(model).passes for n in r.notes if n.code == "attention-mask.scores-too-wide")
    value = float(note.fix.split("--mask-value ")[1].split()[0])
    result = mapc.compile(model, verify=True, pass_options={"attention-mask": {"precision": "fp32", "mask_value": value}})
    record = next(r for r in result.passes if r.name == "attention-mask")
    assert record.counters["fills_replaced"] == 1 and value <= -(FLOAT_MARGIN + 1)
    for seed in range(8):
        assert same_outputs(model, result.model, realistic(model, 1.0, seed))


def test_a_select_fill_that_does_not_mask_is_refused():
    """Where(c, scores, -50) with scores in [-4, 4]: the original gives masked keys weight e^-54,
    not 0, so adding -1e4 instead would change the output: near-miss fill-not-masking."""
    nodes = [helper.make_node("Tanh", ["q"], ["tq"]), helper.make_node("Tanh", ["k"], ["tk"]),
             helper.make_node("Transpose", ["tk"], ["kt"], perm=[0, 2, 1]), helper.make_node("MatMul", ["tq", "kt"], ["scores"]),
             helper.make_node("Where", ["keep", "scores", "fill"], ["masked"]), helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "tk"], ["out"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, S, 4]) for n in ("q", "k")]
    inputs.append(helper.make_tensor_value_info("keep", TensorProto.BOOL, [1, S, S]))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, S, 4])],
                              [numpy_helper.from_array(np.array(-50.0, np.float32), "fill")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    result = mapc.compile(model, verify=True)
    notes = [n for r in result.passes for n in r.notes if n.code == "attention-mask.fill-not-masking"]
    assert notes and "-50" in notes[0].message and "--verify-inputs" in notes[0].fix
    assert "Where" in {n.op for n in result.model.graph.nodes}


def test_int8_masks_are_an_approximation_and_not_checked():
    """--mask-precision int8 (what --quantize sets) keeps the documented approximate fill."""
    model = block(mask="where", layer_norm=False, weight_scale=1.0)
    record = PassManager("attention-mask{precision=int8}").run(load(model))[0]
    assert record.details["attentions"][0]["rewrites"] == ["bool-to-additive"]
    assert not [n for n in record.notes if n.code.startswith("attention-mask.scores")]


def test_mask_inputs_are_found_by_role_and_get_padded_and_fully_masked_rows():
    """An input that reaches a mask is a mask whatever its name; a float one read as the mask is additive."""
    from mapc.ir import verification_samples
    from mapc.passes.attention_mask import mask_input_roles

    model = block(mask="m1", layer_norm=True)
    for value in model.graph.input:
        if value.name == "attention_mask":
            value.name = "keep_these"
    for node in model.graph.node:
        node.input[:] = ["keep_these" if name == "attention_mask" else name for name in node.input]
    loaded = load(model)
    roles = mask_input_roles(loaded.graph)
    assert roles == {"keep_these": "keep"}
    samples = verification_samples(loaded, masks=roles)
    assert not samples[2].feeds["keep_these"].any() and samples[0].feeds["keep_these"][0, -1] == 0
