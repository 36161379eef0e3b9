"""Budgets: every kind passes and fails on real compiles; the file is validated; the CLI gates on them."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import mapc
from mapc.budgets import BUDGETS, check_budgets, load_budgets
from mapc.ir import UsageError
from mapc.metrics import Metrics, metrics_of
from tests.conftest import MAPC_SCRIPT
from tests.targets.models import static_cnn
from tests.tracking.conftest import CNN, QUANTIZE, read


def metrics(reports, name: str) -> Metrics:
    return metrics_of(read(reports[name]))


def degraded_top1(reports) -> Metrics:
    """The quantized CNN's report with its top-1 agreement lowered to 0.5 (a compile that lost it)."""
    report = copy.deepcopy(read(reports["cq"]))
    quantize = next(p for p in report["passes"] if p["name"] == "quantize")
    quantize["details"]["accuracy"]["outputs"][0]["top1_agreement"] = 0.5
    return metrics_of(report)


def sqnr(m: Metrics) -> float:
    value = m.worst_sqnr_db
    assert value is not None
    return value


def latency_increase(new: Metrics, old: Metrics) -> float:
    return new.estimated_ms / old.estimated_ms - 1


#: budget -> (passing case, failing case); a case is (limit, new compile, old compile or None).
#: Limits are read from the compiles themselves, just on either side of what they achieved.
CASES = {
    "min_nodes_on_target": (lambda r: (metrics(r, "cq_softmax").nodes_on_target_fraction, "cq_softmax", None),
                            lambda r: (metrics(r, "cq_softmax").nodes_on_target_fraction + 0.01, "cq_softmax", None)),
    "min_macs_on_target": (lambda r: (1.0, "cq", None), lambda r: (0.5, "c", None)),
    "max_partitions": (lambda r: (1, "cq", None), lambda r: (0, "cq", None)),
    "max_fallback_nodes": (lambda r: (metrics(r, "cq_softmax").fallback_nodes, "cq_softmax", None),
                           lambda r: (metrics(r, "cq_softmax").fallback_nodes - 1, "cq_softmax", None)),
    "max_estimated_ms": (lambda r: (metrics(r, "cq").estimated_ms, "cq", None), lambda r: (metrics(r, "cq").estimated_ms * 0.99, "cq", None)),
    "require_static": (lambda r: (True, "cq", None), lambda r: (True, "c_dynamic", None)),
    "min_sqnr_db": (lambda r: (sqnr(metrics(r, "cq")) - 0.01, "cq", None), lambda r: (sqnr(metrics(r, "cq")) + 0.01, "cq", None)),
    "min_cosine": (lambda r: (metrics(r, "cq").outputs["probabilities"].cosine, "cq", None), lambda r: (1.0, "cq", None)),
    "min_top1": (lambda r: (1.0, "cq", None), lambda r: (0.9, degraded_top1(r), None)),
    "no_new_fallback_reasons": (lambda r: (True, "cq", "cq_softmax"), lambda r: (True, "cq_softmax", "cq")),
    "max_sqnr_drop_db": (lambda r: (0.0, "cq16", "cq"), lambda r: (sqnr(metrics(r, "cq16")) - sqnr(metrics(r, "cq")) - 0.01, "cq", "cq16")),
    "max_latency_increase": (lambda r: (latency_increase(metrics(r, "cq_softmax"), metrics(r, "cq")), "cq_softmax", "cq"),
                             lambda r: (latency_increase(metrics(r, "cq_softmax"), metrics(r, "cq")) - 0.001, "cq_softmax", "cq")),
    "max_macs_on_target_drop": (lambda r: (0.0, "cq_ethos", "cq"), lambda r: (0.5, "c", "cq")),
}


def test_every_budget_has_cases():
    assert set(CASES) == set(BUDGETS)


@pytest.mark.parametrize("outcome", ["passed", "failed"])
@pytest.mark.parametrize("key", sorted(BUDGETS))
def test_every_budget_passes_and_fails(reports, key, outcome):
    limit, new, old = CASES[key][outcome == "failed"](reports)
    new = metrics(reports, new) if isinstance(new, str) else new
    old = metrics(reports, old) if isinstance(old, str) else old
    checks = check_budgets({key: limit}, new, old)
    assert checks and {c.budget for c in checks} == {key}
    assert [c.status for c in checks] == [outcome] * len(checks), [c.detail for c in checks]


def test_sqnr_budgets_check_every_output(reports):
    checks = check_budgets({"min_sqnr_db": 0.0}, metrics(reports, "tq"))
    assert [c.name for c in checks] == [f"min_sqnr_db[{name}]" for name in metrics(reports, "tq").outputs]


def test_a16w8_has_the_better_sqnr(reports):
    """What the max_sqnr_drop_db cases rest on."""
    assert sqnr(metrics(reports, "cq16")) > sqnr(metrics(reports, "cq")) + 0.01


def test_no_new_fallback_reasons_names_the_reason_and_nodes(reports):
    [check] = check_budgets({"no_new_fallback_reasons": True}, metrics(reports, "cq_softmax"), metrics(reports, "cq"))
    assert check.status == "failed" and "user.cpu-ops on softmax_out" in check.detail


def test_relative_budgets_are_skipped_without_an_old_report(reports):
    checks = check_budgets({"max_sqnr_drop_db": 0.5, "no_new_fallback_reasons": True}, metrics(reports, "cq"))
    assert [(c.budget, c.status) for c in checks] == [("max_sqnr_drop_db", "skipped"), ("no_new_fallback_reasons", "skipped")]


