"""What every fuzz case checks, shared by the mutated-model and the random-graph fuzzers.

:func:`compile_case` runs ``mapc compile`` in-process under a time limit and checks the outcome
a user sees: an allowed exit code, a one-line error without a traceback, the input untouched,
and an output folder holding either nothing new or a complete model. :func:`assert_same_outputs`
is the differential check of a successful compile: on the realistic verification samples
(:func:`mapc.ir.verification_samples`, with a seed of its own so the samples differ from any
mapc used itself), every sample the input model runs on in onnxruntime must give the same
outputs on the compiled model, within mapc's own tolerances (:func:`mapc.ir.compare_outputs`),
except in batch items with a fully masked attention row, whose outputs mapc's contract leaves
undefined.

The fuzzers scale with two environment variables: ``MAPC_FUZZ_CASES`` (cases per fuzz test;
thousands for a local run) and ``MAPC_FUZZ_SEED`` (where the seeds start). Every failure
message names the seed that reproduces it.
"""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from mapc.cli import main
from mapc.ir import compare_outputs, load, run, verification_samples
from mapc.ir.errors import EXIT_BAD_MODEL, EXIT_CHECK_FAILED, EXIT_OK
from mapc.passes.attention_mask import mask_input_roles

TIME_LIMIT_SECONDS = 60
ALLOWED_EXIT_CODES = {EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_MODEL}
#: Seed of the differential samples: not mapc's default verification seed (0).
SAMPLE_SEED = 16


def fuzz_cases(default: int) -> int:
    """How many cases a fuzz test runs: ``MAPC_FUZZ_CASES`` if set, else ``default``."""
    return int(os.environ.get("MAPC_FUZZ_CASES") or default)


def fuzz_seed() -> int:
    """The first seed of a fuzz run: ``MAPC_FUZZ_SEED`` if set, else 0."""
    return int(os.environ.get("MAPC_FUZZ_SEED") or 0)


@contextmanager
def time_limit(seconds: int):
    """Raise TimeoutError in the block after ``seconds`` (a hang is a failure, not a stuck run)."""

    def expire(signum, frame):
        raise TimeoutError(f"mapc compile took more than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class Outcome:
    code: int
    err: str


def compile_case(source: Path, output: Path, flags: Sequence[str], where: str, *, allowed: set[int] = ALLOWED_EXIT_CODES) -> Outcome:
    """Compile ``source`` to ``output`` with ``flags`` through the CLI entry point and check what a
    user sees (module docstring). ``where`` (the seed and flags) starts every failure message."""
    data = source.read_bytes()
    before = set(source.parent.iterdir())
    err = io.StringIO()
    with time_limit(TIME_LIMIT_SECONDS), redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(["compile", str(source), "-o", str(output), "-q", *flags])
    text = err.getvalue()
    assert code in allowed, f"{where}: exit {code}: {text}"
    assert "Traceback" not in text, f"{where}: {text}"
    assert source.read_bytes() == data, f"{where}: input modified"
    expected = {output, output.with_name(output.name + ".data")}
    leftovers = sorted(p.name for p in set(source.parent.iterdir()) - before - expected)
    assert not leftovers, f"{where}: left behind {leftovers}"
    if code == EXIT_OK:
        load(output)
    else:
        lines = text.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mapc: error: "), f"{where}: {text}"
        assert not output.exists(), f"{where}: output written despite an error"
    return Outcome(code, text)


def assert_same_outputs(source: Path, output: Path, where: str, *, dims: Mapping[str, int] | None = None, quantized: bool = False) -> int:
    """On every verification sample the input model runs on, the compiled model must run and
    compute the same outputs (floats within mapc's tolerances; integers exactly). A quantized
    compile is held to the same output names, dtypes and shapes and to finite values where the
    input's are finite: how far 8-bit codes may move an output depends on the model and its
    calibration, which is what the accuracy report measures, not a bound this check can state.
    Returns the number of samples compared."""
    original = onnx.load(str(source), load_external_data=False)
    reference_model = load(source)
    samples = verification_samples(reference_model, seed=SAMPLE_SEED, dims=dims, masks=mask_input_roles(reference_model.graph))
    compiled = onnx.load(str(output), load_external_data=False)
    compared = 0
    for sample in samples:
        try:
            expected = run(original, sample.feeds, base_dir=source.parent)
        except Exception:  # the input itself does not run on this sample: nothing to compare
            continue
        try:
            actual = run(compiled, sample.feeds, base_dir=output.parent)
        except Exception as error:
            raise AssertionError(f"{where}: the input runs on {sample.label} but the compiled model does not: {error}") from None
        expected, actual = _without_fully_masked_items(reference_model, sample.feeds, expected, actual)
        problems = _quantized_problems(expected, actual) if quantized else [
            f"{c.name}: {c.problem}" for c in compare_outputs(expected, actual) if not c.ok
        ]
        assert not problems, f"{where}: outputs differ on {sample.label}: {'; '.join(problems)}"
        compared += 1
    return compared


def _without_fully_masked_items(model, feeds, expected, actual):
    """Outputs without the batch items whose attention mask masks every key of some row: their
    values are undefined by mapc's contract (docs/passes/attention-mask.md, "Fully masked
    rows"), which ``mapc compile --verify`` leaves out too, row by row.

    Whole items, not rows, and that loses nothing: in the samples this check runs on, a fully
    masked row only occurs in a batch item whose mask is masked entirely (the "fully masked row"
    sample; tests/ir/test_samples.py checks it for masks of rank 2 to 4), and in a ``[batch,
    keys]`` padding mask, the examples' kind, a fully masked row *is* the whole item: every query
    of it sees no key. Leaving out only some rows of an item would not be sound from the inputs
    alone: a fully masked query row's output is a key and value of the next attention, which
    the item's other rows read unless that attention masks it too, so those rows may differ
    legitimately. ``--verify`` can go row by row because it reads the masks the model computes,
    after ``attention-mask`` (its ``UNDEFINED_OUTPUTS``); this check stays independent of the
    passes it checks, so rows masked only inside a model (causal and left padding) are not left
    out: a causal example model in the fuzzer would need that first."""
    roles = mask_input_roles(model.graph)
    masked = None
    for name, value in feeds.items():
        if value.ndim < 2 or value.size == 0 or not (name in roles or "mask" in name.lower()):
            continue
        if roles.get(name) == "additive" or value.dtype.kind == "f" and value.min() < np.finfo(value.dtype).min / 2:
            rows = np.all(value <= np.finfo(value.dtype).min / 2, axis=-1)
        else:
            rows = ~np.any(value.astype(bool), axis=-1)
        items = rows.reshape(rows.shape[0], -1).any(axis=1)
        masked = items if masked is None or masked.shape != items.shape else masked | items
    if masked is None or not masked.any():
        return expected, actual
    keep = ~masked

    def trim(outputs):
        return {k: v[keep] if v.ndim and v.shape[0] == keep.shape[0] else v for k, v in outputs.items()}

    return trim(expected), trim(actual)


def _quantized_problems(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> list[str]:
    problems = []
    for name, reference in expected.items():
        value = actual.get(name)
        if value is None:
            problems.append(f"{name}: missing")
        elif value.dtype != reference.dtype or value.shape != reference.shape:
            problems.append(f"{name}: {value.dtype}{list(value.shape)} != expected {reference.dtype}{list(reference.shape)}")
        elif reference.dtype.kind == "f" and not np.isfinite(value[np.isfinite(reference)]).all():
            problems.append(f"{name}: non-finite values where the input model's are finite")
    return problems
