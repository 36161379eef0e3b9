"""``mapc llm`` as a user runs it: split, report, generate, and one-line errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mapc.ir.errors import EXIT_OK, EXIT_USAGE
from mapc.llm import generate_dynamic
from tests.conftest import MAPC_SCRIPT
from tests.targets.qnn.support import needs_qnn

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "llm"


def mapc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MAPC_SCRIPT, *map(str, args)], capture_output=True, text=True)


def assert_one_line_error(done: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mapc: error: ") and fragment in lines[0], done.stderr


def test_split_report_and_generate(tmp_path):
    model = FIXTURES / "llama-dynamo-kv.onnx"
    out, report = tmp_path / "llama", tmp_path / "report.json"
    done = mapc("llm", model, "--context", 20, "--prefill", 6, "--target", "npu", "-o", out, "--report", report)
    assert done.returncode == EXIT_OK, done.stderr
    assert "100.0%" in done.stdout and "shared by both graphs" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["decode.onnx", "embed.onnx", "manifest.json", "prefill.onnx",
                                                     "rope_cos.npy", "rope_sin.npy", "weights.data"]
    data = json.loads(report.read_text())
    assert data["prefill"]["coverage"]["nodes_percent"] == data["decode"]["coverage"]["nodes_percent"] == 100.0
    agreement = data["llm"]["manifest"]["agreement"]
    assert agreement["tokens_equal"] == agreement["tokens"]
    generated = mapc("llm", "generate", out, "--prompt-ids", "5,17,99,3,64,120,7,8,9", "-n", 8)
    assert generated.returncode == EXIT_OK, generated.stderr
    tokens = [int(t) for t in generated.stdout.strip().split(",")]
    assert tokens == generate_dynamic(model, [5, 17, 99, 3, 64, 120, 7, 8, 9], 8)


def test_quiet_split_prints_nothing(tmp_path):
    done = mapc("llm", FIXTURES / "gpt2-dynamo-kv.onnx", "--context", 16, "--prefill", 4, "-o", tmp_path / "g", "-q")
    assert done.returncode == EXIT_OK and done.stdout == "" and done.stderr == ""


def test_errors_are_one_line(tmp_path):
    model = FIXTURES / "llama-ts-kv.onnx"
    assert_one_line_error(mapc("llm", model, "--prefill", 4), EXIT_USAGE, "--context")
    assert_one_line_error(mapc("llm", model, "--context", 8, "--prefill", 8), EXIT_USAGE, "--prefill 8")
    assert_one_line_error(mapc("llm", model, "--context", 8, "--prefill", 4, "--role", "tokens"), EXIT_USAGE, "ROLE=NAME")
    assert_one_line_error(mapc("llm", tmp_path / "missing.onnx", "--context", 8, "--prefill", 4), EXIT_USAGE, "no such file")
    transformer = FIXTURES.parent / "transformers" / "llama-ts-sdpa.onnx"
    assert_one_line_error(mapc("llm", transformer, "--context", 8, "--prefill", 4, "-o", tmp_path / "x"), EXIT_USAGE,
                          "cannot find the KV cache")
    assert_one_line_error(mapc("llm", "generate", tmp_path, "--prompt-ids", "1,2"), EXIT_USAGE, "manifest.json")
    assert_one_line_error(mapc("llm", "generate", tmp_path), EXIT_USAGE, "--prompt-ids")
    assert_one_line_error(mapc("llm", "generate", tmp_path, "--prompt-ids", "1,x"), EXIT_USAGE, "whole numbers")


@needs_qnn
def test_check_with_qnn_reports_qualcomms_verdict_for_both_graphs(tmp_path):
    done = mapc("llm", FIXTURES / "phi3-dynamo-kv.onnx", "--context", 16, "--prefill", 4, "--target", "qnn-htp",
                "--quantize", "a16w8", "--check-with-qnn", "-o", tmp_path / "phi")
    assert done.returncode == EXIT_OK, done.stderr
    for graph in ("prefill", "decode"):
        assert f"{graph}: QNN HTP (v73) built the model" in done.stdout.replace("\n", " ")
    assert "0 placed on HTP that QNN refused" in done.stdout.replace("\n", " ")
    wrong_target = mapc("llm", FIXTURES / "phi3-dynamo-kv.onnx", "--context", 16, "--prefill", 4, "--target", "npu",
                        "--check-with-qnn", "-o", tmp_path / "x")
    assert_one_line_error(wrong_target, EXIT_USAGE, "qnn")
