"""The target side of the CLI as a user runs it: mapc targets, compile --target, reports, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from mapc.cli import main
from tests.targets.models import static_cnn, static_transformer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.onnx"))


@pytest.fixture
def models(tmp_path):
    paths = {}
    for name, proto in (("cnn", static_cnn()), ("transformer", static_transformer())):
        paths[name] = tmp_path / f"{name}.onnx"
        onnx.save(proto, str(paths[name]))
    return paths


def test_targets_lists_the_builtins(capsys):
    assert main(["targets", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in listing] == ["npu", "cpu", "ethos-u55", "qnn-htp"]
    assert [t["name"] for t in listing if t["default"]] == ["npu"]
    assert main(["targets"]) == 0
    assert "ethos-u55" in capsys.readouterr().out


def test_targets_show_prints_every_rule(capsys):
    assert main(["targets", "--show", "npu", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    codes = [rule["code"] for rule in shown["rules"]]
    assert codes[0] == "op.listed" and "conv.stride" in codes and "shape.static" in codes
    assert all(rule["text"] for rule in shown["rules"])
    assert main(["targets", "--show", "npu"]) == 0
    assert "Conv strides must be between 1 and 8" in capsys.readouterr().out


def test_compile_for_the_npu_end_to_end(models, tmp_path, capsys):
    out, report, html, parts = tmp_path / "out.onnx", tmp_path / "r.json", tmp_path / "r.html", tmp_path / "parts"
    code = main(["compile", str(models["transformer"]), "-o", str(out), "--target", "npu", "--verify",
                 "--report", str(report), "--report", str(html), "--emit-partitions", str(parts)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "target npu: 54/55 nodes" in text and "params.constant" in text and "verify: outputs match" in text
    assert "estimate:" in text and "on the CPU alone" in text
    data = json.loads(report.read_text())
    assert data["coverage"]["nodes_on_target"] == 54 and data["output"] == str(out)
    assert [entry["op_type"] for entry in data["fallback"]] == ["Gather"]
    assert data["verification"]["ok"]
    assert html.read_text().startswith("<!DOCTYPE html>")
    assert (parts / "partitions.json").exists() and (parts / "host.onnx").exists()
    compiled = onnx.load(str(out))
    assert {p.key for p in compiled.metadata_props} >= {"mapc.target", "mapc.version", "mapc.summary", "mapc.partition_options"}


def test_partition_flags_change_the_plan(models, tmp_path):
    report = tmp_path / "r.json"
    assert main(["compile", str(models["cnn"]), "-o", str(tmp_path / "o.onnx"), "--target", "--cpu-ops", "Add", "--max-partitions", "1", "--report", str(report), "-q"]) == 0
    data = json.loads(report.read_text())
    assert sum(p["device"] == "npu" for p in data["partitions"]) == 1
    codes = {r["code"] for entry in data["fallback"] for r in entry["reasons"]}
    assert "user.cpu-ops" in codes
    assert main(["compile", str(models["cnn"]), "-o", str(tmp_path / "o.onnx"), "--target", "--min-partition-ops", "100", "--report", str(report), "-q"]) == 0
    assert json.loads(report.read_text())["coverage"]["nodes_on_target"] == 0


def test_quiet_prints_nothing(models, tmp_path, capsys):
    assert main(["compile", str(models["cnn"]), "-o", str(tmp_path / "o.onnx"), "--target", "ethos-u55", "-q"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--target", "tpu"], "unknown target 'tpu'"),
        (["--target", "npu", "--cpu-ops", "Softmx"], "--cpu-ops: unknown operator 'Softmx'"),
        (["--target", "npu", "--report", "r.txt"], "must end in .json or .html"),
        (["--emit-partitions", "dir"], "--emit-partitions needs a target"),
        (["--target", "npu", "--min-partition-ops", "0"], "--min-partition-ops must be at least 1"),
    ],
)
def test_bad_requests_are_one_line_usage_errors(models, tmp_path, capsys, arguments, message):
    assert main(["compile", str(models["cnn"]), "-o", str(tmp_path / "o.onnx"), *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_bad_target_file_names_the_key(models, tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text('name = "x"\nbase = "npu"\n[conv]\nmax_stride = 0\n')
    assert main(["compile", str(models["cnn"]), "-o", str(tmp_path / "o.onnx"), "--target", str(toml)]) == 2
    err = capsys.readouterr().err
    assert f"mapc: error: {toml}: key 'conv.max_stride' must be a positive integer, got 0" in err


def test_the_console_script_runs_with_the_example_target(models, tmp_path):
    command = [sys.executable, "-m", "mapc.cli", "compile", str(models["cnn"]), "-o", str(tmp_path / "o.onnx"),
               "--target", str(ROOT / "examples" / "my_npu.toml"), "--verify"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "target camera-npu:" in done.stdout and "dtype.data" in done.stdout


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_models_compile_for_every_target(example, tmp_path):
    for target in ("npu", "ethos-u55", "cpu"):
        report = tmp_path / f"{target}.json"
        assert main(["compile", str(example), "-o", str(tmp_path / "o.onnx"), "--target", target, "--verify", "--report", str(report), "-q"]) == 0
        data = json.loads(report.read_text())
        assert data["verification"]["ok"] and data["coverage"]["nodes_total"] > 0
        for entry in data["fallback"]:
            assert entry["reasons"], f"{entry['node']} fell back without a reason"
