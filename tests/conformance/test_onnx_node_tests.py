"""Conformance: ONNX's own backend node tests through ``mapc.compile``.

onnx generates its ~1,900 node test cases in-process (model, inputs, expected outputs). Every
case that onnxruntime passes on the original model must still pass, with the same tolerance
(rtol 1e-3, atol 1e-7, as onnx's backend runner uses), on the model mapc compiles with the
default pipeline. Cases onnxruntime itself fails are skipped with its reason, and so are cases
stamped with an IR version or opset newer than the installed onnx and onnxruntime run (onnx
generates its cases at its own newest versions, which can run ahead of onnxruntime's).

float16/bfloat16 outputs are held to mapc's stated tolerance for float rewrites
(:data:`mapc.ir.compare.TOLERANCES`): a fused op may round differently by an ulp, which onnx's
rtol of 1e-3 (less than one float16 ulp near 1) cannot absorb.
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import mapc
from mapc.ir.compare import TOLERANCES
from mapc.ir.evaluate import session_options
from mapc.ir.runtime_limits import runtime_limits

RTOL, ATOL = 1e-3, 1e-7


@cache
def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return {case.name: case for case in collect_testcases(None)}


def _run(model: onnx.ModelProto, inputs: list) -> list:
    session = ort.InferenceSession(model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs)))


def _matches(actual: list, expected: list) -> str | None:
    """None if ``actual`` equals ``expected`` as onnx's backend runner judges it, else why not."""
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for index, (value, reference) in enumerate(zip(actual, expected)):
        if isinstance(reference, list) or isinstance(value, list):
            if len(value) != len(reference):
                return f"output {index}: sequence length differs"
            pairs = zip(value, reference)
        elif reference is None or value is None:
            if (reference is None) != (value is None):
                return f"output {index}: optional presence differs"
            continue
        else:
            pairs = [(value, reference)]
        for got, want in pairs:
            got, want = np.asarray(got), np.asarray(want)
            if want.dtype.kind in "OUS":
                if not np.array_equal(got.astype(object), want.astype(object)):
                    return f"output {index}: strings differ"
                continue
            rtol, atol = RTOL, ATOL
            if want.dtype.name in ("float16", "bfloat16"):
                rtol, atol = TOLERANCES[want.dtype.name].rtol, TOLERANCES[want.dtype.name].atol
            try:
                np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
            except AssertionError as error:
                return f"output {index}: {str(error).strip().splitlines()[0]}"
    return None


def _newer_than_installed(model: onnx.ModelProto) -> str | None:
    """Why ``model`` is beyond the installed runtime's versions, or None if it is not."""
    limits = runtime_limits()
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)
    if model.ir_version > limits.max_ir_version:
        return f"IR version {model.ir_version} is newer than the installed {limits.describe()} run (at most {limits.max_ir_version})"
    if opset > limits.max_opset:
        return f"ai.onnx opset {opset} is newer than the installed {limits.describe()} run (at most {limits.max_opset})"
    return None


@pytest.mark.parametrize("name", sorted(_cases()))
def test_node_case_survives_default_pipeline(name):
    case = _cases()[name]
    newer = _newer_than_installed(case.model)
    if newer:
        pytest.skip(newer)
    inputs, expected = case.data_sets[0]
    try:
        reference = _run(case.model, inputs)
    except Exception as error:  # onnxruntime cannot run the original: not mapc's concern
        pytest.skip(f"onnxruntime fails the original: {str(error).strip().splitlines()[0][:120]}")
    problem = _matches(reference, expected)
    if problem:
        pytest.skip(f"onnxruntime gives a different result on the original: {problem[:120]}")
    compiled = mapc.compile(case.model).model.to_proto()
    assert _matches(_run(compiled, inputs), expected) is None


def test_cases_beyond_the_installed_runtime_are_skipped_with_the_versions_named():
    limits = runtime_limits()
    case = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []), opset_imports=[onnx.helper.make_opsetid("", limits.max_opset)])
    case.ir_version = limits.max_ir_version
    assert _newer_than_installed(case) is None
    case.opset_import[0].version = limits.max_opset + 1
    assert f"opset {limits.max_opset + 1} is newer than the installed onnx {onnx.__version__} and onnxruntime {ort.__version__}" in _newer_than_installed(case)
    case.ir_version = limits.max_ir_version + 1
    assert f"IR version {limits.max_ir_version + 1} is newer" in _newer_than_installed(case)
