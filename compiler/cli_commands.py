"""The ``mapc`` commands: ``compile``, ``inspect``, ``passes``, ``targets``, ``diff``, ``history`` and ``llm``.

:mod:`mapc.cli` is the entry point and imports this module only once a command is given.
Target flags and the ``targets`` command live in :mod:`mapc.cli_targets`; ``diff``, ``history``
and the budget and history flags of ``compile`` in :mod:`mapc.cli_track`; ``llm`` in :mod:`mapc.cli_llm`.

Every user error ends with one line on stderr (``mapc: error: ...``) and the exit code of its
:class:`~mapc.ir.errors.MapcError` class (see README, "Exit codes"); a traceback appears only with
``--debug``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mapc.api import CompileResult
from mapc.api import compile as compile_model
from mapc.cli import COMMANDS, top_parser
from mapc.cli_flags import add_compile_flags, compile_options_from_flags
from mapc.cli_llm import add_llm_command
from mapc.cli_targets import add_target_arguments, add_targets_command
from mapc.cli_track import add_budget_flags, add_diff_command, add_history_command, add_history_flag, finish_compile, history_digest, read_baseline, read_budgets
from mapc.inspection import summarize
from mapc.ir import (
    EXIT_INTERNAL,
    EXIT_OK,
    CheckFailed,
    MapcError,
    OutputError,
    UsageError,
    VerificationError,
    load,
    same_file,
    save,
)
from mapc.passes import MASK_INPUTS, registered_passes
from mapc.progress import PassProgress
from mapc.report import REPORT_SUFFIXES, print_result, write_report
from mapc.targets import get_target
from mapc.targets.qnn import context_path, require_qnn_target


#: What a negative number looks like on the command line, exponents included.
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def build_parser() -> argparse.ArgumentParser:
    parser, commands = top_parser()
    compile_parser = commands.add_parser("compile", help=COMMANDS["compile"])
    # argparse takes "-1e4" for an option (it only knows "-4" and "-.5" as numbers): --mask-value -1e4
    compile_parser._negative_number_matcher = NEGATIVE_NUMBER
    compile_parser.add_argument("model", type=Path, help="input ONNX model (never modified)")
    compile_parser.add_argument("-o", "--output", type=Path, help="output path (default: <stem>.mapc.onnx beside the input)")
    compile_parser.add_argument(
        "--report", type=Path, action="append", default=[], metavar="FILE.json|FILE.html",
        help="write a report: JSON (for tools) or a self-contained HTML page; repeat for both",
    )
    compile_parser.add_argument("--external-data", dest="external_data", action="store_true", default=None, help="always write weights to <output>.data")
    compile_parser.add_argument("--no-external-data", dest="external_data", action="store_false", help="embed weights in the output file")
    compile_parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    add_budget_flags(compile_parser)
    add_history_flag(compile_parser)
    add_compile_flags(compile_parser, add_target_arguments(compile_parser))
    compile_parser.set_defaults(handler=run_compile)

    inspect_parser = commands.add_parser("inspect", help=COMMANDS["inspect"])
    inspect_parser.add_argument("model", type=Path)
    inspect_parser.add_argument("--json", action="store_true", help="print JSON")
    inspect_parser.set_defaults(handler=run_inspect)

    passes_parser = commands.add_parser("passes", help=COMMANDS["passes"])
    passes_parser.add_argument("-v", "--verbose", action="store_true", help="show descriptions and options")
    passes_parser.add_argument("--json", action="store_true", help="print JSON")
    passes_parser.set_defaults(handler=run_passes)
    add_targets_command(commands, COMMANDS["targets"])
    add_diff_command(commands)
    add_history_command(commands)
    add_llm_command(commands)
    return parser


def run(argv: Sequence[str]) -> int:
    """Parse ``argv`` (the arguments after ``mapc``), run the command; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv)
    ort.set_default_logger_severity(4)
    try:
        return int(args.handler(args))
    except MapcError as error:
        if args.debug:
            traceback.print_exc()
        print(f"mapc: error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        return EXIT_OK
    except Exception as error:  # a bug in mapc: one line unless --debug
        if args.debug:
            traceback.print_exc()
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"mapc: internal error: {type(error).__name__}{': ' + detail if detail else ''} (rerun with --debug for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def default_output(model_path: Path) -> Path:
    name = model_path.name[: -len(".onnx")] if model_path.name.endswith(".onnx") else model_path.name
    return model_path.with_name(f"{name}.mapc.onnx")


def run_compile(args: argparse.Namespace) -> int:
    output: Path = args.output or default_output(args.model)
    if output.resolve() == args.model.resolve() or same_file(output, args.model):
        raise OutputError(f"output {output} is the input model; choose another path with -o")
    for report in args.report:
        if report.suffix.lower() not in REPORT_SUFFIXES:
            raise UsageError(f"--report {report}: the file name must end in {' or '.join(REPORT_SUFFIXES)}")
    for path, what in [(output, "output"), *((report, "--report") for report in args.report)]:
        _check_writable_place(path, what)
    options = compile_options_from_flags(args)
    budgets = read_budgets(args)
    baseline = read_baseline(args, budgets)
    if args.emit_partitions and options.target is None:
        raise UsageError("--emit-partitions needs a target (--target NAME)")
    if args.emit is not None:
        if args.emit.folder is not None and not args.emit.folder.is_dir():  # a typo is named even without the qnn extra
            raise UsageError(f"--emit epcontext={args.emit.folder}: the folder does not exist")
        require_qnn_target(get_target(options.target) if options.target is not None else None, "--emit epcontext")
    console = Console(quiet=args.quiet)
    with PassProgress(enabled=not args.quiet) as progress:
        progress.stage("loading")
        model = load(args.model)
        digest = history_digest(args, model)
        try:
            result = compile_model(model, options, on_pass_start=progress.pass_started, on_progress=progress.update)
        except VerificationError as error:
            failed = getattr(error, "result", None)
            if failed is not None:
                for report in args.report:
                    write_report(report, failed)
            raise
        progress.stage("saving")
        written = result.save(output, external_data=args.external_data)
        emitted = result.emit_partitions(args.emit_partitions) if args.emit_partitions else []
        if args.emit is not None:
            progress.stage("compiling the context binary with QNN")
            result.emit_context(context_path(written, args.emit.folder))
        host_models = write_host_models(result, written)
        for report in args.report:
            write_report(report, result, output=written)
    print_result(result, console, written)
    if result.context is not None:
        console.print(f"wrote {result.context.path} (EPContext: QNN context binary for HTP v{result.context.arch}, "
                      f"{result.context.bytes / 1e6:.1f} MB, compiled in {result.context.compile_seconds:.1f} s)", markup=False)
    if emitted:
        console.print(f"wrote {len(emitted)} files to {args.emit_partitions} (partitions, host graph, partitions.json)", markup=False)
    for path in host_models:
        console.print(f"wrote {path} (computes a hoisted mask input on the host)", markup=False)
    code = finish_compile(args, result, written, digest, budgets, baseline, console)
    if result.qnn is not None and not result.qnn.ok:
        raise CheckFailed(_qnn_failure(result))
    return code


def _check_writable_place(path: Path, what: str) -> None:
    """:class:`OutputError` before any work when ``path`` cannot be a file: it is a folder, or its
    folder does not exist (else the model would be written and the report fail after it)."""
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"{what} {path}: the folder {folder} does not exist")


def _qnn_failure(result: CompileResult) -> str:
    """The one line a failed --check-with-qnn ends with."""
    agreement = result.qnn
    assert agreement is not None
    if not agreement.check.built:
        line = f"QNN did not build the compiled model: {agreement.check.error}"
        taken = agreement.taken_against_plan
        if taken:
            why = taken[0].mapc_reasons[0] if taken[0].mapc_reasons else "mapc's cost model"
            line += (f"; its EP also took {len(taken)} node(s) mapc keeps on the CPU and cannot be told to leave them "
                     f"(first {taken[0].op} {taken[0].name!r}: {why})")
        return line
    first = agreement.overclaims[0]
    return (f"QNN refused {len(agreement.overclaims)} node(s) mapc placed on HTP (a bug of the target's rules), "
            f"first {first.name!r} ({first.op}): {first.qnn.reason}")


def write_host_models(result: CompileResult, written: Path) -> list[Path]:
    """Write the host-side models of hoisted mask inputs beside the compiled model."""
    hoisted = result.facts.get(MASK_INPUTS)
    models = hoisted.host_models if hoisted is not None else {}
    paths = []
    stem = written.name[: -len(".onnx")] if written.name.endswith(".onnx") else written.name
    for input_name, proto in models.items():
        if proto is None:
            continue
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in input_name)
        paths.append(save(load(proto), written.with_name(f"{stem}.{safe}.host.onnx")))
    return paths


