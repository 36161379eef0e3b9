"""QNN's verdict beside mapc's plan, for the terminal and the HTML page (``--check-with-qnn``).

Both read the report's ``qnn`` section (``docs/report-schema.md``): whether QNN built the model,
nodes per status, and every node where mapc and QNN disagree, overclaims (mapc said HTP, QNN
refused: a bug of the target's rules) first.
"""

from __future__ import annotations

from html import escape
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mapc.targets.qnn import DIVERGENCE_DB

#: Disagreeing nodes listed in the terminal; the JSON and HTML reports list all.
MAX_DISAGREEMENT_ROWS = 20
#: Order and wording of the two kinds of disagreement.
DISAGREEMENTS = {
    "mapc-overclaims": "mapc: HTP, QNN: refused",
    "mapc-underclaims": "mapc: CPU, QNN: HTP",
}


def qnn_headline(qnn: dict[str, Any]) -> str:
    """One line: built or not, and how many nodes agree."""
    counts = ", ".join(f"{status} {n}" for status, n in sorted(qnn["counts"].items()))
    built = "built the model" if qnn["built"] else ("ABORTED" if qnn["aborted"] else "did NOT build the model")
    timing = f" in {qnn['build_seconds']:.1f} s" if qnn.get("build_seconds") is not None and qnn["built"] else ""
    return (
        f"QNN HTP (v{qnn['arch']}) {built}{timing}: {counts}; mapc's plan agrees on {qnn['nodes_agreeing']}/{qnn['nodes_compared']} nodes "
        f"({qnn['overclaims']} placed on HTP that QNN refused, {qnn['underclaims']} kept on the CPU that QNN takes)"
    )


def disagreement_rows(qnn: dict[str, Any], *, brief: bool = False) -> list[tuple[str, str, str, str, str]]:
    """(kind, node, op, mapc's reasons, QNN's reason) for every disagreeing node, overclaims first.

    ``brief`` keeps only mapc's reason codes (the terminal); the full sentences are in the reports.
    """
    order = list(DISAGREEMENTS)
    nodes = sorted((n for n in qnn["nodes"] if n["disagreement"]), key=lambda n: (order.index(n["disagreement"]), n["index"]))
    rows = []
    for n in nodes:
        reasons = [reason.split(":", 1)[0] if brief else reason for reason in n["mapc_reasons"]]
        rows.append((DISAGREEMENTS[n["disagreement"]], n["name"], n["op"], "; ".join(reasons) or "-", n["qnn_reason"] or "-"))
    return rows


def print_qnn(qnn: dict[str, Any], console: Console) -> None:
    """The headline, QNN's error with the log's last lines when it failed, and the disagreements."""
    console.print(qnn_headline(qnn), markup=False, highlight=False)
    if not qnn["built"]:
        console.print(f"  QNN: {qnn['error']}", markup=False, highlight=False)
        for line in qnn["log_tail"][-6:]:
            console.print(f"  | {line.strip()[:200]}", markup=False, highlight=False, style="dim")
    rows = disagreement_rows(qnn, brief=True)
    if not rows:
        return
    table = Table(title=f"mapc vs QNN: {len(rows)} nodes disagree", title_justify="left")
    for column in ("disagreement", "node", "op", "mapc", "QNN"):
        table.add_column(column)
    for row in rows[:MAX_DISAGREEMENT_ROWS]:
        table.add_row(*(Text(cell) for cell in row))
    if len(rows) > MAX_DISAGREEMENT_ROWS:
        table.add_row(f"... {len(rows) - MAX_DISAGREEMENT_ROWS} more (see --report)", "", "", "", "")
    console.print(table)


