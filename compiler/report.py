"""Rendering compile results: the terminal summary, and the JSON or HTML report file.

The terminal summary is the per-pass table and, when compiling for a target, coverage, the
partitions, the fallback grouped by reason with fixes, and the latency estimate against the
CPU alone. ``write_report`` picks JSON or HTML (:mod:`mapc.report_html`) by file suffix; the
JSON keys are documented in ``docs/report-schema.md``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mapc.api import CompileResult
from mapc.ir import OutputError
from mapc.report_html import render_html
from mapc.report_qnn import print_device_accuracy, print_qnn
from mapc.report_rows import accuracy_target_text, quantization_offender_rows, quantization_output_rows


def passes_table(result: CompileResult) -> Table:
    """One row per pass execution: nodes before/after, time, what it counted."""
    table = Table(title="mapc compile", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("pass")
    table.add_column("round", justify="right")
    table.add_column("nodes", justify="right")
    table.add_column("ms", justify="right")
    table.add_column("did", overflow="fold")  # long counters wrap, never "…"
    verified = any(record.verification is not None for record in result.passes)
    if verified:
        table.add_column("verified (max err)", justify="right")
    for index, record in enumerate(result.passes, start=1):
        did = ", ".join(f"{name}={count}" for name, count in record.counters.items() if count) or "-"
        row = [
            str(index),
            record.name,
            "" if record.iteration is None else str(record.iteration),
            f"{record.nodes_before} -> {record.nodes_after}",
            f"{record.seconds * 1000:.1f}",
            did,
        ]
        if verified:
            row.append(f"ok ({record.verification['max_abs_error']:.2g})" if record.verification else "-")
        table.add_row(*row)
    total_ms = sum(record.seconds for record in result.passes) * 1000
    table.add_section()
    table.add_row("", "total", "", f"{result.nodes_before} -> {result.nodes_after}", f"{total_ms:.1f}", "", *([""] if verified else []))
    return table


REPORT_SUFFIXES = (".json", ".html")


def print_result(result: CompileResult, console: Console, output: Path | None) -> None:
    """The human summary of a compile: the pass table, notes worth reading, the target
    summary, verification."""
    console.print(passes_table(result))
    changes = result.op_changes
    removed = ", ".join(f"{op} {-n}" for op, n in changes.items() if n < 0)
    added = ", ".join(f"{op} {n}" for op, n in changes.items() if n > 0)
    if removed:
        console.print(f"removed: {removed}", markup=False)
    if added:
        console.print(f"added: {added}", markup=False)
    for note in result.load_notes:
        fix = f" (fix: {note.fix})" if note.fix else ""
        console.print(f"{note.severity}: load: {note.message}{fix}", markup=False)
    for record in result.passes:
        for note in record.notes:
            if note.severity != "info":
                where = f" [{note.node}]" if note.node else ""
                fix = f" (fix: {note.fix})" if note.fix else ""
                console.print(f"{note.severity}: {record.name}{where}: {note.message}{fix}", markup=False)
    if result.plan is not None:
        print_target_summary(result.report, console)
    for record in result.passes:
        if record.name == "quantize" and "accuracy" in record.details:
            print_quantization(record.details, console)
    if result.device_accuracy is not None:
        print_device_accuracy(result.device_accuracy, console)
    if result.qnn is not None:
        print_qnn(result.qnn.as_dict(), console)
    if result.verification is not None:
        worst = max((o["max_abs_error"] for o in result.verification["outputs"]), default=0.0)
        verdict = "outputs match" if result.verification["ok"] else "outputs DIFFER"
        samples = result.verification.get("samples", 1)
        console.print(f"verify: {verdict} on {samples} sample{'s' if samples != 1 else ''} (max abs error {worst:.3g})", markup=False)
    if output is not None:
        console.print(f"wrote {output}", markup=False)


#: Segments listed in the terminal; the JSON and HTML reports list all.
MAX_SEGMENT_ROWS = 24


def print_target_summary(report: dict[str, Any], console: Console) -> None:
    """Coverage, partitions, fallback by reason and the estimate, as the report holds them."""
    target, coverage, estimate = report["target"], report["coverage"], report["estimate"]
    name = target["name"]
    console.print(
        f"target {name}: {coverage['nodes_on_target']}/{coverage['nodes_total']} nodes ({coverage['nodes_percent']}%) and "
        f"{coverage['macs_on_target']:,}/{coverage['macs_total']:,} MACs ({coverage['macs_percent']}%) on {name}",
        markup=False,
    )
    if target["kind"] != "host":
        console.print(partitions_table(report["partitions"], name))
    if report["fallback_by_reason"]:
        console.print(fallback_table(report["fallback_by_reason"], len(report["fallback"])))
        for group in report["fallback_by_reason"]:
            console.print(f"  {group['code']}: {group['rule']}", markup=False, highlight=False)
    speedup = estimate["speedup"]
    console.print(
        f"estimate: {estimate['target_ms']:.4g} ms with {name} ({estimate['accelerator_ms']:.4g} ms on {name}, "
        f"{estimate['transfer_ms']:.4g} ms transfers, {estimate['fallback_ms']:.4g} ms on the CPU) vs "
        f"{estimate['cpu_only_ms']:.4g} ms on the CPU alone"
        + (f": {speedup:.2f}x" if speedup else "")
        + (" (unknown or symbolic dims counted as 1)" if estimate["assumed_dims"] else ""),
        markup=False,
        highlight=False,
    )
    console.print(f"  ({estimate['basis']})", markup=False, style="dim")


def partitions_table(partitions: list[dict[str, Any]], target: str) -> Table:
    """Segments in execution order: device, size, MACs, boundary traffic, estimated time."""
    count = sum(p["device"] != "cpu" for p in partitions)
    plural = "partition" if count == 1 else "partitions"
    table = Table(title=f"{count} {plural} on {target}, in execution order with the CPU runs between", title_justify="left")
    for column in ("#", "device", "nodes", "MACs", "in/out KB", "est. ms", "ops"):
        table.add_column(column, justify="left" if column in ("device", "ops") else "right")
    for part in partitions[:MAX_SEGMENT_ROWS]:
        on_target = part["device"] != "cpu"
        ops = ", ".join(f"{op} {n}" for op, n in sorted(part["ops"].items(), key=lambda item: -item[1]))
        table.add_row(
            str(part["id"]),
            part["device"],
            str(part["nodes"]),
            _compact(part["macs"]),
            f"{part['inputs_bytes'] / 1024:.1f}/{part['outputs_bytes'] / 1024:.1f}" if on_target else "",
            f"{part['estimated_ms'] + part['transfer_ms']:.3g}",
            Text(ops if len(ops) <= 40 else ops[:39] + "…"),
        )
    if len(partitions) > MAX_SEGMENT_ROWS:
        table.add_row("", f"... {len(partitions) - MAX_SEGMENT_ROWS} more (see --report)", "", "", "", "", "")
    return table


def _compact(count: int) -> str:
    """1234567 -> '1.23M'."""
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= limit:
            return f"{count / limit:.3g}{suffix}"
    return str(count)


#: Op types listed per fallback reason in the terminal (the report has them all).
FALLBACK_OPS = 6


def fallback_table(groups: list[dict[str, Any]], nodes: int) -> Table:
    """The CPU fallback grouped by reason code, with the ops concerned and the fix."""
    table = Table(title=f"CPU fallback: {nodes} nodes, by reason", title_justify="left")
    table.add_column("reason", no_wrap=True)
    table.add_column("nodes", justify="right")
    table.add_column("ops", overflow="fold")
    table.add_column("fix", overflow="fold")
    for group in groups:
        ops = ", ".join(f"{op} {n}" for op, n in list(group["ops"].items())[:FALLBACK_OPS])
        if len(group["ops"]) > FALLBACK_OPS:
            ops += f", … {len(group['ops']) - FALLBACK_OPS} more op types"
        table.add_row(group["code"], str(group["nodes"]), Text(ops), Text(group["fix"] or "-"))
    return table


def write_report(path: Path, result: CompileResult, *, output: Path | None = None) -> Path:
    """Write the report as JSON or HTML, chosen by ``path``'s suffix."""
    report = result.report if output is None else cli_report(result, output)
    if path.suffix.lower() == ".html":
        return write_text(path, render_html(report, result.plan))
    return write_json(path, report)
