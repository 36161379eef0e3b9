"""``qoperator-to-qdq``: QOperator models (integer-only quantized ops) as standard QDQ models.

onnxruntime's quantizer with ``QuantFormat.QOperator``, its dynamic quantizer, TFLite converters
and older tools write quantized ops no NPU target knows (``QLinearConv``, ``MatMulInteger``,
onnxruntime's ``com.microsoft.QLinear*``), and mapc's ``quantize`` cannot take such a model
over. Each becomes DequantizeLinear -> the float op -> QuantizeLinear with the node's own scales
and zero points, the form every QDQ tool chain and mapc's targets read. The rules, one module
per family: :mod:`.linear` (QLinearConv, QLinearMatMul, QGemm), :mod:`.integer` (MatMulInteger,
ConvInteger and the dynamic quantizer's chains), :mod:`.dynamic` (onnxruntime's fused
MatMulIntegerToFloat and DynamicQuantizeMatMul), :mod:`.contrib` (onnxruntime's element-wise,
pooling, concat and softmax ops). :data:`RULES` is their order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mapc.ir import Model, apply_rules, infer_shapes, remove_dead_nodes, rule_details, rule_notes, toposort
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.flags import flag
from mapc.passes.qoperator.context import QdqContext
from mapc.passes.qoperator.contrib import CONTRIB_RULES
from mapc.passes.qoperator.dynamic import DYNAMIC_RULES
from mapc.passes.qoperator.integer import INTEGER_RULES
from mapc.passes.qoperator.linear import LINEAR_RULES
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import SHAPES

#: Every rule, in the order they run (the dynamic quantizer's chain before a lone integer op).
RULES = [*LINEAR_RULES, *INTEGER_RULES, *DYNAMIC_RULES, *CONTRIB_RULES]
#: Rounds over the rules: a rewrite gives types to what follows an op shape inference does not
#: know (onnxruntime's contrib ops), so a rule refused for an unknown type may fire next round.
MAX_ROUNDS = 8


@register_pass
class QOperatorToQdq(Pass):
    """Rewrite QOperator quantized ops into DequantizeLinear -> float op -> QuantizeLinear.

    Matches QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger and onnxruntime's
    com.microsoft MatMulIntegerToFloat, DynamicQuantizeMatMul, QGemm, QLinearAdd, QLinearMul,
    QLinearSigmoid, QLinearLeakyRelu, QLinearGlobalAveragePool, QLinearAveragePool (NHWC ones
    between Transposes of their codes), QLinearConcat and QLinearSoftmax.
    Produces the float op between DequantizeLinear of its inputs (per tensor, or per output
    channel / column for weights; an int32 bias with scale input_scale·weight_scale) and
    QuantizeLinear with the node's output scale and zero point. Integer outputs: the dynamic
    quantizer's MatMulInteger -> Cast -> Mul(a_scale·b_scale) becomes a float MatMul of
    dequantized operands; another MatMulInteger/ConvInteger becomes the float op on
    DequantizeLinear with scale 1 (Cast back to int32 only for readers that need int32), when
    float32 provably holds its sums exactly. Output codes agree with the integer kernels' within
    one quantization step. A node it cannot rewrite exactly stays, with a near-miss saying why
    (among them nodes whose float form would overflow float32, which integer kernels never form).
    dynamic_activations=float (opt-in, not exact) also drops the dynamic quantizer's run-time
    quantization of the activation: MatMul(x, DequantizeLinear(weight)), weight-only.
    """

    name = "qoperator-to-qdq"
    requires = (SHAPES,)

    @dataclass
    class Options:
        #: What the dynamic quantizer's run-time activation quantization becomes: ``quantized``
        #: keeps it (DynamicQuantizeLinear -> DequantizeLinear, exact); ``float`` drops it, so the
        #: float op reads the float activation (weight-only: not exact, within half the
        #: activation's run-time scale per element, and what a target without
        #: DynamicQuantizeLinear can run).
        dynamic_activations: Literal["quantized", "float"] = field(default="quantized", metadata=flag(
            "--dynamic-activations", "dynamically quantized MatMul/Conv activations: keep their run-time quantization "
            "(quantized, exact; default) or leave them float (float: weight-only, drops the activation rounding)"))

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        rewrites = QdqContext(model, float_dynamic=self.options.dynamic_activations == "float")

        def refresh(_: object) -> None:
            toposort(model.graph)
            infer_shapes(model)

        fired = {item.name: 0 for item in RULES}
        for round_number in range(1, MAX_ROUNDS + 1):  # the last round's near-misses are the nodes left
            ctx.report_progress("qoperator-to-qdq round", round_number, None)
            reports = apply_rules(RULES, rewrites, after_rule=refresh)
            for name, report in reports.items():
                fired[name] += report.fired
            if not any(report.fired for report in reports.values()):
                break
        for name, report in reports.items():
            report.fired = fired[name]
        counters = dict(fired)
        if any(counters.values()):
            remove_dead_nodes(model.graph)
            toposort(model.graph)
        return PassResult(changed=any(counters.values()), counters=counters, notes=rule_notes(reports, self.name),
                          details={"rules": rule_details(reports)})

