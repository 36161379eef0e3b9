"""``upgrade-opset``: move a model to a newer ai.onnx opset, checked against the original.

The conversion itself is :mod:`mapc.passes.opset_conversion`, shared with ``quantize``.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from mapc.ir import Model, ModelError, OnnxRuntimeError, UsageError, VerificationError, check_valid, compare_outputs, infer_shapes, load, run, runtime_limits, seeded_inputs
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.opset_conversion import ConversionError, convert_version, first_difference, raise_ir_version
from mapc.passes.registry import register_pass


@register_pass
class UpgradeOpset(Pass):
    """Upgrade the model to a newer ai.onnx opset (onnx's version converter), verified.

    Converts every node to the target opset's form with ``onnx.version_converter`` (new ops
    such as LayerNormalization-17, Gelu-20 and Attention-23 become available to ``fuse``), raises
    the IR version if the opset needs it, then checks the result: the onnx checker accepts it and,
    with ``verify`` (default), onnxruntime computes the same outputs as before on seeded inputs
    (integers exactly, floats within mapc's default tolerances). A model already at or above the
    target is left alone. ``mapc compile --target-opset N`` runs this pass first.
    """

    name = "upgrade-opset"

    @dataclass
    class Options:
        #: The ai.onnx opset to reach (required).
        opset: int = 0
        #: Compare outputs with the original model in onnxruntime.
        verify: bool = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        target = self.options.opset
        newest = runtime_limits().max_opset
        if not 1 <= target <= newest:
            raise UsageError(f"upgrade-opset needs opset=N with 1 <= N <= {newest} (got {target})")
        current = model.opset
        if current >= target:
            return PassResult(changed=False, notes=[Note("upgrade-opset.not-needed", f"the model is already at opset {current}")])
        original = model.to_proto()
        try:
            converted = convert_version(original, target)
        except ConversionError as error:
            raise ModelError(f"cannot upgrade the model from opset {current} to {target}: {error}") from None
        raise_ir_version(converted)
        _keep_value_info(original, converted)
        upgraded = load(converted, base_dir=model.base_dir)
        infer_shapes(upgraded)
        details: dict[str, object] = {"from": current, "to": target}
        notes = []
        if self.options.verify:
            details["max_abs_error"] = _verify(original, upgraded, model, ctx)
            if details["max_abs_error"] is None:
                notes.append(Note("upgrade-opset.unverified", "the input model does not run in onnxruntime, so the upgrade was not compared", severity="warning"))
        model.adopt(upgraded)
        return PassResult(changed=True, counters={"opset_from": current, "opset_to": target}, notes=notes, details=details)


def _verify(original: onnx.ModelProto, upgraded: Model, model: Model, ctx: PassContext) -> float | None:
    """Run both models on the same seeded inputs; raise VerificationError if they differ.
    Returns the largest difference (None when the input model does not run in onnxruntime)."""
    _check_structure(upgraded, model)
    feeds = seeded_inputs(model, seed=ctx.seed, dims=ctx.dims, shapes=ctx.input_shapes)
    try:
        expected = run(original, feeds, base_dir=model.base_dir)
    except OnnxRuntimeError:
        return None
    try:
        actual = run(upgraded, feeds)
    except OnnxRuntimeError as error:
        raise VerificationError(f"upgrade to opset {upgraded.opset}: the converted model does not run ({error})") from None
    comparisons = compare_outputs(expected, actual)
    difference = first_difference(comparisons)
    if difference is not None:
        raise VerificationError(f"upgrade to opset {upgraded.opset} changed output {difference.name!r}: {difference.problem}")
    return max((c.max_abs_error for c in comparisons), default=0.0)


def _check_structure(upgraded: Model, original: Model) -> None:
    """The onnx checker must accept the upgraded model if it accepted the original. An input
    the checker already refuses (exporters write Loop bodies without shapes; mapc loads what
    onnxruntime runs) is judged by onnxruntime alone: the conversion did not make it invalid."""
    try:
        check_valid(upgraded)
    except VerificationError:
        try:
            check_valid(original)
        except VerificationError:
            return
        raise


def _keep_value_info(original: onnx.ModelProto, converted: onnx.ModelProto) -> None:
    """Put back the original type and shape annotations (a tensor's shape does not depend on the
    opset): the converter re-infers them without data propagation and loses symbolic dims."""
    produced = {name for node in converted.graph.node for name in node.output}
    kept = [info for info in original.graph.value_info if info.name in produced]
    kept_names = {info.name for info in kept}
    added = [info for info in converted.graph.value_info if info.name not in kept_names]
    del converted.graph.value_info[:]
    converted.graph.value_info.extend(kept + added)
