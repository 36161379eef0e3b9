"""The CLI as a user runs it: the README commands, exit codes, one-line errors, reports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from mapc.cli import main
from mapc.ir import load, run, seeded_inputs
from mapc.ir.errors import (
    EXIT_BAD_MODEL,
    EXIT_CHECK_FAILED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_USAGE,
)
from mapc.passes import register_pass
from mapc.targets.qnn import qnn_available
from tests.conftest import MAPC_SCRIPT, append_to_first_output

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def mapc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    return subprocess.run([MAPC_SCRIPT, *args], capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(done: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mapc: error: "), done.stderr
    assert fragment in lines[0]


@pytest.mark.parametrize("example", ["cnn.onnx", "transformer.onnx"])
def test_compile_example_with_verify_each(tmp_path, example):
    source = tmp_path / example
    shutil.copy(EXAMPLES / example, source)
    before = source.read_bytes()
    report = tmp_path / "report.json"
    done = mapc("compile", str(source), "--verify-each", "--verify", "--report", str(report))
    assert done.returncode == EXIT_OK, done.stderr
    assert "cleanup" in done.stdout and "outputs match" in done.stdout
    output = tmp_path / example.replace(".onnx", ".mapc.onnx")
    assert output.is_file() and source.read_bytes() == before
    data = json.loads(report.read_text())
    assert data["output"] == str(output)
    assert all(record["verification"]["ok"] for record in data["passes"])
    original, compiled = load(source), load(output)
    feeds = seeded_inputs(original, seed=7)
    for name, value in run(original, feeds).items():
        np.testing.assert_allclose(run(compiled, feeds)[name], value, rtol=1e-5, atol=1e-6)


def test_compile_is_deterministic(tmp_path):
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert main(["compile", str(EXAMPLES / "transformer.onnx"), "-o", str(first), "-q"]) == EXIT_OK
    assert main(["compile", str(EXAMPLES / "transformer.onnx"), "-o", str(second), "-q"]) == EXIT_OK
    assert first.read_bytes() == second.read_bytes()


def test_quiet_prints_nothing(tmp_path):
    done = mapc("compile", str(EXAMPLES / "cnn.onnx"), "-o", str(tmp_path / "o.onnx"), "--quiet")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_inspect_reports_dynamic_inputs(tmp_path):
    done = mapc("inspect", str(EXAMPLES / "transformer.onnx"), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["inputs_needing_shapes"] == ["attention_mask", "input_ids"]
    assert summary["opsets"] == {"ai.onnx": 17}
    assert summary["parameters"]["bytes"] > 0 and summary["op_types"]["MatMul"] == 16
    text = mapc("inspect", str(EXAMPLES / "cnn.onnx"))
    assert text.returncode == 0 and "image" in text.stdout and "batch" in text.stdout


def test_passes_lists_registered_passes():
    done = mapc("passes", "--json")
    assert done.returncode == 0
    listing = {entry["name"]: entry for entry in json.loads(done.stdout)}
    assert "cleanup" in listing and listing["cleanup"]["summary"]
    assert "cse" in listing["cleanup"]["options"]


# -- bad input: one line, documented exit code, no traceback, nothing written ---------------


def test_missing_file(tmp_path):
    assert_one_line_error(mapc("compile", str(tmp_path / "nope.onnx")), EXIT_BAD_MODEL, "no such file")


def test_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model")
    assert_one_line_error(mapc("compile", str(path)), EXIT_BAD_MODEL, "not an ONNX model")
    assert not (tmp_path / "notes.mapc.onnx").exists()


def test_truncated(tmp_path):
    path = tmp_path / "cut.onnx"
    path.write_bytes((EXAMPLES / "cnn.onnx").read_bytes()[:5000])
    assert_one_line_error(mapc("compile", str(path)), EXIT_BAD_MODEL, "not an ONNX model")


def test_output_equal_to_input(tmp_path):
    path = tmp_path / "m.onnx"
    shutil.copy(EXAMPLES / "cnn.onnx", path)
    before = path.read_bytes()
    assert_one_line_error(mapc("compile", str(path), "-o", str(path)), EXIT_OUTPUT, "is the input model")
    assert path.read_bytes() == before


def test_cycle(tmp_path):
    model = onnx.load(EXAMPLES / "cnn.onnx")
    first, last = model.graph.node[0], model.graph.node[-1]
    first.input[0] = last.output[0]
    onnx.save(model, tmp_path / "cycle.onnx")
    assert_one_line_error(mapc("compile", str(tmp_path / "cycle.onnx")), EXIT_BAD_MODEL, "cycle")


def test_missing_initializer(tmp_path):
    model = onnx.load(EXAMPLES / "cnn.onnx")
    del model.graph.initializer[0]
    onnx.save(model, tmp_path / "m.onnx")
    assert_one_line_error(mapc("compile", str(tmp_path / "m.onnx")), EXIT_BAD_MODEL, "is not produced by any node, initializer or graph input")


def test_unknown_op(tmp_path):
    model = onnx.load(EXAMPLES / "cnn.onnx")
    model.graph.node[1].op_type = "TotallyNewOp"
    onnx.save(model, tmp_path / "m.onnx")
    assert_one_line_error(mapc("compile", str(tmp_path / "m.onnx")), EXIT_BAD_MODEL, "unknown operator 'TotallyNewOp'")


def test_unsupported_opset(tmp_path):
    model = onnx.load(EXAMPLES / "cnn.onnx")
    model.opset_import[0].version = 40
    onnx.save(model, tmp_path / "m.onnx")
    assert_one_line_error(mapc("compile", str(tmp_path / "m.onnx")), EXIT_BAD_MODEL, "unsupported opset: ai.onnx 40")


def test_external_data_outside_the_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    model = onnx.load(EXAMPLES / "cnn.onnx")
    onnx.save_model(model, folder / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    shutil.move(folder / "w.bin", tmp_path / "w.bin")
    proto = onnx.load(folder / "m.onnx", load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../w.bin"
    onnx.save(proto, folder / "m.onnx")
    assert_one_line_error(mapc("compile", str(folder / "m.onnx")), EXIT_BAD_MODEL, "outside the model's folder")


def test_absurd_shape(tmp_path):
    model = onnx.load(EXAMPLES / "cnn.onnx")
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 10**15
    onnx.save(model, tmp_path / "m.onnx")
    assert_one_line_error(mapc("compile", str(tmp_path / "m.onnx")), EXIT_BAD_MODEL, "absurd dimension")


def test_bad_pipeline_is_a_usage_error(tmp_path):
    assert_one_line_error(mapc("compile", str(EXAMPLES / "cnn.onnx"), "--passes", "cleanup{x=1}"), EXIT_USAGE, "has no option 'x'")
    assert_one_line_error(mapc("compile", str(EXAMPLES / "cnn.onnx"), "--passes", "frobnicate"), EXIT_USAGE, "unknown pass")


def test_unknown_flag_is_a_usage_error():
    done = mapc("compile", "--no-such-flag", "x.onnx")
    assert done.returncode == EXIT_USAGE and "Traceback" not in done.stderr


def test_verification_failure_exits_1_and_writes_no_model(tmp_path, capsys, registry):
    @register_pass(name="negate-everything")
    def negate(model, ctx, options):
        """A broken pass for this test."""
        append_to_first_output(model, "Neg")
        return True

    out = tmp_path / "o.onnx"
    report = tmp_path / "r.json"
    code = main(["compile", str(EXAMPLES / "cnn.onnx"), "-o", str(out), "--passes", "negate-everything", "--verify", "--report", str(report)])
    assert code == EXIT_CHECK_FAILED
    assert not out.exists()
    assert json.loads(report.read_text())["verification"]["ok"] is False
    assert "differs from the input" in capsys.readouterr().err


def test_debug_shows_a_traceback(tmp_path):
    done = mapc("--debug", "compile", str(tmp_path / "nope.onnx"))
    assert done.returncode == EXIT_BAD_MODEL and "Traceback" in done.stderr


def test_python_dash_m_entry_point(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mapc.cli", "passes"], capture_output=True, text=True)
    assert done.returncode == 0 and "cleanup" in done.stdout


def readme_mapc_commands() -> list[list[str]]:
    """The ``.venv/bin/mapc ...`` commands of the README's bash blocks, as argument lists."""
    text = (EXAMPLES.parent / "README.md").read_text()
    commands = []
    for block in text.split("```bash\n")[1:]:
        for line in block.split("```")[0].splitlines():
            if ".venv/bin/mapc " in line:
                commands.append(line.split(".venv/bin/mapc ", 1)[1].split())
    return commands


