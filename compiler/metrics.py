"""The numbers compiles are compared, gated and tracked on, read from a compile report.

:func:`metrics_of` turns a report (``docs/report-schema.md``) into one flat :class:`Metrics`
record; ``mapc diff``, the budgets and the history all read that record, never the report. Only
documented keys are read, and a key a report lacks (an older mapc, a compile without a target,
a model not quantized) gives None, so reports written by earlier versions still compare.
:func:`load_report` reads a report file with one-line errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapc.ir import UsageError, rule_names
from mapc.passes.fusion import STAGES

#: The ``fuse`` rules that produce a fused op or fold one op into another (canonicalisation aside).
FUSION_KINDS = tuple(rule_names([*STAGES["fold"], *STAGES["fuse"]]))


@dataclass(frozen=True)
class OutputAccuracy:
    """One output of the quantization accuracy report (None: not measured for this output)."""

    sqnr_db: float | None
    exact: bool
    cosine: float | None
    top1: float | None


@dataclass(frozen=True)
class Metrics:
    """What one compile achieved (see the module doc; None: the report does not say)."""

    mapc_version: str
    input: str | None
    target: str | None
    nodes: int
    nodes_total: int | None
    nodes_on_target: int | None
    macs_total: int | None
    macs_on_target: int | None
    partitions: int | None
    #: reason code -> the CPU-fallback nodes with that reason, in graph order (None: no target)
    fallback: dict[str, list[str]] | None
    fallback_nodes: int | None
    #: fusion rule -> how often it fired (only rules that fired)
    fused: dict[str, int]
    static: bool | None
    quantization: str | None
    #: output name -> accuracy of the quantized model (empty: not quantized)
    outputs: dict[str, OutputAccuracy] = field(default_factory=dict)
    estimated_ms: float | None = None
    cpu_only_ms: float | None = None
    compile_seconds: float = 0.0
    weight_bytes: int | None = None
    output_bytes: int | None = None

    @property
    def nodes_on_target_fraction(self) -> float | None:
        return _fraction(self.nodes_on_target, self.nodes_total)

    @property
    def macs_on_target_fraction(self) -> float | None:
        return _fraction(self.macs_on_target, self.macs_total)

    @property
    def worst_sqnr_db(self) -> float | None:
        """The lowest SQNR over the outputs that have one (None: none has)."""
        values = [o.sqnr_db for o in self.outputs.values() if o.sqnr_db is not None]
        return min(values) if values else None


def _fraction(part: int | None, whole: int | None) -> float | None:
    if part is None or whole is None:
        return None
    return part / whole if whole else 1.0


def load_report(path: Path) -> dict[str, Any]:
    """The compile report in ``path``; :class:`UsageError` (one line) if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"report {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read report {path}: {getattr(error, 'strerror', None) or error}") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{path}: not JSON: {error}") from None
    check_report(data, str(path))
    return data


def check_report(data: Any, where: str) -> None:
    """:class:`UsageError` unless ``data`` has the keys every compile report has."""
    if not isinstance(data, dict) or not all(key in data for key in ("schema_version", "mapc_version", "nodes_after", "passes")):
        raise UsageError(f"{where}: not a mapc compile report (write one with mapc compile --report FILE.json)")


def metrics_of(report: dict[str, Any], where: str = "report") -> Metrics:
    """The :class:`Metrics` of a compile report; :class:`UsageError` naming ``where`` if a key has the wrong shape."""
    try:
        return _metrics(report)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise UsageError(f"{where}: not a mapc compile report ({type(error).__name__}: {error})") from None


def _metrics(report: dict[str, Any]) -> Metrics:
    coverage = report.get("coverage") or {}
    estimate = report.get("estimate") or {}
    size = report.get("size") or {}
    has_target = "target" in report
    return Metrics(
        mapc_version=str(report["mapc_version"]),
        input=report.get("input"),
        target=report["target"]["name"] if has_target else None,
        nodes=int(report["nodes_after"]),
        nodes_total=coverage.get("nodes_total"),
        nodes_on_target=coverage.get("nodes_on_target"),
        macs_total=coverage.get("macs_total"),
        macs_on_target=coverage.get("macs_on_target"),
        partitions=sum(p["device"] != "cpu" for p in report["partitions"]) if has_target else None,
        fallback=_fallback(report["fallback"]) if has_target else None,
        fallback_nodes=len(report["fallback"]) if has_target else None,
        fused=_fused(report["passes"]),
        static=report.get("static"),
        quantization=((report.get("options") or {}).get("quantize") or {}).get("scheme"),
        outputs=_accuracy(report["passes"]),
        estimated_ms=estimate.get("target_ms"),
        cpu_only_ms=estimate.get("cpu_only_ms"),
        compile_seconds=float(report.get("seconds", 0.0)),
        weight_bytes=size.get("weights"),
        output_bytes=size.get("output"),
    )


def _fallback(entries: list[dict[str, Any]]) -> dict[str, list[str]]:
    by_code: dict[str, list[str]] = {}
    for entry in entries:
        for reason in entry["reasons"]:
            nodes = by_code.setdefault(reason["code"], [])
            if entry["node"] not in nodes:
                nodes.append(entry["node"])
    return dict(sorted(by_code.items()))


def _fused(records: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        if record["name"] == "fuse":
            for kind in FUSION_KINDS:
                counts[kind] = counts.get(kind, 0) + int(record["counters"].get(kind, 0))
    return {kind: count for kind, count in counts.items() if count}


def _accuracy(records: list[dict[str, Any]]) -> dict[str, OutputAccuracy]:
    quantize = [r for r in records if r["name"] == "quantize" and "accuracy" in r.get("details", {})]
    if not quantize:
        return {}
    outputs = {}
    for entry in quantize[-1]["details"]["accuracy"]["outputs"]:
        if "sqnr_db" not in entry and "exact" not in entry:  # an integer output: equal or not
            outputs[entry["output"]] = OutputAccuracy(None, bool(entry.get("exact_match")), None, None)
            continue
        outputs[entry["output"]] = OutputAccuracy(entry.get("sqnr_db"), bool(entry.get("exact")), entry.get("cosine"), entry.get("top1_agreement"))
    return outputs
