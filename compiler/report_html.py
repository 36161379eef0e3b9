"""The HTML report: one self-contained page (no network, no external files).

It shows the summary (coverage, estimate against the CPU alone), the passes, the partitions,
the CPU fallback grouped by reason with fixes and node by node, verification, and the graph
coloured by partition (:mod:`mapc.graph_svg`). A few lines of script highlight a partition's
nodes when its table row is hovered, and record on the page what the browser drew
(``data-graph-nodes``, ``data-graph-width``), which the rendering test reads back.
"""

from __future__ import annotations

from html import escape
from typing import Any

from mapc.graph_svg import render_svg, segment_colour
from mapc.ir import __version__
from mapc.report_qnn import device_html
from mapc.report_rows import accuracy_target_text, quantization_offender_rows, quantization_output_rows
from mapc.targets import Plan

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #666; } .cards { display: flex; gap: 14px; flex-wrap: wrap; margin: 16px 0; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 20px; } table { border-collapse: collapse; margin: 6px 0; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px; }
.graphbox { overflow: auto; max-height: 80vh; border: 1px solid #ddd; border-radius: 8px; }
svg.graph text { font: 10px system-ui, sans-serif; fill: #fff; } svg.graph text.name { fill: #f2f2f2; font-size: 9px; }
svg.graph g.cpu text { fill: #333; } svg.graph .edges path { fill: none; stroke: #999; stroke-width: 1; }
svg.graph g.node.dim { opacity: 0.25; } tr.segment:hover { background: #fff8e1; }
.note { color: #666; font-size: 12px; } .bad { color: #b00020; } .good { color: #1b7a2e; }
"""

SCRIPT = """
(function () {
  var nodes = document.querySelectorAll('svg.graph g.node');
  var svg = document.querySelector('svg.graph');
  document.documentElement.dataset.graphNodes = String(nodes.length);
  document.documentElement.dataset.graphWidth = svg ? String(Math.round(svg.getBBox().width)) : '0';
  document.querySelectorAll('tr.segment').forEach(function (row) {
    row.addEventListener('mouseenter', function () {
      nodes.forEach(function (n) { n.classList.toggle('dim', n.dataset.segment !== row.dataset.segment); });
    });
    row.addEventListener('mouseleave', function () { nodes.forEach(function (n) { n.classList.remove('dim'); }); });
  });
})();
"""


def render_html(report: dict[str, Any], plan: Plan | None) -> str:
    """The whole page for a compile ``report`` (and its partition ``plan``, if it had a target)."""
    title = f"mapc report: {report.get('input') or 'model'}"
    body = [f"<h1>{escape(title)}</h1>", f'<div class="sub">mapc {escape(__version__)} · pipeline <code>{escape(report.get("pipeline", ""))}</code></div>']
    if plan is not None:
        body += _summary(report)
    body += _passes(report)
    if plan is not None:
        body += _partitions(report, plan)
        body += _fallback(report)
    for record in report.get("passes", []):
        if record["name"] == "quantize" and "accuracy" in record.get("details", {}):
            body += _quantization(record["details"])
    if report.get("verification") is not None:
        body += _verification(report["verification"])
    body += device_html(report)
    if plan is not None:
        body += [
            "<h2>Graph, coloured by partition</h2>",
            '<p class="note">Each box is a node (op, then name), in rows by depth from the inputs. Hover a partition row above to highlight its nodes; hover a box for details.</p>',
            f'<div class="graphbox">{render_svg(plan)}</div>',
            f'<p class="note">{escape(report["estimate"]["basis"])}.</p>',
        ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )


def _summary(report: dict[str, Any]) -> list[str]:
    target, coverage, estimate = report["target"], report["coverage"], report["estimate"]
    speedup = estimate.get("speedup")
    verdict = "" if speedup is None else f'<span class="{"good" if speedup >= 1 else "bad"}">{speedup:.2f}x vs CPU</span>'
    cards = [
        ("target", escape(target["name"]), escape(target["description"])),
        ("nodes on target", f"{coverage['nodes_percent']}%", f"{coverage['nodes_on_target']} of {coverage['nodes_total']}"),
        ("MACs on target", f"{coverage['macs_percent']}%", f"{coverage['macs_on_target']:,} of {coverage['macs_total']:,}"),
        ("partitions", str(sum(p["device"] != "cpu" for p in report["partitions"])), f"{len(report['fallback'])} nodes on the CPU"),
        ("estimated latency", f"{estimate['target_ms']:.4g} ms", f"CPU alone {estimate['cpu_only_ms']:.4g} ms {verdict}"),
        ("transfers", f"{estimate['transfer_ms']:.4g} ms", f"dispatch {estimate['dispatch_ms']:.4g} ms"),
    ]
    html = ['<h2>Summary</h2><div class="cards">']
    html += [f'<div class="card">{label}<b>{value}</b><span class="sub">{detail}</span></div>' for label, value, detail in cards]
    html.append("</div>")
    return html


def _table(headers: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _passes(report: dict[str, Any]) -> list[str]:
    rows = [
        f"<tr><td>{escape(p['name'])}</td><td>{'yes' if p['changed'] else 'no'}</td><td class=\"num\">{p['nodes_before']} → {p['nodes_after']}</td>"
        f"<td>{escape(_did(p))}</td><td class=\"num\">{p['seconds'] * 1000:.1f}</td></tr>"
        for p in report.get("passes", [])
    ]
    return ["<h2>Passes</h2>", _table(["pass", "changed", "nodes", "what it did", "ms"], rows)]


def _did(record: dict[str, Any]) -> str:
    """A pass's non-zero counters (rules fired, tensors quantized...), or '-'."""
    counters = record.get("counters") or {}
    return ", ".join(f"{name} {value}" for name, value in counters.items() if value) or "-"


def _partitions(report: dict[str, Any], plan: Plan) -> list[str]:
    rows = []
    for part in report["partitions"]:
        colour = segment_colour(plan, part["id"])
        ops = ", ".join(f"{escape(op)} {n}" for op, n in sorted(part["ops"].items(), key=lambda item: -item[1]))
        rows.append(
            f'<tr class="segment" data-segment="{part["id"]}"><td><span class="swatch" style="background:{colour}"></span>{part["id"]}</td>'
            f"<td>{escape(part['device'])}</td><td class=\"num\">{part['nodes']}</td><td>{ops}</td><td class=\"num\">{part['macs']:,}</td>"
            f"<td class=\"num\">{part['inputs_bytes']:,}</td><td class=\"num\">{part['outputs_bytes']:,}</td>"
            f"<td class=\"num\">{part['estimated_ms']:.4g}</td><td class=\"num\">{part['transfer_ms']:.4g}</td></tr>"
        )
    headers = ["#", "device", "nodes", "ops", "MACs", "in bytes", "out bytes", "est. ms", "transfer ms"]
    return ["<h2>Partitions, in execution order</h2>", _table(headers, rows)]


def _fallback(report: dict[str, Any]) -> list[str]:
    if not report["fallback"]:
        return ["<h2>CPU fallback</h2><p>Every node runs on the target.</p>"]
    grouped = [
        f"<tr><td><code>{escape(g['code'])}</code></td><td class=\"num\">{g['nodes']}</td>"
        f"<td>{escape(', '.join(f'{op} {n}' for op, n in g['ops'].items()))}</td><td>{escape(g['rule'])}</td><td>{escape(g['fix'] or '-')}</td></tr>"
        for g in report["fallback_by_reason"]
    ]
    per_node = [
        f"<tr><td>{escape(entry['node'])}</td><td>{escape(entry['op_type'])}</td>"
        f"<td>{_reasons(entry['reasons'])}</td><td>{escape(entry['fix'] or '-')}</td></tr>"
        for entry in report["fallback"]
    ]
    return [
        f"<h2>CPU fallback: {len(report['fallback'])} nodes, by reason</h2>",
        _table(["reason", "nodes", "ops", "rule", "fix"], grouped),
        f"<details><summary>every fallback node ({len(per_node)})</summary>",
        _table(["node", "op", "reasons", "fix"], per_node),
        "</details>",
    ]


def _reasons(reasons: list[dict[str, str]]) -> str:
    return "<br>".join(f"<code>{escape(r['code'])}</code> {escape(r['message'])}" for r in reasons)


def _quantization(details: dict[str, Any], offenders: int = 10) -> list[str]:
    """The quantize pass's accuracy report: per output, the top offenders, promotions."""
    calibration, accuracy = details["calibration"], details["accuracy"]

    def row(cells: tuple[str, ...]) -> str:
        first, *numbers = cells
        return f"<tr><td>{escape(first)}</td>" + "".join(f'<td class="num">{escape(cell)}</td>' for cell in numbers) + "</tr>"

    worst = [
        f"<tr><td>{escape(tensor)}</td><td>{escape(kind)}</td><td class=\"num\">{alone}</td><td class=\"num\">{share}</td></tr>"
        for tensor, kind, alone, share in quantization_offender_rows(details, offenders)
    ]
    summary = (
        f"{escape(details['scheme'])}: {escape(details['activation_type'] or 'float')} activations, weights "
        f"{escape(', '.join(details['weight_types']) or '-')}; {escape(calibration['method'])} calibration on {calibration['samples']} sample(s), "
        f"measured on {accuracy['samples']} held-out sample(s)"
    )
    html = [f"<h2>Quantization: {summary}</h2>"]
    if calibration.get("random"):
        html.append('<p class="bad">CALIBRATED ON RANDOM DATA: the scales fit random inputs, not your data; expect poor '
                    "accuracy on real inputs. Pass <code>--calibration</code> with real samples (a folder of .npz files).</p>")
    html += [_table(["output", "SQNR dB", "cosine", "max abs error", "top-1"], [row(r) for r in quantization_output_rows(accuracy)])]
    if worst:
        html += ["<p>Top offenders: each tensor quantized alone, the output SQNR it leaves and its share of the error.</p>", _table(["tensor", "kind", "SQNR dB alone", "share"], worst)]
    target = accuracy_target_text(details, arrow="→")
    if target:
        html.append(f"<p>{escape(target[0].upper() + target[1:])}.</p>")
    return html


def _verification(verification: dict[str, Any]) -> list[str]:
    rows = [
        f"<tr><td>{escape(o['output'])}</td><td class=\"{'good' if o['ok'] else 'bad'}\">{'ok' if o['ok'] else 'DIFFERS'}</td>"
        f"<td class=\"num\">{o['max_abs_error']:.3g}</td><td>{escape(o.get('problem', ''))}</td></tr>"
        for o in verification.get("outputs", [])
    ]
    verdict = "outputs match the input model" if verification.get("ok") else "outputs DIFFER from the input model"
    samples = verification.get("samples", 1)
    return [f"<h2>Verification: {verdict} on {samples} sample{'s' if samples != 1 else ''}</h2>",
            _table(["output", "result", "max abs error", "problem"], rows)]
