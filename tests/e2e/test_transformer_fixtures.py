"""Every transformer fixture, all inputs fixed: a fully static graph with no Shape/Size that still
computes what the export did (against onnxruntime on the original, and the PyTorch references).

The fixtures are real torch.onnx exports (TorchScript and dynamo; eager and SDPA attention; with
and without KV cache) of tiny random-weight models, described by ``manifest.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mapc
from mapc.ir import is_static, run

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "transformers"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text()) if (FIXTURES / "manifest.json").exists() else {"fixtures": {}}
USABLE = sorted(name for name, entry in MANIFEST["fixtures"].items() if entry.get("status") == "ok")

#: The NPU case: one sequence of 8 tokens after 16 cached ones.
NPU_DIMS = {"batch_size": 1, "sequence_length": 8, "past_sequence_length": 16, "total_sequence_length": 24}


def npu_dims(entry: dict) -> dict[str, int]:
    """Values for every plain dim name the fixture uses (expression dims follow from them)."""
    names = {dim for io in entry["inputs"] for dim in io["dims"] if isinstance(dim, str)}
    plain = {name for name in names if name.isidentifier()}
    missing = plain - set(NPU_DIMS)
    assert not missing, f"give the new dim names {sorted(missing)} a value in NPU_DIMS"
    return {name: NPU_DIMS[name] for name in plain}


def assert_fully_static(model: mapc.Model) -> None:
    leftover = [n.op for n in model.graph.nodes if n.op in ("Shape", "Size")]
    assert not leftover, f"{len(leftover)} Shape/Size ops remain"
    tensors = [*model.graph.inputs, *model.graph.outputs, *(t for t in model.graph.tensors().values() if not isinstance(t, mapc.ir.gs_compat.gs.Constant))]
    dynamic = [t.name for t in tensors if not is_static(t.shape)]
    assert not dynamic, f"dynamic tensors remain: {dynamic[:5]}"


@pytest.mark.parametrize("name", USABLE)
def test_fixture_becomes_static_and_matches_the_original(name):
    entry = MANIFEST["fixtures"][name]
    result = mapc.compile(FIXTURES / entry["file"], dims=npu_dims(entry), require_static=True, verify=True)
    assert_fully_static(result.model)
    assert result.verification["ok"], result.verification
    assert result.nodes_after <= result.nodes_before


@pytest.mark.parametrize("name", [n for n in USABLE if MANIFEST["fixtures"][n].get("npz")])
def test_fixture_fixed_to_the_reference_shapes_matches_pytorch(name):
    entry = MANIFEST["fixtures"][name]
    reference = np.load(FIXTURES / entry["npz"])
    feeds = {key.removeprefix("input:"): reference[key] for key in reference.files if key.startswith("input:")}
    result = mapc.compile(FIXTURES / entry["file"], input_shapes={k: list(v.shape) for k, v in feeds.items()}, require_static=True)
    assert_fully_static(result.model)
    outputs = run(result.model, feeds)
    tolerance = MANIFEST.get("tolerance", 1e-4)
    for key in reference.files:
        if key.startswith("output:"):
            np.testing.assert_allclose(outputs[key.removeprefix("output:")], reference[key], atol=tolerance, rtol=tolerance, err_msg=key)