def cli_report(result: CompileResult, output: Path) -> dict[str, Any]:
    """The report with what the command line adds: the output's path and its size on disk."""
    report = result.report
    return {**report, "output": str(output), "size": {**report["size"], "output": written_bytes(output)}}


def written_bytes(output: Path) -> int:
    """Bytes of a written model: the file and its external data file (``<output>.data``), if any."""
    data = output.with_name(output.name + ".data")
    return output.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def print_quantization(details: dict[str, Any], console: Console, offenders: int = 5) -> None:
    """The quantize pass's accuracy report: per-output metrics, top offenders, promotions."""
    calibration = details["calibration"]
    accuracy = details["accuracy"]
    console.print(
        f"quantize: {details['scheme']} ({details['activation_type']} activations; weights {', '.join(details['weight_types']) or '-'}), "
        f"{calibration['method']} on {calibration['samples']} sample(s), accuracy on {accuracy['samples']} held-out sample(s)",
        markup=False,
    )
    table = Table(title="quantized vs float", title_justify="left")
    for column, justify in (("output", "left"), ("SQNR dB", "right"), ("cosine", "right"), ("max abs err", "right"), ("top-1", "right")):
        table.add_column(column, justify=justify)
    for row in quantization_output_rows(accuracy):
        table.add_row(*row)
    console.print(table)
    worst_rows = quantization_offender_rows(details, offenders)
    if worst_rows:
        worst = Table(title="top offenders (output SQNR when quantized alone)", title_justify="left")
        for column, justify in (("tensor", "left"), ("kind", "left"), ("SQNR dB", "right"), ("share", "right")):
            worst.add_column(column, justify=justify)
        for row in worst_rows:
            worst.add_row(*row)
        console.print(worst)
    target = accuracy_target_text(details)
    if target:
        console.print(target, markup=False)
    if calibration["fallbacks_total"]:
        console.print(f"calibration: {calibration['method']} fell back to minmax for {calibration['fallbacks_total']} tensor(s) (see the JSON report)", markup=False)


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically (temporary file, then rename)."""
    return write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically (temporary file, then rename)."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {error.strerror or error}") from None
    return target


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)
