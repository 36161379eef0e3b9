"""The terminal tables at 80 columns (CI logs): long cells wrap instead of ending in "…", and a
list cut short says so."""

from __future__ import annotations

import io

from rich.console import Console

from mapc.cli import main
from mapc.report import FALLBACK_OPS, fallback_table


def render(table) -> str:
    console = Console(width=80, file=io.StringIO())
    console.print(table)
    return console.file.getvalue()


def column(text: str, index: int) -> str:
    """Column ``index`` of a rendered table's body, its wrapped lines joined up again."""
    rows = [line.split("│")[1:-1] for line in text.splitlines() if line.startswith("│")]
    return "".join(row[index].strip() for row in rows)


def test_a_long_fix_wraps_and_every_op_type_left_out_is_counted():
    ops = {f"Op{i}": 1 for i in range(FALLBACK_OPS + 3)}
    fix = "give_static_input_shapes_with_--input-shape_or_--dim_for_every_symbolic_dimension"
    text = render(fallback_table([{"code": "shape.static", "nodes": 9, "ops": ops, "fix": fix}], 9))
    assert column(text, 2).endswith("Op5 1, … 3 moreop types") and column(text, 3) == fix


def test_passes_options_wrap_at_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "calibration_method=minmax" in column(out, 2)
