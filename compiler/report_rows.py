"""Rows of the quantization report, shared by the terminal summary and the HTML page."""

from __future__ import annotations

from typing import Any


def quantization_output_rows(accuracy: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Per output of the accuracy report: name, SQNR dB, cosine, max abs error, top-1 agreement."""
    rows = []
    for output in accuracy["outputs"]:
        if "sqnr_db" not in output:
            rows.append((output["output"], "exact" if output.get("exact_match") else "differs", "", "", ""))
            continue
        sqnr = "exact" if output.get("exact") else f"{output['sqnr_db']:.1f}"
        top1 = f"{output['top1_agreement']:.1%}" if "top1_agreement" in output else ""
        rows.append((output["output"], sqnr, f"{output['cosine']:.5f}", f"{output['max_abs_error']:.3g}", top1))
    return rows


def quantization_offender_rows(details: dict[str, Any], limit: int) -> list[tuple[str, str, str, str]]:
    """The top offenders: tensor, kind, output SQNR dB when quantized alone, share of the error."""
    return [
        (entry["tensor"], entry["kind"], "exact" if entry["sqnr_db_alone"] is None else f"{entry['sqnr_db_alone']:.1f}", f"{entry['share']:.1%}")
        for entry in details.get("offenders", [])[:limit]
    ]


def accuracy_target_text(details: dict[str, Any], arrow: str = "->") -> str | None:
    """One sentence on the accuracy target: met or not, and what was promoted (None: no target)."""
    target = details.get("accuracy_target")
    if not target:
        return None
    promoted = ", ".join(f"{p['tensor']} {arrow} {p['to']}" for p in target["promoted"]) or "nothing"
    return f"accuracy target {target['target_db']} dB: {'met' if target.get('met') else 'NOT met'}; promoted {promoted}"
