"""The ``mapc`` command line: ``compile``, ``inspect`` and ``passes``.

Every user error ends with one line on stderr (``mapc: error: ...``) and the exit code of its
:class:`~mapc.errors.MapcError` class (see README, "Exit codes"); a traceback appears only with
``--debug``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from .api import compile as compile_model
from .api import default_pipeline
from .errors import EXIT_INTERNAL, EXIT_OK, MapcError, OutputError, UsageError, VerificationError
from .inspection import summarize
from .ir import load
from .ir.external import same_file
from .passes import registered_passes
from .progress import PassProgress
from .report import print_result, write_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mapc", description="Map ONNX models onto NPUs.")
    parser.add_argument("--version", action="version", version=f"mapc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    compile_parser = commands.add_parser("compile", help="run a pipeline of passes on a model and write the result")
    compile_parser.add_argument("model", type=Path, help="input ONNX model (never modified)")
    compile_parser.add_argument("-o", "--output", type=Path, help="output path (default: <stem>.mapc.onnx beside the input)")
    compile_parser.add_argument("--passes", help=f"pipeline, e.g. 'cleanup,fixpoint(cleanup)' (default: {default_pipeline()!r})")
    compile_parser.add_argument("--verify-each", action="store_true", help="after every pass, check validity and outputs against the input model")
    compile_parser.add_argument("--verify", action="store_true", help="compare the compiled model's outputs with the input model's")
    compile_parser.add_argument("--seed", type=int, default=0, help="seed for generated verification inputs (default 0)")
    compile_parser.add_argument("--quantize", metavar="SCHEME", help="quantize after the other passes: a8w8, a16w8, w4 or a16w4 (needs --calibration)")
    compile_parser.add_argument("--calibration", metavar="DIR|FILE|random", help="calibration samples: a folder of .npz files (one sample each, keys = input names), a .npz/.npy file of stacked samples, or 'random'")
    compile_parser.add_argument("--calibration-method", choices=["minmax", "percentile", "entropy", "mse"], help="how each tensor's range is chosen (default minmax)")
    compile_parser.add_argument("--accuracy-target", type=float, metavar="SQNR_DB", help="promote the worst tensors to 16 bits until every output's SQNR reaches this (e.g. 30)")
    compile_parser.add_argument("--report", type=Path, metavar="FILE.json", help="write a JSON report")
    compile_parser.add_argument("--external-data", dest="external_data", action="store_true", default=None, help="always write weights to <output>.data")
    compile_parser.add_argument("--no-external-data", dest="external_data", action="store_false", help="embed weights in the output file")
    compile_parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    compile_parser.set_defaults(handler=run_compile)

    inspect_parser = commands.add_parser("inspect", help="summarize a model: opsets, I/O and dynamic dims, ops, parameters")
    inspect_parser.add_argument("model", type=Path)
    inspect_parser.add_argument("--json", action="store_true", help="print JSON")
    inspect_parser.set_defaults(handler=run_inspect)

    passes_parser = commands.add_parser("passes", help="list registered passes")
    passes_parser.add_argument("-v", "--verbose", action="store_true", help="show descriptions and options")
    passes_parser.add_argument("--json", action="store_true", help="print JSON")
    passes_parser.set_defaults(handler=run_passes)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mapc`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ort.set_default_logger_severity(3)
    try:
        return int(args.handler(args))
    except MapcError as error:
        if args.debug:
            traceback.print_exc()
        print(f"mapc: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("mapc: interrupted", file=sys.stderr)
        return 130
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
    quantize = _quantize_options(args)
    console = Console(quiet=args.quiet)
    with PassProgress(enabled=not args.quiet) as progress:
        progress.stage("loading")
        model = load(args.model)
        try:
            result = compile_model(
                model,
                passes=args.passes,
                verify_each=args.verify_each,
                verify=args.verify,
                seed=args.seed,
                on_pass_start=progress.pass_started,
                on_progress=progress.update,
                quantize=quantize,
            )
        except VerificationError as error:
            failed = getattr(error, "result", None)
            if failed is not None and args.report:
                write_json(args.report, failed.report)
            raise
        progress.stage("saving")
        written = result.save(output, external_data=args.external_data)
        if args.report:
            write_json(args.report, {**result.report, "output": str(written)})
    print_result(result, console, written)
    return EXIT_OK


def _quantize_options(args: argparse.Namespace) -> dict[str, object] | None:
    """The quantize pass options the flags ask for; UsageError for inconsistent flags."""
    extras = {"--calibration": args.calibration, "--calibration-method": args.calibration_method, "--accuracy-target": args.accuracy_target}
    if args.quantize is None:
        given = [flag for flag, value in extras.items() if value is not None]
        if given:
            raise UsageError(f"{given[0]} needs --quantize SCHEME")
        return None
    if args.calibration is None:
        raise UsageError("--quantize needs --calibration DIR|FILE|random")
    if args.verify or args.verify_each:
        raise UsageError("--verify and --verify-each compare within float tolerances, which quantization cannot meet; use --accuracy-target")
    return {
        "scheme": args.quantize,
        "calibration": args.calibration,
        "calibration_method": args.calibration_method,
        "accuracy_target": args.accuracy_target,
    }


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
    table.add_column("summary")
    table.add_column("options (defaults)")
    for name, cls in passes.items():
        options = ", ".join(f"{key}={value}" for key, value in _options(cls).items()) or "-"
        table.add_row(name, Text(cls.summary()), Text(options))
    console.print(table)
    if args.verbose:
        for name, cls in passes.items():
            console.rule(name)
            console.print(cls.description(), markup=False)
    return EXIT_OK


def _options(cls: type) -> dict[str, object]:
    defaults = cls.Options()
    return {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
