"""The example CI workflow (examples/ci/): its script run with the workflow's model and flags, as
the workflow's steps run it (GitHub itself aside): main's compile without a baseline, then pull
requests compared with main's report, one within the budgets and one that adds a CPU fallback."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mapc.ir import load, save
from tests.conftest import MAPC_SCRIPT, append_to_first_output

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "examples" / "ci"
WORKFLOW = (CI / "mapc.yml").read_text()

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the script needs bash")


def workflow_env(name: str) -> str:
    """A value of the workflow's job ``env`` (``NAME: value`` on one line)."""
    match = re.search(rf"^\s+{name}: (.+)$", WORKFLOW, re.MULTILINE)
    assert match, f"{name} is not set in mapc.yml"
    return match.group(1).strip()


def check(tmp_path: Path, model: Path, out: str, baseline: Path | None) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the script as the workflow's step does; returns the run and the job summary file."""
    summary = tmp_path / f"{out}-summary.md"
    env = {**os.environ, "MAPC": MAPC_SCRIPT, "BUDGETS": str(CI / "budgets.toml"), "GITHUB_STEP_SUMMARY": str(summary),
           "BASELINE": str(baseline) if baseline else ""}
    argv = ["bash", str(CI / "mapc-check.sh"), str(model), str(tmp_path / out), *shlex.split(workflow_env("MAPC_FLAGS"))]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env), summary


def test_the_workflow_runs_the_script_with_the_budgets():
    assert "bash examples/ci/mapc-check.sh \"$MODEL\" mapc-out $MAPC_FLAGS" in WORKFLOW
    assert "BUDGETS: examples/ci/budgets.toml" in WORKFLOW and "BASELINE: baseline/report.json" in WORKFLOW
    assert "pull_request" in WORKFLOW and "branches: [main]" in WORKFLOW


def test_main_then_pull_requests(tmp_path):
    model = ROOT / workflow_env("MODEL")
    main, main_summary = check(tmp_path, model, "main", None)
    assert main.returncode == 0, main.stderr
    assert "No baseline report" in main_summary.read_text()
    cases = [case.get("name") for case in ET.parse(tmp_path / "main" / "junit.xml").getroot().iter("testcase")]
    assert cases[:2] == ["min_macs_on_target", "max_partitions"] and "no_new_fallback_reasons" in cases
    baseline = tmp_path / "main" / "report.json"

    same, summary = check(tmp_path, model, "pr-same", baseline)
    assert same.returncode == 0, same.stderr
    text = summary.read_text()
    assert text.startswith("### mapc diff: ") and "**Budgets**" in text and "❌" not in text
    assert "| `no_new_fallback_reasons` | ✅ passed |" in text

    worse = tmp_path / "transformer_acos.onnx"
    changed = load(model)
    append_to_first_output(changed, "Acos")
    save(changed, worse)
    broken, summary = check(tmp_path, worse, "pr-acos", baseline)
    assert broken.returncode == 1, broken.stderr
    assert "mapc: budget breached: no_new_fallback_reasons: new reasons: op.not-supported" in broken.stderr
    text = summary.read_text()
    assert "`op.not-supported`" in text and "| `no_new_fallback_reasons` | ❌ failed |" in text
    suite = ET.parse(tmp_path / "pr-acos" / "junit.xml").getroot().find("testsuite")
    failed = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None]
    assert "no_new_fallback_reasons" in failed
    assert (tmp_path / "pr-acos" / "report.html").is_file() and (tmp_path / "pr-acos" / "model.mapc.onnx").is_file()


def test_a_bad_model_stops_with_mapcs_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    done, summary = check(tmp_path, bad, "bad", None)
    assert done.returncode == 3 and done.stderr.startswith("mapc: error: ") and not summary.exists()
