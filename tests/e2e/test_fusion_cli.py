"""The fusion flags as a user runs them: --target-opset, --strict-fusion, the JSON report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx

from mapc.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transformers"


def test_target_opset_gives_standard_ops_and_a_report(tmp_cwd, capsys):
    shutil.copy(FIXTURES / "llama-dynamo-sdpa.onnx", "llama.onnx")
    code = main(["compile", "llama.onnx", "-o", "out.onnx", "--target-opset", "23", "--strict-fusion", "--verify", "--report", "r.json"])
    assert code == 0, capsys.readouterr().err
    model = onnx.load("out.onnx")
    ops = {node.op_type for node in model.graph.node}
    assert {"Attention", "RMSNormalization", "RotaryEmbedding"} <= ops and "Softmax" not in ops
    assert not model.functions and model.opset_import[0].version == 23
    report = json.loads(Path("r.json").read_text())
    fuse = next(p for p in report["passes"] if p["name"] == "fuse")
    assert fuse["details"]["rules"]["attention"] == {"fired": 2, "near_misses": []}
    assert report["options"]["target_opset"] == 23 and report["verification"]["ok"]


def test_without_target_opset_fused_ops_are_mapc_functions(tmp_cwd, capsys):
    shutil.copy(FIXTURES / "bert-dynamo-eager.onnx", "bert.onnx")
    assert main(["compile", "bert.onnx", "-o", "out.onnx", "--verify", "-q"]) == 0, capsys.readouterr().err
    model = onnx.load("out.onnx")
    assert {(f.domain, f.name) for f in model.functions} == {("mapc", "Attention"), ("mapc", "Gelu")}
    onnx.checker.check_model(model, full_check=True)


def test_strict_fusion_fails_with_one_line_naming_the_fix(tmp_cwd, capsys):
    shutil.copy(FIXTURES / "bert-ts-eager.onnx", "bert.onnx")
    code = main(["compile", "bert.onnx", "-o", "out.onnx", "--strict-fusion", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith("mapc: error: --strict-fusion:") and "fix-shapes" in err
    assert not Path("out.onnx").exists()


def test_near_misses_are_printed_as_warnings(tmp_cwd, capsys):
    shutil.copy(FIXTURES / "bert-ts-eager.onnx", "bert.onnx")
    assert main(["compile", "bert.onnx", "-o", "out.onnx"]) == 0
    out = capsys.readouterr().out
    assert "warning: fuse" in out and "fix:" in out


def test_passes_lists_the_fusion_passes(capsys):
    assert main(["passes", "--json"]) == 0
    names = {entry["name"] for entry in json.loads(capsys.readouterr().out)}
    assert {"fuse", "canonicalize", "upgrade-opset"} <= names
