"""The compiled model must be one onnxruntime loads: checked before anything is written.

A model that onnxruntime loads but cannot run for any input (a Reshape to a size its input
never has, found only by running it) can compile into a model that no longer loads, once
folding has made the contradiction static. :func:`check_compiled` runs the load-time onnx check
on the result's weight-free skeleton; when it fails, the input model is run once on seeded
inputs to tell the two causes apart: an input that does not run is the user's problem (exit 3),
an input that runs means mapc broke it (an internal error).
"""

from __future__ import annotations

from mapc.ir import SKELETON_INLINE_BYTES, Model, ModelError, OnnxRuntimeError, check_onnx, load, run, seeded_inputs


def check_compiled(model: Model) -> None:
    """Raise :class:`ModelError` if the compiled ``model`` fails the onnx check because its input
    does not run in onnxruntime, or RuntimeError (a bug in mapc) if the input runs."""
    try:
        check_onnx(model.to_proto(weights_above=SKELETON_INLINE_BYTES))
    except ModelError as error:
        cause = _input_failure(model)
        if cause is not None:
            raise ModelError(f"the input model does not run in onnxruntime ({cause}); compiled, it is an {error}") from None
        raise RuntimeError(f"the compiled model is no longer valid: {error}") from None


def _input_failure(model: Model) -> str | None:
    """Why the model's source file fails to run on seeded inputs, or None if it runs (or is not a file)."""
    if model.source_path is None:
        return None
    try:
        source = load(model.source_path, base_dir=model.base_dir)
        run(source, seeded_inputs(source))
    except OnnxRuntimeError as error:
        return str(error)
    return None
