"""The HTML report of a quantized compile: the random-calibration warning, per-pass counters, and a
graph drawn like the float one (Q/DQ folded into the edges, quantized ops marked)."""

from __future__ import annotations

import re

import mapc
from mapc import graph_svg
from mapc.report import write_report
from tests.targets.models import static_transformer


def test_quantized_report_warns_counts_and_draws_ops_not_dequantizers(tmp_path):
    result = mapc.compile(static_transformer(sequence=8, hidden=32, layers=1), target="npu",
                          quantize={"scheme": "a8w8", "calibration": "random"})
    page = write_report(tmp_path / "report.html", result).read_text()
    assert "CALIBRATED ON RANDOM DATA" in page
    assert "what it did" in page and re.search(r"<td>[^<]*\b[a-z-]+ [1-9]\d*[^<]*</td>", page)
    svg = graph_svg.render_svg(result.plan)
    labels = re.findall(r'class="op">([^<]*)</text>', svg)
    assert labels and not [label for label in labels if "QuantizeLinear" in label or "DequantizeLinear" in label]
    assert any(label.endswith("(q)") for label in labels)
    drawn = len(labels)
    qdq = sum(1 for node in result.plan.model_view.nodes if node.op in graph_svg.QDQ_OPS)
    assert drawn == len(result.plan.model_view.nodes) - qdq


def test_float_report_draws_every_node_and_no_warning(tmp_path):
    result = mapc.compile(static_transformer(sequence=8, hidden=32, layers=1), target="npu")
    page = write_report(tmp_path / "report.html", result).read_text()
    assert "RANDOM DATA" not in page
    labels = re.findall(r'class="op">([^<]*)</text>', graph_svg.render_svg(result.plan))
    assert len(labels) == len(result.plan.model_view.nodes) and not [label for label in labels if "(q)" in label]
