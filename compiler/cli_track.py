"""Tracking compiles on the command line: ``mapc diff``, ``mapc history``, and the ``--expect``,
``--junit`` and ``--history`` flags of ``mapc compile``.

``mapc diff OLD NEW`` compares two compiles, each a report (``.json``) or a model compiled with
the compile flags given (:mod:`mapc.diff`); ``--expect budgets.toml`` checks the budgets
(:mod:`mapc.budgets`) on the new compile, relative ones against the old. A breached budget
prints one line per budget on stderr (``mapc: budget breached: NAME: detail``) and exits 1;
``--junit FILE`` also writes the checks as JUnit XML; ``mapc compile --history DIR --expect``
compares the relative budgets with the last compile in DIR. ``mapc history DIR`` prints the trend of
the compiles ``--history DIR`` recorded (:mod:`mapc.history`), ``--html FILE`` plots it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mapc.api import CompileResult
from mapc.api import compile as compile_model
from mapc.budgets import BUDGETS, Check, breached, check_budgets, load_budgets
from mapc.cli_flags import add_compile_flags, compile_flags_given, compile_options_from_flags
from mapc.diff import diff_metrics
from mapc.diff_render import diff_markdown, print_diff
from mapc.history import Entry, append_entry, model_digest, read_history, trend_series
from mapc.history_html import format_number, render_history_html
from mapc.ir import EXIT_OK, CheckFailed, Model, UsageError, load
from mapc.junit import junit_xml
from mapc.metrics import Metrics, load_report, metrics_of
from mapc.report import cli_report, write_text


def add_budget_flags(parser: argparse.ArgumentParser) -> None:
    """``--expect`` and ``--junit`` (``mapc compile`` and ``mapc diff``)."""
    parser.add_argument("--expect", type=Path, metavar="BUDGETS.toml", help="check the budgets in this TOML file (docs/tracking.md); a breached budget exits 1")
    parser.add_argument("--junit", type=Path, metavar="FILE.xml", help="with --expect: write the budget checks as JUnit XML, one test case per budget and output")


def add_history_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--history", type=Path, metavar="DIR", help="append this compile's report, model hash, flags and mapc version to the history in DIR")


def read_budgets(args: argparse.Namespace) -> dict[str, Any] | None:
    """The budgets ``--expect`` names (None: not given); read before compiling, so a bad file fails fast."""
    if args.junit is not None and args.expect is None:
        raise UsageError("--junit needs --expect")
    return load_budgets(args.expect) if args.expect is not None else None


def read_baseline(args: argparse.Namespace, budgets: dict[str, Any] | None) -> Metrics | None:
    """With ``--history DIR`` and a relative budget: the last compile recorded in DIR, which the
    relative budgets compare with (None: nothing to compare with). Read before compiling."""
    if budgets is None or args.history is None or not args.history.exists() or not any(BUDGETS[key].relative for key in budgets):
        return None
    entries = read_history(args.history)
    return entries[-1].metrics if entries else None


def history_digest(args: argparse.Namespace, model: Model) -> str | None:
    """The input model's SHA-256 when ``--history`` is given (hashed before the compile changes it)."""
    return model_digest([args.model, *model.external_sources]) if args.history is not None else None


def finish_compile(args: argparse.Namespace, result: CompileResult, written: Path, digest: str | None, budgets: dict[str, Any] | None,
                   baseline: Metrics | None, console: Console) -> int:
    """After a compile was written: record it in the history, then check the budgets (relative
    ones against ``baseline``, see :func:`read_baseline`); the exit code."""
    report = cli_report(result, written)
    if args.history is not None and digest is not None:
        entry = append_entry(args.history, report, model=args.model, model_sha256=digest, flags=list(args.argv))
        console.print(f"recorded in the history: {entry}", markup=False)
    if budgets is None:
        return EXIT_OK
    checks = check_budgets(budgets, metrics_of(report), baseline)
    console.print(budget_table(checks))
    return report_checks(args, checks)


def report_checks(args: argparse.Namespace, checks: list[Check]) -> int:
    """Write ``--junit``, print one stderr line per breached budget; exit 1 if any was breached."""
    if args.junit is not None:
        write_text(args.junit, junit_xml(checks, suite=f"mapc budgets ({args.expect})"))
    failed = breached(checks)
    for check in failed:
        print(f"mapc: budget breached: {check.name}: {check.detail}", file=sys.stderr)
    return CheckFailed.exit_code if failed else EXIT_OK


def budget_table(checks: list[Check]) -> Table:
    table = Table(title="budgets", title_justify="left")
    for column in ("budget", "result", "detail"):
        table.add_column(column)
    for check in checks:
        style = {"passed": "green", "failed": "bold red", "skipped": "dim"}[check.status]
        table.add_row(Text(check.name), Text(check.status, style=style), Text(check.detail))
    return table


def budget_markdown(checks: list[Check]) -> str:
    lines = ["", "**Budgets**", "", "| budget | result | detail |", "|---|---|---|"]
    marks = {"passed": "✅ passed", "failed": "❌ failed", "skipped": "skipped"}
    lines += [f"| `{check.name}` | {marks[check.status]} | {check.detail.replace('|', '/')} |" for check in checks]
    return "\n".join(lines) + "\n"


