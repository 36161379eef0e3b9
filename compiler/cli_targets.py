"""The target side of the command line: ``mapc targets`` and the target flags of ``mapc compile``.

``mapc targets`` lists the built-in targets; ``mapc targets --show NAME|FILE.toml`` prints a
target's record, performance model and every rule's text (``--markdown`` for the Markdown that
``docs/targets/<name>.md`` holds).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from mapc.ir import EXIT_OK
from mapc.targets import DEFAULT_TARGET, builtin_targets, constraints_for, get_target, target_markdown


def add_target_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The group of ``mapc compile`` flags about the target; the partition pass's own flags
    (``--target``, ``--min-partition-ops``, ...) are added to it from its options."""
    group = parser.add_argument_group("target", "partition and lower for a device (see `mapc targets`)")
    group.add_argument("--emit-partitions", metavar="DIR", help="also write each partition as a standalone model, the host graph and partitions.json to DIR")
    group.add_argument("--emit", metavar="epcontext[=DIR]", type=parse_emit, help="also write <stem>_ctx.onnx (beside the output, or in DIR): "
                       "the EPContext model with the context binary QNN compiled for the target (qnn-htp), loaded on the device without compiling")
    return group


@dataclass(frozen=True)
class EmitContext:
    """``--emit epcontext[=DIR]``: where the EPContext model goes (None: beside the output)."""

    folder: Path | None


def parse_emit(value: str) -> EmitContext:
    """``epcontext`` or ``epcontext=DIR``."""
    kind, equals, folder = value.partition("=")
    if kind != "epcontext" or (equals and not folder):
        raise argparse.ArgumentTypeError(f"expected epcontext or epcontext=DIR, got {value!r}")
    return EmitContext(Path(folder) if folder else None)


def add_targets_command(commands: Any, summary: str) -> None:
    parser = commands.add_parser("targets", help=summary)
    parser.add_argument("--show", metavar="NAME|FILE.toml", help="print the target's record, performance model and the text of every rule")
    parser.add_argument("--markdown", action="store_true", help="with --show: print Markdown (what docs/targets/<name>.md holds)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run_targets)


def run_targets(args: argparse.Namespace) -> int:
    if args.show:
        target = get_target(args.show)
        if args.json:
            rules = [{"code": r.code, "kind": r.kind, "ops": sorted(r.ops) if r.ops else None, "text": r.text(target)} for r in constraints_for(target)]
            print(json.dumps({"name": target.name, "description": target.description, "kind": target.kind, "rules": rules}, indent=2))
        elif args.markdown:
            print(target_markdown(target), end="")
        else:
            Console().print(Markdown(target_markdown(target)))
        return EXIT_OK
    targets = builtin_targets()
    if args.json:
        print(json.dumps([{"name": t.name, "kind": t.kind, "description": t.description, "default": t.name == DEFAULT_TARGET} for t in targets.values()], indent=2))
        return EXIT_OK
    table = Table(title="targets", title_justify="left")
    table.add_column("target")
    table.add_column("kind")
    table.add_column("description", overflow="fold")
    for name, target in targets.items():
        table.add_row(name + (" (default)" if name == DEFAULT_TARGET else ""), target.kind, Text(target.description))
    console = Console()
    console.print(table)
    console.print("A target of your own: --target my_npu.toml (see docs/targets.md). Rules of one target: mapc targets --show NAME", markup=False)
    return EXIT_OK
