"""Differential verification of a compile: does each rewritten model still compute what the input did?

:class:`Verifier` runs the input model in onnxruntime on the verification samples (several,
realistic: :func:`mapc.ir.verification_samples`, or the user's own) and keeps the outputs; :meth:`Verifier.check` validates a rewritten model (onnx checker, onnxruntime
loads it) and compares its outputs on the same inputs with :func:`mapc.ir.compare.compare_outputs`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mapc.ir import Model, OnnxRuntimeError, OutputComparison, Runner, Sample, Tolerance, VerificationError, check_valid, compare_outputs, dim_relations, verification_samples
from mapc.passes.base import PassContext
from mapc.passes.facts import Fact

#: ``hook(model, feeds, outputs) -> {output name: bool array}``: the elements of each output that
#: are undefined for these inputs (True = leave out of the comparison).
UndefinedElements = Callable[[Model, Mapping[str, np.ndarray], Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]

#: Output elements the rewritten model leaves undefined, by the pass that says so
#: (attention-mask: rows whose every key is masked).
UNDEFINED_OUTPUTS: Fact[dict[str, UndefinedElements]] = Fact("undefined-outputs", "output elements a pass made undefined")



@dataclass(frozen=True)
class InterfaceChange:
    """How a pass changed the model's inputs or outputs, so the input model's samples and outputs
    still apply: ``feeds`` adds the new inputs computed from the old ones (old ones may stay:
    extra feeds are ignored), ``outputs`` turns the input model's outputs into the new ones."""

    feeds: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] = dict
    outputs: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] = dict


#: Interface changes by the pass that made them (split-stacked-kv, attention-mask's mask inputs),
#: applied in order to every sample before a rewritten model is run and compared.
INTERFACE_CHANGES: Fact[dict[str, InterfaceChange]] = Fact("interface-changes", "how passes changed the model's inputs and outputs")

#: The user's own input samples (``--verify-inputs``, else a ``--calibration`` folder), set by the
#: compile before the passes run: verification runs on them, and passes may measure ranges on them.
SAMPLES: Fact[list[dict[str, np.ndarray]]] = Fact("samples", "input samples the user gave")


class Verifier:
    """Reference outputs of the input model on the verification samples, and the check every
    rewritten model must pass.

    The samples are the user's (``samples``: ``--verify-inputs``), else
    :func:`mapc.ir.verification_samples` (token ids over the vocabulary, padded and fully
    masked masks, floats at several scales, free dims at several values; ``dims`` are the fixed
    ones, default the context's). A generated sample the
    input model itself cannot run (a free dim at a value it does not accept) is dropped; the
    first one must run.
    """

    def __init__(
        self,
        model: Model,
        ctx: PassContext,
        *,
        samples: Sequence[Mapping[str, np.ndarray]] | None = None,
        dims: Mapping[str, int] | None = None,
        masks: Mapping[str, str] | None = None,
        tolerance: Tolerance | None = None,
    ) -> None:
        self.tolerance = tolerance
        self.ctx = ctx
        given = samples is not None
        try:
            runner = Runner(model)
        except OnnxRuntimeError as error:
            raise OnnxRuntimeError(f"cannot verify: {error}") from None
        if given:
            self.samples, self.expected = _reference_runs(runner, [Sample(dict(feeds), f"sample {i} of --verify-inputs") for i, feeds in enumerate(samples)], every=True)
            return
        # A model whose free dims are related (a KV-cache decoder's mask spans past + new tokens)
        # runs only on samples that keep the relation: try each one the graph suggests.
        first_error = None
        for relation in [None, *dim_relations(model)]:
            candidates = verification_samples(model, seed=ctx.seed, dims=ctx.dims if dims is None else dims, shapes=ctx.input_shapes,
                                              masks=masks, relation=relation)
            try:
                self.samples, self.expected = _reference_runs(runner, candidates, every=False)
                return
            except OnnxRuntimeError as error:
                first_error = first_error or error
        raise first_error

    def compare(self, model: Model) -> list[OutputComparison]:
        """Run ``model`` on every sample and compare (no exception on mismatch): per output, the
        first sample that differs, or the largest error when none does.

        Elements a pass declared undefined in :data:`UNDEFINED_OUTPUTS` are left out
        (attention-mask declares fully masked attention rows)."""
        runner = Runner(model)
        worst: dict[str, OutputComparison] = {}
        for sample, reference in zip(self.samples, self.expected):
            for comparison in self._compare_one(model, runner, sample, reference):
                known = worst.get(comparison.name)
                if not comparison.ok and comparison.problem:
                    comparison = OutputComparison(comparison.name, False, comparison.max_abs_error, f"{comparison.problem} on {sample.label}")
                if known is None or (known.ok and (not comparison.ok or comparison.max_abs_error > known.max_abs_error)):
                    worst[comparison.name] = comparison
        return list(worst.values())

    def _compare_one(self, model: Model, runner: Runner, sample: Sample, expected: dict[str, np.ndarray]) -> list[OutputComparison]:
        feeds = dict(sample.feeds)
        for change in list(self.ctx.facts.get(INTERFACE_CHANGES, {}).values()):
            feeds, expected = change.feeds(feeds), change.outputs(expected)
        actual = runner.run(feeds)
        for hook in list(self.ctx.facts.get(UNDEFINED_OUTPUTS, {}).values()):
            for name, ignored in hook(model, feeds, actual).items():
                if name in expected and name in actual:
                    expected = {**expected, name: np.where(ignored, np.zeros((), expected[name].dtype), expected[name])}
                    actual = {**actual, name: np.where(ignored, np.zeros((), actual[name].dtype), actual[name])}
        return compare_outputs(expected, actual, tolerance=self.tolerance)

    def check(self, model: Model, *, pass_name: str | None = None) -> dict[str, Any]:
        """Validate ``model`` and compare its outputs; raise :class:`VerificationError` naming
        ``pass_name`` on the first problem, else return a JSON-able summary."""
        blame = f"after pass {pass_name!r}: " if pass_name else ""
        try:
            check_valid(model)
            comparisons = self.compare(model)
        except (VerificationError, OnnxRuntimeError) as error:
            raise VerificationError(f"{blame}{error}", pass_name=pass_name) from None
        for comparison in comparisons:
            if not comparison.ok:
                raise VerificationError(
                    f"{blame}output {comparison.name!r} changed: {comparison.problem}", pass_name=pass_name
                )
        return {
            "ok": True,
            "samples": len(self.samples),
            "max_abs_error": max((c.max_abs_error for c in comparisons), default=0.0),
            "outputs": [c.as_dict() for c in comparisons],
        }


def _reference_runs(runner: Runner, candidates: list[Sample], *, every: bool) -> tuple[list[Sample], list[dict[str, np.ndarray]]]:
    """The candidates the input model runs on, with its outputs. The first must run (with
    ``every``: each of them); a later generated one it cannot run (a free dim at a value it does
    not accept) is dropped."""
    kept, outputs = [], []
    for index, sample in enumerate(candidates):
        try:
            outputs.append(runner.run(sample.feeds))
        except OnnxRuntimeError as error:
            if every or index == 0:
                raise OnnxRuntimeError(f"cannot verify: the input model does not run on {sample.label} ({error})") from None
            continue
        kept.append(sample)
    return kept, outputs