@pytest.mark.parametrize(("key", "limit", "missing"), [
    ("min_macs_on_target", 0.5, "MACs on the target (compile with --target)"),
    ("min_sqnr_db", 20, "quantization accuracy"),
])
def test_a_budget_whose_metric_is_missing_fails(key, limit, missing):
    report = mapc.compile(static_cnn(size=16)).report  # no target, not quantized
    [check] = check_budgets({key: limit}, metrics_of(report))
    assert check.status == "failed" and missing in check.detail


@pytest.mark.parametrize(("text", "fragment"), [
    ("min_sqrn_db = 30\n", "unknown budget 'min_sqrn_db' (did you mean 'min_sqnr_db'?"),
    ("max_partitions = 1.5\n", "max_partitions must be an integer"),
    ("max_partitions = true\n", "max_partitions must be an integer"),
    ("min_sqnr_db = \"30\"\n", "min_sqnr_db must be a number"),
    ("min_macs_on_target = 99\n", "min_macs_on_target must be between 0 and 1"),
    ("max_estimated_ms = -1\n", "max_estimated_ms must be at least 0"),
    ("require_static = false\n", "require_static must be true"),
    ("min_sqnr_db = \n", "not valid TOML"),
    ("", "no budgets"),
])
def test_bad_budget_files_are_one_line_usage_errors(tmp_path, text, fragment):
    path = tmp_path / "budgets.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as error:
        load_budgets(path)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_missing_budget_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_budgets(tmp_path / "nope.toml")


def test_budgets_keep_file_order(tmp_path):
    path = tmp_path / "budgets.toml"
    path.write_text("max_partitions = 2\nmin_macs_on_target = 0.5\n")
    assert list(load_budgets(path)) == ["max_partitions", "min_macs_on_target"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MAPC_SCRIPT, *args], capture_output=True, text=True, cwd=cwd)


def test_compile_with_a_breached_budget_exits_1_with_one_line_per_budget_and_junit(tmp_path):
    budgets = tmp_path / "budgets.toml"
    budgets.write_text("max_partitions = 0\nmin_sqnr_db = 99\nmin_macs_on_target = 0.99\nno_new_fallback_reasons = true\n")
    output, junit = tmp_path / "out.onnx", tmp_path / "junit.xml"
    done = run("compile", *CNN, "--target", "npu", *QUANTIZE, "-o", str(output), "--expect", str(budgets), "--junit", str(junit), "-q", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    first, second = done.stderr.splitlines()
    assert first == "mapc: budget breached: max_partitions: partitions 1, at most 0 allowed"
    assert second.startswith("mapc: budget breached: min_sqnr_db[probabilities]: SQNR dB ") and second.endswith(", at least 99 expected")
    assert output.is_file(), "the compiled model is written before the budgets are checked"
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == ["max_partitions", "min_sqnr_db[probabilities]", "min_macs_on_target", "no_new_fallback_reasons"]
    assert [name for name, case in cases.items() if case.find("failure") is not None] == ["max_partitions", "min_sqnr_db[probabilities]"]
    assert cases["no_new_fallback_reasons"].find("skipped") is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "2", "1")


def test_compile_within_budgets_exits_0_and_prints_the_table(tmp_path):
    budgets = tmp_path / "budgets.toml"
    budgets.write_text("max_partitions = 1\nmin_macs_on_target = 0.99\n")
    done = run("compile", *CNN, "--target", "npu", *QUANTIZE, "-o", str(tmp_path / "o.onnx"), "--expect", str(budgets), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "budgets" in done.stdout and "min_macs_on_target" in done.stdout and done.stderr == ""


def test_a_bad_budget_file_fails_before_compiling(tmp_path):
    budgets = tmp_path / "budgets.toml"
    budgets.write_text("max_partition = 1\n")
    done = run("compile", *CNN, "-o", str(tmp_path / "o.onnx"), "--expect", str(budgets), cwd=tmp_path)
    assert done.returncode == 2 and not (tmp_path / "o.onnx").exists()
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "unknown budget 'max_partition'" in done.stderr


def test_diff_with_budgets_gates_on_the_new_compile_against_the_old(reports, tmp_path):
    budgets = tmp_path / "budgets.toml"
    budgets.write_text("no_new_fallback_reasons = true\nmax_latency_increase = 0.05\nmax_partitions = 1\n")
    junit = tmp_path / "junit.xml"
    done = run("diff", str(reports["cq"]), str(reports["cq_softmax"]), "--markdown", "--expect", str(budgets), "--junit", str(junit), cwd=tmp_path)
    assert done.returncode == 1
    assert [line.split(":")[2].strip() for line in done.stderr.splitlines()] == ["no_new_fallback_reasons", "max_latency_increase"]
    assert "**Budgets**" in done.stdout and "| `max_partitions` | ✅ passed |" in done.stdout
    cases = [case.get("name") for case in ET.parse(junit).getroot().iter("testcase")]
    assert cases == ["no_new_fallback_reasons", "max_latency_increase", "max_partitions"]
    same = run("diff", str(reports["cq"]), str(reports["cq_again"]), "--expect", str(budgets), cwd=tmp_path)
    assert same.returncode == 0, same.stderr


def test_latency_from_zero_is_an_unbounded_increase(reports):
    old = dataclasses.replace(metrics(reports, "cq"), estimated_ms=0.0)
    [check] = check_budgets({"max_latency_increase": 10.0}, metrics(reports, "cq"), old)
    assert check.status == "failed" and "+inf%" in check.detail
    [same] = check_budgets({"max_latency_increase": 0.0}, old, old)
    assert same.status == "passed"
