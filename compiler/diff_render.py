"""Drawing a :class:`~mapc.diff.Diff`: a rich table for the terminal, or Markdown for a
pull-request comment or a CI job summary. Both show the same cells (:func:`diff_rows`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mapc.diff import Change, Diff, FallbackChange


def format_value(kind: str, value: Any) -> str:
    """``value`` as a reader wants it: ``-`` for missing, shares in percent, bytes with separators."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if kind == "fraction":
        return f"{value:.1%}"
    if kind in ("count", "bytes"):
        return f"{value:,}"
    if kind == "ratio":
        return f"{value:.5f}"
    if kind == "db":
        return f"{value:.2f}"
    return f"{value:.4g}"


def format_change(change: Change) -> str:
    """By how much: ``+3``, ``-2.5% pts``, ``+12.0%`` (times and sizes), ``changed``, or empty."""
    if not change.changed:
        return ""
    delta = change.delta
    if delta is None:
        return "changed"
    if change.kind == "fraction":
        return f"{delta * 100:+.1f} pts"
    text = {"count": f"{delta:+,}", "bytes": f"{delta:+,}", "db": f"{delta:+.2f}", "ratio": f"{delta:+.5f}"}.get(change.kind, f"{delta:+.4g}")
    relative = change.relative
    if relative is not None and change.kind in ("ms", "seconds", "bytes", "count"):
        text += f" ({relative:+.1%})"
    return text


def diff_rows(diff: Diff) -> list[tuple[str, str, str, str]]:
    """Per metric: label, old, new, change."""
    return [(c.label, format_value(c.kind, c.old), format_value(c.kind, c.new), format_change(c)) for c in diff.changes]


def fallback_rows(diff: Diff) -> list[tuple[str, str, str]]:
    """Per changed fallback reason: code, what happened, the nodes concerned."""
    return [(entry.code, _fallback_status(entry), _fallback_nodes(entry)) for entry in diff.fallback]


def _fallback_status(entry: FallbackChange) -> str:
    if entry.status == "added":
        return f"new: {len(entry.nodes_added)} node(s)"
    if entry.status == "removed":
        return f"gone: {len(entry.nodes_removed)} node(s)"
    return f"+{len(entry.nodes_added)} / -{len(entry.nodes_removed)} node(s)"


#: Nodes named per fallback reason in the terminal and in Markdown (a pull-request comment stays
#: short on a large model); ``--json`` names them all.
MAX_NODES_SHOWN = 12


def _fallback_nodes(entry: FallbackChange) -> str:
    nodes = [f"+{n}" for n in entry.nodes_added] + [f"-{n}" for n in entry.nodes_removed]
    more = len(nodes) - MAX_NODES_SHOWN
    return ", ".join(nodes[:MAX_NODES_SHOWN]) + (f" and {more} more" if more > 0 else "")


def summary_line(diff: Diff) -> str:
    worse = sum(change.verdict == "worse" for change in diff.changes)
    better = sum(change.verdict == "better" for change in diff.changes)
    return (f"{len(diff.changed)} of {len(diff.changes)} metrics changed ({better} better, {worse} worse); "
            f"{len(diff.fallback)} fallback reason(s) changed")


def print_diff(diff: Diff, console: Console) -> None:
    """The diff as terminal tables: changed rows bold, green when better and red when worse."""
    table = Table(title=f"mapc diff: {diff.old_name} -> {diff.new_name}", title_justify="left")
    for column, justify in (("metric", "left"), ("old", "right"), ("new", "right"), ("change", "right")):
        table.add_column(column, justify=justify)
    for change, cells in zip(diff.changes, diff_rows(diff), strict=True):
        style = {"better": "bold green", "worse": "bold red"}.get(change.verdict or "", "bold" if change.changed else "")
        table.add_row(*(Text(cell) for cell in cells), style=style)
    console.print(table)
    if diff.fallback:
        fallback = Table(title="CPU-fallback reasons that changed", title_justify="left")
        for column in ("reason", "change", "nodes (+ gained, - lost)"):
            fallback.add_column(column)
        for row in fallback_rows(diff):
            fallback.add_row(*(Text(cell) for cell in row))
        console.print(fallback)
    console.print(summary_line(diff), markup=False, highlight=False)


def diff_markdown(diff: Diff) -> str:
    """The diff as GitHub-flavoured Markdown: a heading, the metric table, the fallback reasons."""
    lines = [f"### mapc diff: `{diff.old_name}` → `{diff.new_name}`", "", summary_line(diff) + ".", "",
             "| metric | old | new | change |", "|---|---:|---:|---:|"]
    for change, (label, old, new, delta) in zip(diff.changes, diff_rows(diff), strict=True):
        mark = {"better": " ✅", "worse": " ⚠️"}.get(change.verdict or "", "")
        cells = [_cell(label), _cell(old), _cell(new), _cell(delta) + mark]
        if change.changed:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    if diff.fallback:
        lines += ["", "**CPU-fallback reasons that changed**", "", "| reason | change | nodes (+ gained, - lost) |", "|---|---|---|"]
        lines += [f"| `{_cell(code)}` | {_cell(status)} | {_cell(nodes)} |" for code, status, nodes in fallback_rows(diff)]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