def test_the_readme_commands_run(tmp_path):
    """The newcomer's command (and the quantizing variant) work as written, on a copy."""
    commands = readme_mapc_commands()
    assert len(commands) >= 2 and commands[0][:2] == ["compile", "examples/transformer.onnx"]
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    for args in commands:
        target = args[args.index("--target") + 1]
        if target.startswith("qnn-htp") and not qnn_available():
            continue  # the Snapdragon command needs the qnn extra
        done = mapc(*args, cwd=tmp_path)
        assert done.returncode == EXIT_OK, (args, done.stderr)
        assert f"target {target}:" in done.stdout and (tmp_path / "examples" / "transformer.mapc.onnx").is_file()


def test_passes_verbose_reads_as_plain_text():
    """Issue 16: no reST markup (``literal``, :class:`...`, directives, literal-block markers,
    table borders) and no internal rule numbers (R1-R6, M1-M11) in what the terminal shows: the
    rules are named as the engine names them, the mask families as the report does."""
    done = mapc("passes", "-v")
    assert done.returncode == EXIT_OK, done.stderr
    text = done.stdout
    assert "``" not in text and not re.search(r":(class|func|mod|meth|data|attr|exc|obj):`", text)
    assert not re.search(r"^\s*\.\. |::\s*$|={4,}", text, re.MULTILINE)
    assert not re.search(r"\b[RM]\d+\b", text), re.search(r".*\b[RM]\d+\b.*", text).group(0)
    for name in ("additive-mask", "finite-fill", "mask-as-input", "nan-guard", "one-minus-mask"):
        assert name in text


def test_plain_text_joins_paragraph_lines_and_keeps_lists():
    """A paragraph's lines are joined so the terminal wraps them at its width; indented lines
    (lists, the rule table of attention-mask), bullets and blank lines stay as written."""
    from mapc.cli_commands import plain_text

    docstring = "Summary.\n\nMatches :class:`~mapc.ir.Model` and\n``literal`` text:\n  * one\n    more\n  * two\nAfter the list\nstill one line.\n* top bullet\n* another"
    assert plain_text(docstring).splitlines() == [
        "Summary.", "", "Matches Model and `literal` text:", "  * one", "    more", "  * two",
        "After the list still one line.", "* top bullet", "* another",
    ]
