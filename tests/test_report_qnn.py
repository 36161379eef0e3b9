"""The QNN section of the terminal summary and the HTML page, from a report (no QNN needed)."""

from __future__ import annotations

from rich.console import Console

from mapc.report_qnn import disagreement_rows, print_qnn, qnn_html

QNN = {
    "arch": "73", "ok": False, "built": False, "aborted": True, "error": "the QNN EP aborted: Processed 9 nodes. Expected to process 74",
    "build_seconds": 3.1, "counts": {"htp": 2, "rejected": 1, "boundary": 1}, "nodes_compared": 4, "nodes_agreeing": 2,
    "overclaims": 1, "underclaims": 1, "log_tail": ["terminate called after throwing an instance of 'Ort::Exception'"],
    "nodes": [
        {"index": 0, "name": "q", "op": "QuantizeLinear", "mapc_reasons": ["qdq.graph-boundary: ..."], "qnn_reason": "boundary", "disagreement": ""},
        {"index": 1, "name": "ln", "op": "LayerNormalization", "mapc_reasons": [], "qnn_reason": "Failed to add node. (QNN LayerNorm: backendValidateOpConfig error 3110)", "disagreement": "mapc-overclaims"},
        {"index": 2, "name": "erf", "op": "Erf", "mapc_reasons": ["op.not-supported: Erf is not one of them"], "qnn_reason": "", "disagreement": "mapc-underclaims"},
        {"index": 3, "name": "t", "op": "Tanh", "mapc_reasons": [], "qnn_reason": "", "disagreement": ""},
    ],
}


def test_disagreements_list_overclaims_first_with_codes_in_brief():
    rows = disagreement_rows(QNN, brief=True)
    assert [(row[0], row[1], row[3]) for row in rows] == [("mapc: HTP, QNN: refused", "ln", "-"), ("mapc: CPU, QNN: HTP", "erf", "op.not-supported")]
    assert disagreement_rows(QNN)[1][3] == "op.not-supported: Erf is not one of them"


def test_terminal_names_the_abort_the_log_and_each_disagreement():
    console = Console(record=True, width=200)
    print_qnn(QNN, console)
    text = console.export_text()
    assert "QNN HTP (v73) ABORTED" in text and "agrees on 2/4 nodes (1 placed on HTP that QNN refused" in text
    assert "Processed 9 nodes" in text and "terminate called" in text and "error 3110" in text


def test_html_section_carries_both_sides_and_escapes_names():
    page = "".join(qnn_html({**QNN, "nodes": [*QNN["nodes"], {**QNN["nodes"][1], "name": "<b>", "index": 4}]}))
    assert "ABORTED" in page and "backendValidateOpConfig error 3110" in page
    assert "<td>&lt;b&gt;</td>" in page and "<td><b></td>" not in page
