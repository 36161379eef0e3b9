"""``assert_pass_preserves``: the differential check every pass must pass.

Given a model and a pass (or pipeline), it checks that the rewritten model

1. is valid (onnx checker) and loads and runs in onnxruntime;
2. computes the same outputs as the original on the verification samples of ``--verify``
   (:func:`mapc.ir.verification_samples`: token ids over the vocabulary, padded and fully masked
   masks, floats at several scales, free dims at several values), or on the given feeds:
   integer and boolean outputs exactly, floating-point ones within the per-dtype tolerances of
   :mod:`mapc.ir.compare`;
3. is a fixed point: running the pass again reports no change (idempotence);
4. is deterministic: compiling a fresh copy gives byte-identical output.

Failures raise ``AssertionError`` with the reason and the original model in ONNX text form, so
a failing hypothesis example can be reproduced by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx.printer

from mapc.ir import Model, Tolerance, VerificationError, check_valid, compare_outputs, load, run, verification_samples
from mapc.passes import INTERFACE_CHANGES, SAMPLES, Pass, PassContext, PassManager, PassRecord, StepSpec
from mapc.passes.attention_mask import mask_input_roles

PassLike = str | Pass | type[Pass] | Sequence[StepSpec]


def assert_pass_preserves(
    model: onnx.ModelProto | bytes,
    pass_or_pipeline: PassLike,
    *,
    seed: int = 0,
    tolerance: Tolerance | None = None,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    idempotent: bool = True,
    deterministic: bool = True,
    feeds: Mapping[str, np.ndarray] | None = None,
    ignore: Mapping[str, np.ndarray] | None = None,
    samples: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> tuple[Model, list[PassRecord]]:
    """Run the checks above; return the rewritten model and the pass records of its first run.

    ``feeds`` replaces the verification samples. ``samples`` plays the user's own samples
    (``--verify-inputs``): the passes may measure value ranges on them (``SAMPLES``). ``ignore`` maps output names to boolean arrays
    (broadcastable to the output) marking elements left out of the comparison: positions where
    the pass's contract allows a difference, e.g. fully masked attention rows.
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(model)
    steps = _steps(pass_or_pipeline)

    def context() -> PassContext:
        ctx = PassContext(
            seed=seed,
            dims=dict(dims or {}),
            input_shapes={k: list(v) for k, v in (input_shapes or {}).items()},
        )
        if samples is not None:
            ctx.facts[SAMPLES] = [dict(sample) for sample in samples]
        return ctx

    reference = load(proto)
    if feeds is not None:
        cases, expected_outputs = [dict(feeds)], [run(reference, feeds)]
    else:
        cases, expected_outputs = _runnable(reference, seed, dims, input_shapes)

    rewritten = load(proto)
    ctx = context()
    records = PassManager(steps).run(rewritten, ctx)
    for case, expected in zip(cases, expected_outputs):
        for change in ctx.facts.get(INTERFACE_CHANGES, {}).values():  # e.g. split-stacked-kv's new inputs
            case, expected = change.feeds(case), change.outputs(expected)
        try:
            check_valid(rewritten)
            actual = run(rewritten, case)
        except VerificationError as error:
            _fail(f"the rewritten model is invalid: {error}", proto, records)
        except Exception as error:  # onnxruntime refusing the model is a failure of the pass
            _fail(f"the rewritten model does not run: {error}", proto, records)
        if ignore:
            expected = {k: np.where(ignore[k], np.zeros((), v.dtype), v) if k in ignore else v for k, v in expected.items()}
            actual = {k: np.where(ignore[k], np.zeros((), v.dtype), v) if k in ignore else v for k, v in actual.items()}
        for comparison in compare_outputs(expected, actual, tolerance=tolerance):
            if not comparison.ok:
                shapes = {name: list(value.shape) for name, value in case.items()}
                _fail(f"output {comparison.name!r} changed on inputs {shapes}: {comparison.problem}", proto, records, expected, actual)
    first_bytes = rewritten.to_proto().SerializeToString(deterministic=True)

    if deterministic:
        again = load(proto)
        PassManager(steps).run(again, context())
        if again.to_proto().SerializeToString(deterministic=True) != first_bytes:
            _fail("not deterministic: compiling the same model twice gave different bytes", proto, records)
    if idempotent:
        second = PassManager(steps).run(rewritten, context())
        changed = [record for record in second if record.changed]
        if changed:
            what = ", ".join(f"{r.name} ({_nonzero(r.counters)})" for r in changed)
            _fail(f"not idempotent: a second run still changed the model: {what}", proto, records)
    return rewritten, records


def _runnable(
    model: Model, seed: int, dims: Mapping[str, int] | None, shapes: Mapping[str, Sequence[int]] | None
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The verification samples the original model runs on (the first one must), and its outputs."""
    cases, outputs = [], []
    masks = mask_input_roles(model.graph)
    for index, sample in enumerate(verification_samples(model, seed=seed, dims=dims, shapes=shapes, masks=masks)):
        try:
            outputs.append(run(model, sample.feeds))
        except Exception:
            if index == 0:
                raise
            continue
        cases.append(sample.feeds)
    return cases, outputs


def _steps(pass_or_pipeline: PassLike) -> str | Sequence[StepSpec]:
    if isinstance(pass_or_pipeline, type) and issubclass(pass_or_pipeline, Pass):
        return [pass_or_pipeline()]
    if isinstance(pass_or_pipeline, Pass):
        return [pass_or_pipeline]
    return pass_or_pipeline


def _nonzero(counters: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counters.items() if v) or "no counters"


def _fail(
    reason: str,
    proto: onnx.ModelProto,
    records: list[PassRecord],
    expected: Mapping[str, np.ndarray] | None = None,
    actual: Mapping[str, np.ndarray] | None = None,
) -> None:
    lines = [reason]
    lines.append("passes: " + "; ".join(f"{r.name}: {_nonzero(r.counters)}" for r in records))
    if expected is not None and actual is not None:
        for name in expected:
            lines.append(f"  {name}: expected {np.asarray(expected[name]).ravel()[:6]} got {np.asarray(actual.get(name)).ravel()[:6]}")
    text = onnx.printer.to_text(proto)
    lines.append("original model:\n" + (text if len(text) < 6000 else text[:6000] + "\n..."))
    raise AssertionError("\n".join(lines))