def print_device_accuracy(accuracy: dict[str, Any], console: Console) -> None:
    """The accuracy report measured on the device, beside the CPU simulation's SQNR."""
    table = Table(title=f"quantized vs float on {accuracy['device']}: {accuracy['samples']} held-out sample(s), {accuracy['seconds']:.1f} s",
                  title_justify="left")
    for column, justify in (("output", "left"), ("SQNR dB", "right"), ("CPU QDQ dB", "right"), ("cosine", "right"), ("max abs err", "right"), ("top-1", "right")):
        table.add_column(column, justify=justify)
    for row in accuracy["outputs"]:
        if "sqnr_db" not in row:
            table.add_row(Text(row["output"]), "exact" if row.get("exact_match") else "differs", "", "", "", "")
            continue
        table.add_row(
            Text(row["output"]),
            "exact" if row["exact"] else f"{row['sqnr_db']:.1f}",
            "-" if row["cpu_sqnr_db"] is None else f"{row['cpu_sqnr_db']:.1f}",
            f"{row['cosine']:.5f}",
            f"{row['max_abs_error']:.3g}",
            f"{100 * row['top1_agreement']:.1f}%" if "top1_agreement" in row else "-",
        )
    console.print(table)
    for output in accuracy["divergent_outputs"]:
        console.print(f"warning: {output}: the device's SQNR differs from the CPU QDQ simulation's by more than {DIVERGENCE_DB:g} dB", markup=False)


def device_html(report: dict[str, Any]) -> list[str]:
    """The page's device sections, each when the compile produced it: QNN's verdict, the
    accuracy on the device, the EPContext artifact."""
    html = qnn_html(report["qnn"]) if report.get("qnn") is not None else []
    if report.get("device_accuracy") is not None:
        html += device_accuracy_html(report["device_accuracy"])
    epcontext = report.get("epcontext")
    if epcontext is not None:
        html.append(f"<p>EPContext model: <code>{escape(epcontext['path'])}</code>, {epcontext['bytes']:,} bytes, "
                    f"compiled by QNN for HTP v{escape(epcontext['htp_arch'])} in {epcontext['compile_seconds']:.1f} s.</p>")
    return html


def qnn_html(qnn: dict[str, Any]) -> list[str]:
    """QNN's verdict: the headline, the failure with the log's last lines, and every
    disagreement with both sides' full reasons."""
    html = [f"<h2>QNN's verdict beside mapc's plan</h2><p class=\"{'good' if qnn['ok'] else 'bad'}\">{escape(qnn_headline(qnn))}</p>"]
    if not qnn["built"]:
        html.append(f"<p class=\"bad\">QNN: {escape(qnn['error'])}</p><pre>{escape(chr(10).join(qnn['log_tail']))}</pre>")
    rows = [f"<tr>{''.join(f'<td>{escape(cell)}</td>' for cell in row)}</tr>" for row in disagreement_rows(qnn)]
    if rows:
        head = "".join(f"<th>{column}</th>" for column in ("disagreement", "node", "op", "mapc", "QNN"))
        html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return html


def device_accuracy_html(accuracy: dict[str, Any]) -> list[str]:
    head = "".join(f"<th>{column}</th>" for column in ("output", "SQNR dB on the device", "CPU QDQ SQNR dB", "cosine", "max abs error", "top-1"))
    rows = []
    for row in accuracy["outputs"]:
        cells = [row["output"], "-" if row.get("sqnr_db") is None else f"{row['sqnr_db']:.1f}", "-" if row.get("cpu_sqnr_db") is None else f"{row['cpu_sqnr_db']:.1f}",
                 f"{row.get('cosine', 0):.5f}", f"{row.get('max_abs_error', 0):.3g}", f"{100 * row['top1_agreement']:.1f}%" if "top1_agreement" in row else "-"]
        rows.append(f"<tr>{''.join(f'<td>{escape(cell)}</td>' for cell in cells)}</tr>")
    title = f"Accuracy on {accuracy['device']}: {accuracy['samples']} held-out sample(s), {accuracy['seconds']:.1f} s"
    return [f"<h2>{escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"]
