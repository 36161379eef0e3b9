"""``--verify-inputs DIR``: the user's own samples for verification, and for calibration without --calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mapc.ir.errors import EXIT_OK, EXIT_USAGE
from tests.e2e.test_cli import EXAMPLES, assert_one_line_error, mapc

SHAPES = ["--input-shape", "input_ids:1,16", "--input-shape", "attention_mask:1,16"]


def _samples(folder: Path, count: int = 3, *, drop: str | None = None) -> Path:
    folder.mkdir()
    for index in range(count):
        rng = np.random.default_rng(index)
        mask = np.ones((1, 16), np.int64)
        mask[0, 16 - 4 * index:] = 0
        arrays = {"input_ids": rng.integers(0, 64, (1, 16)), "attention_mask": mask}
        arrays.pop(drop, None)
        np.savez(folder / f"sample{index}.npz", **arrays)
    return folder


def test_verify_runs_on_the_users_samples(tmp_path):
    report = tmp_path / "report.json"
    done = mapc("compile", str(EXAMPLES / "transformer.onnx"), "-o", str(tmp_path / "out.onnx"), *SHAPES, "--verify-each", "--verify",
                "--verify-inputs", str(_samples(tmp_path / "samples")), "--report", str(report))
    assert done.returncode == EXIT_OK, done.stderr
    assert "outputs match on 3 samples" in done.stdout
    data = json.loads(report.read_text())
    assert data["verification"]["samples"] == 3 and all(r["verification"]["samples"] == 3 for r in data["passes"])


def test_generated_samples_are_several(tmp_path):
    done = mapc("compile", str(EXAMPLES / "transformer.onnx"), "-o", str(tmp_path / "out.onnx"), *SHAPES, "--verify")
    assert done.returncode == EXIT_OK, done.stderr
    assert "outputs match on 4 samples" in done.stdout


def test_a_missing_folder_or_a_sample_without_an_input_is_a_one_line_usage_error(tmp_path):
    common = ["compile", str(EXAMPLES / "transformer.onnx"), "-o", str(tmp_path / "out.onnx"), *SHAPES, "--verify"]
    assert_one_line_error(mapc(*common, "--verify-inputs", str(tmp_path / "nowhere")), EXIT_USAGE, "expected a folder of .npz files")
    broken = _samples(tmp_path / "broken", drop="attention_mask")
    assert_one_line_error(mapc(*common, "--verify-inputs", str(broken)), EXIT_USAGE, "no array for input 'attention_mask'")
    assert not (tmp_path / "out.onnx").exists()


def test_the_samples_calibrate_when_no_calibration_is_given(tmp_path):
    report = tmp_path / "report.json"
    done = mapc("compile", str(EXAMPLES / "transformer.onnx"), "-o", str(tmp_path / "out.onnx"), *SHAPES, "--quantize",
                "--verify-inputs", str(_samples(tmp_path / "samples", count=4)), "--report", str(report))
    assert done.returncode == EXIT_OK, done.stderr
    quantize = next(r for r in json.loads(report.read_text())["passes"] if r["name"] == "quantize")
    calibration = quantize["details"]["calibration"]
    assert calibration["samples"] + quantize["details"]["accuracy"]["samples"] == 4
    assert calibration["random"] is False and "samples" in calibration["data"]
