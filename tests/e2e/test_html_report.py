"""The HTML report renders in a real browser (headless Chromium) and shows what it should.

Needs Debian's ``chromium`` package (``apt-get install -y chromium``). Without it the test is
skipped locally; in CI (``CI`` set) a missing browser is a failure.
"""

from __future__ import annotations

import re
import subprocess


import mapc
from mapc import graph_svg
from mapc.report import write_report
from tests.targets.models import static_transformer


def render(browser: str, path) -> str:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_html_report_renders_with_summary_fallback_and_graph(chromium, tmp_path):
    result = mapc.compile(static_transformer(sequence=8, hidden=32, layers=1), target="npu", verify=True)
    page = write_report(tmp_path / "report.html", result)
    source = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", source), "the page must not load anything from the network"
    dom = render(chromium, page)
    nodes = len(result.plan.model_view.nodes)
    assert f'data-graph-nodes="{nodes}"' in dom, "the browser found every node of the graph"
    width = int(re.search(r'data-graph-width="(\d+)"', dom).group(1))
    assert width > 100, "the SVG was laid out"
    assert "nodes on target" in dom and f"{result.report['coverage']['nodes_on_target']} of {nodes}" in dom
    assert "CPU fallback: 1 nodes, by reason" in dom and "params.constant" in dom
    assert dom.count('class="segment"') == len(result.report["partitions"])
    assert "Verification: outputs match the input model" in dom
    assert dom.count('class="node"') + dom.count('class="node cpu"') == nodes


def test_large_graphs_are_drawn_by_segment(monkeypatch):
    result = mapc.compile(static_transformer(sequence=8, hidden=32, layers=1), target="npu")
    monkeypatch.setattr(graph_svg, "MAX_DRAWN_NODES", 10)
    svg = graph_svg.render_svg(result.plan)
    assert svg.count("<g class=\"node") == len(result.plan.segments)
    assert f"{len(result.plan.partitions[0].nodes)} nodes" in svg
