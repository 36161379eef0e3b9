"""The entry point: --version and --help import nothing heavy; Ctrl-C anywhere is one line, 130."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mapc.cli import COMMANDS, main
from mapc.cli_commands import build_parser


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize("argv", [["--version"], ["--help"], [], ["bogus"]])
def test_answers_without_a_command_import_neither_onnx_nor_onnxruntime(argv):
    done = python(
        "import sys\nfrom mapc.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'rich', 'numpy') if m in sys.modules))"
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr


def test_version_and_help_still_answer(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("mapc ")
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert all(name in listing for name in COMMANDS)


def test_the_light_and_the_full_parser_list_the_same_commands():
    full = build_parser()._subparsers._group_actions[0]
    assert {action.dest: action.help for action in full._choices_actions} == COMMANDS


def test_ctrl_c_while_the_heavy_modules_import_is_one_line_and_exit_130():
    done = python(
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'onnxruntime':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from mapc.cli import main\n"
        "sys.exit(main(['passes']))"
    )
    assert done.returncode == 130
    assert done.stderr.strip() == "mapc: interrupted"
