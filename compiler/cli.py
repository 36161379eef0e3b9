"""The ``mapc`` console entry point: it starts fast, and Ctrl-C at any moment is one line.

``mapc --version``, ``mapc --help`` and a command line without a valid command are answered by
this module alone, without importing onnx, onnxruntime or rich (tens of milliseconds instead of
over a second). A command imports :mod:`mapc.cli_commands`, which builds the full parser (the
compile flags come from the registered passes) and runs it. A KeyboardInterrupt, also one
raised while those imports run, ends with ``mapc: interrupted`` and exit code 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version

#: Each command and the line ``mapc --help`` shows for it.
COMMANDS = {
    "compile": "run a pipeline of passes on a model and write the result",
    "inspect": "summarize a model: opsets, I/O and dynamic dims, ops, parameters",
    "passes": "list registered passes",
    "targets": "list targets, or show one target's limits and rules",
    "diff": "compare two compiles (reports or models): what changed and by how much",
    "history": "the trend of the compiles recorded with --history DIR",
    "llm": "split a KV-cache decoder into static prefill and decode graphs; 'mapc llm generate DIR' decodes with a split",
}
#: Exit code after Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130
_ANSWERED_HERE = ("-h", "--help", "--version")


def top_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The ``mapc`` parser without its commands' arguments, and its sub-parser collection."""
    parser = argparse.ArgumentParser(prog="mapc", description="Map ONNX models onto NPUs.")
    parser.add_argument("--version", action="version", version=f"mapc {version('mapc')}")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mapc`` console script; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        if _command(arguments) is None:
            parser, commands = top_parser()
            for name, summary in COMMANDS.items():
                commands.add_parser(name, help=summary)
            parser.parse_args(arguments)  # prints the version, the help or the error and exits
        from mapc.cli_commands import run

        return run(arguments)
    except KeyboardInterrupt:
        print("mapc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _command(arguments: Sequence[str]) -> str | None:
    """The command the arguments name, or None when the top-level parser alone answers them."""
    for argument in arguments:
        if argument == "--debug":
            continue
        if argument in _ANSWERED_HERE or argument.startswith("-"):
            return None
        return argument if argument in COMMANDS else None
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