def run_inspect(args: argparse.Namespace) -> int:
    summary = summarize(load(args.model))
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    console = Console()
    console.print(f"[bold]{summary['file']}[/bold]  IR {summary['ir_version']}  producer: {summary['producer'] or '-'}")
    console.print("opsets: " + ", ".join(f"{d} {v}" for d, v in summary["opsets"].items()), markup=False)
    io = Table(title="inputs and outputs", title_justify="left")
    for column in ("kind", "name", "dtype", "shape"):
        io.add_column(column)
    for kind in ("inputs", "outputs"):
        for entry in summary[kind]:
            shape = "?" if entry["shape"] is None else "[" + ", ".join("?" if d is None else str(d) for d in entry["shape"]) + "]"
            io.add_row(kind[:-1], Text(entry["name"]), entry["dtype"] or "?", Text(shape))
    console.print(io)
    params = summary["parameters"]
    console.print(f"nodes: {summary['nodes']}  parameters: {params['elements']:,} in {params['tensors']} tensors ({params['bytes']:,} bytes)", markup=False)
    external = summary["external_data"]
    if external["tensors"]:
        console.print(f"external data: {external['bytes']:,} bytes in {', '.join(external['files'])}", markup=False)
    console.print("ops: " + ", ".join(f"{op} {count}" for op, count in summary["op_types"].items()), markup=False)
    if summary["inputs_needing_shapes"]:
        dims = ", ".join(f"{d['input']}[{d['axis']}]={d['dim'] or '?'}" for d in summary["dynamic_dims"])
        console.print(f"dynamic dims (fix them for an NPU): {dims}", markup=False)
        console.print(f"fix them with: mapc compile {args.model} {summary['suggested_flags']}", markup=False)
    else:
        console.print("all input dims are static")
    return EXIT_OK


def run_passes(args: argparse.Namespace) -> int:
    passes = registered_passes()
    if args.json:
        listing = [
            {"name": name, "summary": cls.summary(), "description": cls.description(), "options": _options(cls)}
            for name, cls in passes.items()
        ]
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    console = Console()
    table = Table(title="registered passes", title_justify="left")
    table.add_column("pass")
    table.add_column("summary", overflow="fold")
    table.add_column("options (defaults)", overflow="fold")
    for name, cls in passes.items():
        options = ", ".join(f"{key}={value}" for key, value in _options(cls).items()) or "-"
        table.add_row(name, Text(plain_text(cls.summary())), Text(options))
    console.print(table)
    if args.verbose:
        for name, cls in passes.items():
            console.rule(name)
            console.print(plain_text(cls.description()), markup=False)
    return EXIT_OK


#: reST roles in docstrings (``:class:`~mapc.ir.Model```...): a terminal shows only the name.
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`~?\.?(?:[\w.]*\.)?([^`.]+)`")


def plain_text(docstring: str) -> str:
    """A docstring as a terminal shows it: reST roles become their last name, ``literals`` lose
    their doubled backticks (`literal`), and the lines of a paragraph are joined so that the
    terminal wraps them at its own width (indented lines, lists and tables, stay as written)."""
    return _reflow(_ROLE.sub(r"\1", docstring).replace("``", "`"))


def _reflow(text: str) -> str:
    lines: list[str] = []
    for line in text.splitlines():
        joins = lines and lines[-1] and not lines[-1][0].isspace() and line and not line[0].isspace()
        if joins and not line.lstrip().startswith(("* ", "- ")) and not lines[-1].startswith(("* ", "- ")):
            lines[-1] = f"{lines[-1]} {line}"
        else:
            lines.append(line)
    return "\n".join(lines)


def _options(cls: type) -> dict[str, object]:
    defaults = cls.Options()
    return {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)}
