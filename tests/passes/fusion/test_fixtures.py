"""Real exports (tests/fixtures/transformers): every attention, norm, GELU and RoPE fused, outputs kept.

The fixtures are BERT, DistilBERT, GPT-2, ViT, Whisper-encoder and Llama (GQA) blocks exported
with both torch.onnx exporters, eager and SDPA attention (see the folder's README and
manifest.json, which lists the expected pattern counts). Outputs are compared with the PyTorch
reference outputs stored beside each model, at the manifest's tolerance.

* dynamo exports carry precise symbolic shapes: they fuse completely as exported.
* TorchScript exports compute head counts and slice bounds at run time: they fuse completely
  once the input shapes are fixed and the shape arithmetic is folded. Until mapc has its own
  ``fix-shapes`` and ``fold-constants`` passes, :func:`fix_and_fold` does that with onnx shape
  inference and onnx-graphsurgeon's folder; as exported they report near-misses naming the fix.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mapc.ir import Model, load, run
from mapc.passes import PassContext
from mapc.passes.pipeline import PassManager

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "transformers"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
OK = sorted(name for name, entry in MANIFEST["fixtures"].items() if entry["status"] == "ok")
TOLERANCE = MANIFEST["tolerance"]
FUSED_OPS = ("Attention", "LayerNormalization", "RMSNormalization", "Gelu", "RotaryEmbedding")


def reference(name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    data = np.load(FIXTURES / f"{name}.npz")
    feeds = {key.split(":", 1)[1]: data[key] for key in data.files if key.startswith("input:")}
    outputs = {key.split(":", 1)[1]: data[key] for key in data.files if key.startswith("output:")}
    return feeds, outputs


def expected_counts(name: str) -> Counter:
    patterns = MANIFEST["fixtures"][name]["expected_patterns"]
    return Counter(
        {
            "Attention": patterns["attention"],
            "LayerNormalization": patterns["layernorm"],
            "RMSNormalization": patterns["rmsnorm"],
            "Gelu": patterns["gelu"]["count"],
            "RotaryEmbedding": patterns["rotary_embedding"],
        }
    )


def fused_counts(model: Model) -> Counter:
    return Counter(node.op for node in model.graph.nodes if node.op in FUSED_OPS)


def fix_and_fold(name: str, feeds: dict[str, np.ndarray]) -> Model:
    """The fixture with its input shapes fixed to ``feeds``' and its shape arithmetic folded."""
    model = load(FIXTURES / f"{name}.onnx")
    shapes = {key: list(value.shape) for key, value in feeds.items()}
    PassManager("fix-shapes,fold-constants,cleanup").run(model, PassContext(input_shapes=shapes))
    return model


def check_outputs(model: Model, name: str, feeds: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    actual = run(model, feeds)
    for output, value in expected.items():
        np.testing.assert_allclose(actual[output], value, rtol=TOLERANCE, atol=TOLERANCE, err_msg=f"{name}: {output}")


def compile_fixture(model: Model, target_opset: int | None) -> list:
    pipeline = ("upgrade-opset{opset=%d}," % target_opset if target_opset else "") + "fuse"
    return PassManager(pipeline).run(model, PassContext())


@pytest.mark.parametrize("target_opset", [None, 23])
@pytest.mark.parametrize("name", OK)
def test_fixture_fuses_completely_and_keeps_its_outputs(name, target_opset):
    feeds, expected = reference(name)
    dynamo = MANIFEST["fixtures"][name]["exporter"] == "dynamo"
    model = load(FIXTURES / f"{name}.onnx") if dynamo else fix_and_fold(name, feeds)
    records = compile_fixture(model, target_opset)
    fuse_record = records[-1]
    assert fused_counts(model) == +expected_counts(name), fuse_record.notes
    assert not any(node.op in ("Softmax", "Erf") for node in model.graph.nodes)
    standard = target_opset is not None or model.opset >= 23
    assert all((node.domain or "") == ("" if standard else "mapc") or node.op in ("LayerNormalization",) for node in model.graph.nodes if node.op in FUSED_OPS)
    check_outputs(model, name, feeds, expected)


@pytest.mark.parametrize("name", [n for n in OK if MANIFEST["fixtures"][n]["exporter"] == "torchscript"])
def test_torchscript_export_as_is_names_the_missing_shape_work(name):
    model = load(FIXTURES / f"{name}.onnx")
    record = compile_fixture(model, None)[-1]
    feeds, expected = reference(name)
    check_outputs(model, name, feeds, expected)
    missing = expected_counts(name) - fused_counts(model)
    assert missing, f"{name} fuses completely as exported; its shape arithmetic needs no fixing"
    for op in missing:
        naming_the_fix = [
            note for note in record.notes if note.code.startswith(NEAR_MISS_CODES[op]) and _names_shape_work(note.fix)
        ]
        assert naming_the_fix, (op, record.notes)


#: The note codes of the fuse rules that produce each fused op (``fuse.<rule>.<code>``).
NEAR_MISS_CODES = {
    "Attention": ("fuse.attention.",),
    "LayerNormalization": ("fuse.layer-norm.",),
    "RMSNormalization": ("fuse.rms-norm.",),
    "Gelu": ("fuse.gelu.", "fuse.gelu-tanh."),
    "RotaryEmbedding": ("fuse.rotary.", "fuse.rotary-partial."),
}


def _names_shape_work(fix: str | None) -> bool:
    """A fix that points at fixing input shapes and folding the shape arithmetic."""
    return fix is not None and ("fix-shapes" in fix or "fold" in fix)
