"""Rendering compile results: the per-pass terminal table and the JSON report file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .api import CompileResult
from .errors import OutputError


def passes_table(result: CompileResult) -> Table:
    """One row per pass execution: nodes before/after, time, what it counted."""
    table = Table(title="mapc compile", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("pass")
    table.add_column("round", justify="right")
    table.add_column("nodes", justify="right")
    table.add_column("ms", justify="right")
    table.add_column("did")
    for index, record in enumerate(result.passes, start=1):
        did = ", ".join(f"{name}={count}" for name, count in record.counters.items() if count) or "-"
        table.add_row(
            str(index),
            record.name,
            "" if record.iteration is None else str(record.iteration),
            f"{record.nodes_before} -> {record.nodes_after}",
            f"{record.seconds * 1000:.1f}",
            did,
        )
    total_ms = sum(record.seconds for record in result.passes) * 1000
    table.add_section()
    table.add_row("", "total", "", f"{result.nodes_before} -> {result.nodes_after}", f"{total_ms:.1f}", "")
    return table


def print_result(result: CompileResult, console: Console, output: Path | None) -> None:
    """The human summary of a compile: the pass table, notes worth reading, verification."""
    console.print(passes_table(result))
    for record in result.passes:
        for note in record.notes:
            if note.severity != "info":
                where = f" [{note.node}]" if note.node else ""
                fix = f" (fix: {note.fix})" if note.fix else ""
                console.print(f"{note.severity}: {record.name}{where}: {note.message}{fix}", markup=False)
    for record in result.passes:
        if record.name == "quantize" and "accuracy" in record.details:
            print_quantization(record.details, console)
    if result.verification is not None:
        worst = max((o["max_abs_error"] for o in result.verification["outputs"]), default=0.0)
        verdict = "outputs match" if result.verification["ok"] else "outputs DIFFER"
        console.print(f"verify: {verdict} (max abs error {worst:.3g})", markup=False)
    if output is not None:
        console.print(f"wrote {output}", markup=False)


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
    for output in accuracy["outputs"]:
        if "sqnr_db" not in output:
            table.add_row(output["output"], "exact" if output.get("exact_match") else "differs", "", "", "")
            continue
        sqnr = "exact" if output.get("exact") else f"{output['sqnr_db']:.1f}"
        top1 = f"{output['top1_agreement']:.1%}" if "top1_agreement" in output else ""
        table.add_row(output["output"], sqnr, f"{output['cosine']:.5f}", f"{output['max_abs_error']:.3g}", top1)
    console.print(table)
    if details.get("offenders"):
        worst = Table(title="top offenders (output SQNR when quantized alone)", title_justify="left")
        for column, justify in (("tensor", "left"), ("kind", "left"), ("SQNR dB", "right"), ("share", "right")):
            worst.add_column(column, justify=justify)
        for entry in details["offenders"][:offenders]:
            alone = "exact" if entry["sqnr_db_alone"] is None else f"{entry['sqnr_db_alone']:.1f}"
            worst.add_row(entry["tensor"], entry["kind"], alone, f"{entry['share']:.1%}")
        console.print(worst)
    target = details.get("accuracy_target")
    if target:
        promoted = ", ".join(f"{p['tensor']} -> {p['to']}" for p in target["promoted"]) or "nothing"
        verdict = "met" if target.get("met") else "NOT met"
        console.print(f"accuracy target {target['target_db']} dB: {verdict}; promoted {promoted}", markup=False)
    if calibration["fallbacks_total"]:
        console.print(f"calibration: {calibration['method']} fell back to minmax for {calibration['fallbacks_total']} tensor(s) (see the JSON report)", markup=False)


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON, atomically (temporary file, then rename)."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
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