# -- mapc diff ----------------------------------------------------------------------------------


def add_diff_command(commands: Any) -> None:
    parser = commands.add_parser("diff", help="compare two compiles (reports or models): what changed and by how much")
    parser.add_argument("old", type=Path, help="the old compile: a report (.json) or a model compiled with the flags below")
    parser.add_argument("new", type=Path, help="the new compile: a report (.json) or a model")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON")
    output.add_argument("--markdown", action="store_true", help="print Markdown (a pull-request comment, a CI job summary)")
    add_budget_flags(parser)
    add_compile_flags(parser, parser.add_argument_group("target", "partition for a device (models only)"))
    parser.set_defaults(handler=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    budgets = read_budgets(args)
    models = [path for path in (args.old, args.new) if path.suffix.lower() != ".json"]
    given = compile_flags_given(args)
    if given and not models:
        raise UsageError(f"{given[0]} compiles a model, but {args.old} and {args.new} are both reports")
    options = compile_options_from_flags(args) if models else None
    old, new = _metrics(args.old, options), _metrics(args.new, options)
    diff = diff_metrics(old, new, str(args.old), str(args.new))
    checks = check_budgets(budgets, new, old) if budgets is not None else None
    if args.json:
        print(json.dumps({**diff.as_dict(), **({"budgets": [c.as_dict() for c in checks]} if checks is not None else {})}, indent=2))
    elif args.markdown:
        print(diff_markdown(diff) + (budget_markdown(checks) if checks is not None else ""), end="")
    else:
        console = Console()
        print_diff(diff, console)
        if checks is not None:
            console.print(budget_table(checks))
    return report_checks(args, checks) if checks is not None else EXIT_OK


def _metrics(path: Path, options: Any) -> Metrics:
    """A report's metrics, or those of compiling the model ``path`` with ``options``."""
    if path.suffix.lower() == ".json":
        return metrics_of(load_report(path), str(path))
    return metrics_of(compile_model(load(path), options).report)


# -- mapc history -------------------------------------------------------------------------------


def add_history_command(commands: Any) -> None:
    parser = commands.add_parser("history", help="the trend of the compiles recorded with --history DIR")
    parser.add_argument("directory", type=Path, metavar="DIR", help="the history folder")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--html", type=Path, metavar="FILE.html", help="also write a self-contained page with one plot per metric")
    parser.set_defaults(handler=run_history)


def run_history(args: argparse.Namespace) -> int:
    entries = read_history(args.directory)
    if args.html is not None:
        write_text(args.html, render_history_html(entries, f"mapc history: {args.directory}"))
    series = trend_series(entries)
    if args.json:
        print(json.dumps([_entry_json(entry, i, series) for i, entry in enumerate(entries)], indent=2))
        return EXIT_OK
    console = Console()
    if not entries:
        console.print(f"no compiles recorded in {args.directory} (mapc compile ... --history {args.directory})", markup=False)
    else:
        console.print(history_table(entries, series))
    if args.html is not None:
        console.print(f"wrote {args.html}", markup=False)
    return EXIT_OK


def _entry_json(entry: Entry, index: int, series: list[tuple[str, str, str, list[float | None]]]) -> dict[str, Any]:
    return {"sequence": entry.sequence, "file": entry.path.name, "recorded_at": entry.recorded_at, "model": entry.model,
            "model_sha256": entry.model_sha256, "flags": entry.flags, "mapc_version": entry.mapc_version, "target": entry.metrics.target,
            "metrics": {key: values[index] for key, _, _, values in series}}


#: Compiles shown as columns by the terminal trend (the most recent); --json and --html show all.
TREND_COLUMNS = 6


def history_table(entries: list[Entry], series: list[tuple[str, str, str, list[float | None]]]) -> Table:
    """One row per metric recorded, one column per compile (the last :data:`TREND_COLUMNS`,
    oldest first), and the change from the first compile to the last."""
    shown = entries[-TREND_COLUMNS:]
    first = len(entries) - len(shown)
    table = Table(title=f"{len(entries)} compiles" + (f", the last {len(shown)} shown" if first else ""), title_justify="left")
    table.add_column("", no_wrap=True)
    for entry in shown:
        table.add_column(f"#{entry.sequence}", justify="right")
    table.add_column("first -> last", justify="right")
    for label, read in (("recorded", lambda e: e.recorded_at.replace("T", " ")[:16]), ("model", lambda e: e.model_sha256[:8]),
                        ("mapc", lambda e: e.mapc_version), ("target", lambda e: e.metrics.target or "-")):
        table.add_row(label, *(Text(read(entry)) for entry in shown), "", style="dim")
    table.add_section()
    for _, label, unit, values in series:
        known = [v for v in values if v is not None]
        delta = known[-1] - known[0] if len(known) > 1 else None
        moved = "" if delta is None else f"{int(delta):+,}" if unit == "bytes" else f"{delta:+.4g}"
        table.add_row(Text(label), *(Text(format_number(v, unit)) for v in values[first:]), moved)
    return table
