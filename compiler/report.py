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
    changes = result.op_changes
    removed = ", ".join(f"{op} {-n}" for op, n in changes.items() if n < 0)
    added = ", ".join(f"{op} {n}" for op, n in changes.items() if n > 0)
    if removed:
        console.print(f"removed: {removed}", markup=False)
    if added:
        console.print(f"added: {added}", markup=False)
    for record in result.passes:
        for note in record.notes:
            if note.severity != "info":
                where = f" [{note.node}]" if note.node else ""
                fix = f" (fix: {note.fix})" if note.fix else ""
                console.print(f"{note.severity}: {record.name}{where}: {note.message}{fix}", markup=False)
    if result.verification is not None:
        worst = max((o["max_abs_error"] for o in result.verification["outputs"]), default=0.0)
        verdict = "outputs match" if result.verification["ok"] else "outputs DIFFER"
        console.print(f"verify: {verdict} (max abs error {worst:.3g})", markup=False)
    if output is not None:
        console.print(f"wrote {output}", markup=False)


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
