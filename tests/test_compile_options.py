"""CompileOptions: one validation for API and CLI, and the CLI generated from declared flags."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

import mapc
from mapc.cli import main
from mapc.cli_commands import build_parser
from mapc.cli_flags import add_flags, check_requirements, compile_options_from_flags, given_flag_names, given_flags
from mapc.ir.errors import UsageError
from mapc.options import CompileOptions
from mapc.passes.flags import flag, flagged_fields

EXAMPLE = "examples/cnn.onnx"


@dataclass
class Toy:
    level: int | None = field(default=None, metadata=flag("--level", "how much", metavar="N"))
    mode: str = field(default="a", metadata=flag("--mode", "which", requires="--level"))
    kinds: list[str] = field(default_factory=list, metadata=flag("--kinds", "comma list", metavar="K,..."))
    fast: bool = field(default=True, metadata=flag("--fast", "go fast", negative="--slow"))
    loud: bool = field(default=False, metadata=flag("--loud", "be loud"))
    hidden: int = 3


def parse(argv):
    parser = argparse.ArgumentParser()
    add_flags(parser, [Toy])
    return parser.parse_args(argv)


def test_flags_are_generated_with_types_and_only_given_ones_are_read_back():
    args = parse(["--level", "4", "--kinds", "a,b", "--slow"])
    assert given_flags(args, Toy) == {"level": 4, "kinds": ["a", "b"], "fast": False}
    assert given_flags(parse([]), Toy) == {}
    assert [f.name for f, _ in flagged_fields(Toy)] == ["level", "mode", "kinds", "fast", "loud"]


def test_a_flag_without_the_flag_it_needs_is_a_usage_error():
    with pytest.raises(UsageError, match="--mode needs --level"):
        check_requirements(given_flag_names(parse(["--mode", "b"]), [Toy]))
    check_requirements(given_flag_names(parse(["--mode", "b", "--level", "1"]), [Toy]))


def test_every_flagged_compile_option_is_a_flag_of_mapc_compile():
    compile_help = build_parser()._subparsers._group_actions[0].choices["compile"].format_help()
    for option, declared in flagged_fields(CompileOptions):
        assert declared.spelling in compile_help, option.name
    for name in ("target", "quantize", "pass_options", "verify_inputs", "tolerance"):
        assert name in {f.name for f in dataclasses.fields(CompileOptions)}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quantize": {"scheme": "a8w8", "calibration": "random"}, "verify": True}, "quantization cannot meet"),
        ({"quantize": {"scheme": "a8w8"}}, "--quantize needs --calibration"),
        ({"partition": {"min_partition_ops": 2}}, "need a target"),
    ],
)
def test_validation_is_the_same_for_the_api_and_the_options_object(options, message):
    with pytest.raises(UsageError, match=message):
        CompileOptions(**options).validate()
    with pytest.raises(UsageError, match=message):
        mapc.compile(EXAMPLE, **options)


def test_the_cli_reports_the_same_validation_error(capsys, tmp_path):
    code = main(["compile", EXAMPLE, "-o", str(tmp_path / "o.onnx"), "--quantize", "a8w8", "--calibration", "random", "--verify"])
    assert code == 2 and "quantization cannot meet" in capsys.readouterr().err


def test_strict_fusion_does_not_change_the_callers_pass():
    fuse = mapc.passes.get_pass("fuse")()
    mapc.compile(EXAMPLE, passes=[fuse], strict_fusion=True)
    assert fuse.options.strict is False


def test_options_object_and_keywords_are_exclusive():
    with pytest.raises(TypeError):
        mapc.compile(EXAMPLE, CompileOptions(), seed=1)
    assert mapc.compile(EXAMPLE, CompileOptions(seed=3)).options["seed"] == 3


@pytest.mark.parametrize("value, expected", [("-1e4", -1e4), ("-2.5E+3", -2500.0), ("-50", -50.0), ("-.5", -0.5)])
def test_negative_numbers_with_exponents_are_flag_values(value, expected):
    args = build_parser().parse_args(["compile", "model.onnx", "--mask-value", value])
    assert compile_options_from_flags(args).pass_options["attention-mask"]["mask_value"] == expected
