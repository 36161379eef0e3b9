"""The history page (``mapc history DIR --html FILE``): one self-contained HTML page (no network,
no external files) with one inline-SVG line plot per recorded metric over the compiles, and the
table of compiles. A few lines of script record on the page how many plots the browser drew and
how wide their lines are (``data-plots``, ``data-plot-widths``), which the rendering test reads.
"""

from __future__ import annotations

from html import escape

from mapc.history import Entry, trend_series

WIDTH, HEIGHT, MARGIN_LEFT, MARGIN_RIGHT, MARGIN_Y = 560, 180, 70, 16, 24

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 0 0 4px; } .sub { color: #666; }
.plots { display: flex; flex-wrap: wrap; gap: 18px; margin: 16px 0; }
.plotbox { border: 1px solid #ddd; border-radius: 8px; padding: 10px 12px; }
svg.plot text { font: 10px system-ui, sans-serif; fill: #555; } svg.plot .axis { stroke: #bbb; stroke-width: 1; }
svg.plot polyline { fill: none; stroke: #1f6feb; stroke-width: 2; } svg.plot circle { fill: #1f6feb; }
table { border-collapse: collapse; margin: 6px 0; } th, td { border-bottom: 1px solid #e4e4e4; padding: 4px 10px; text-align: left; }
th { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; } code { font-size: 12px; }
"""

SCRIPT = """
(function () {
  var plots = document.querySelectorAll('svg.plot');
  document.documentElement.dataset.plots = String(plots.length);
  document.documentElement.dataset.plotWidths = Array.prototype.map.call(plots, function (svg) {
    var line = svg.querySelector('polyline');
    return line ? String(Math.round(line.getBBox().width)) : '0';
  }).join(',');
})();
"""


def format_number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{int(value):,}"
    return f"{value:.4g}" + (f" {unit}" if unit and unit != "%" else unit)


def plot_svg(key: str, label: str, unit: str, values: list[float | None], names: list[str]) -> str:
    """A line plot of ``values`` (one per compile, None: not recorded) against the compile's position."""
    known = [v for v in values if v is not None]
    low, high = min(known), max(known)
    span = (high - low) or abs(high) or 1.0
    low, high = (low, high) if high > low else (low - span / 2, high + span / 2)
    step = (WIDTH - MARGIN_LEFT - MARGIN_RIGHT) / max(len(values) - 1, 1)

    def x(i: int) -> float:
        return MARGIN_LEFT + i * step if len(values) > 1 else (MARGIN_LEFT + WIDTH - MARGIN_RIGHT) / 2

    def y(v: float) -> float:
        return MARGIN_Y + (high - v) / (high - low) * (HEIGHT - 2 * MARGIN_Y)

    points = [(x(i), y(v), v, names[i]) for i, v in enumerate(values) if v is not None]
    line = " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)
    dots = "".join(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3"><title>{escape(name)}: {escape(format_number(v, unit))}</title></circle>'
                   for px, py, v, name in points)
    ticks = "".join(f'<text x="{x(i):.1f}" y="{HEIGHT - 6}" text-anchor="middle">{i + 1}</text>' for i in range(len(values)))
    bottom = HEIGHT - MARGIN_Y
    return (
        f'<svg class="plot" data-metric="{escape(key)}" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(label)} over the compiles">'
        f'<line class="axis" x1="{MARGIN_LEFT}" y1="{MARGIN_Y}" x2="{MARGIN_LEFT}" y2="{bottom}"/>'
        f'<line class="axis" x1="{MARGIN_LEFT}" y1="{bottom}" x2="{WIDTH - MARGIN_RIGHT}" y2="{bottom}"/>'
        f'<text x="{MARGIN_LEFT - 6}" y="{y(high) + 4:.1f}" text-anchor="end">{escape(format_number(high, unit))}</text>'
        f'<text x="{MARGIN_LEFT - 6}" y="{y(low) + 4:.1f}" text-anchor="end">{escape(format_number(low, unit))}</text>'
        f'<polyline points="{line}"/>{dots}{ticks}</svg>'
    )


def render_history_html(entries: list[Entry], title: str) -> str:
    """The whole page for ``entries`` (oldest first), titled ``title``."""
    names = [f"#{entry.sequence} {entry.recorded_at} {entry.model_sha256[:12]}" for entry in entries]
    series = trend_series(entries)
    plots = [
        f'<div class="plotbox"><h2>{escape(label)}{f" ({escape(unit)})" if unit else ""}</h2>{plot_svg(key, label, unit, values, names)}</div>'
        for key, label, unit, values in series
    ]
    rows = [
        f"<tr><td class=\"num\">{i}</td><td class=\"num\">{entry.sequence}</td><td>{escape(entry.recorded_at)}</td><td><code>{escape(entry.model_sha256[:12])}</code></td>"
        f"<td>{escape(entry.mapc_version)}</td><td>{escape(entry.metrics.target or '-')}</td><td><code>{escape(' '.join(entry.flags))}</code></td></tr>"
        for i, entry in enumerate(entries, start=1)
    ]
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<div class="sub">{len(entries)} compiles, oldest first; the x axis is the position in this list. Times are the target\'s estimates, not measurements.</div>',
        f'<div class="plots">{"".join(plots)}</div>' if plots else "<p>No compiles recorded yet.</p>",
        "<table><thead><tr><th>#</th><th>entry</th><th>recorded</th><th>model SHA-256</th><th>mapc</th><th>target</th><th>flags</th></tr></thead>",
        f"<tbody>{''.join(rows)}</tbody></table>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )
