"""QNN's verdict on every node, read from the QNN execution provider's verbose log.

With ``log_severity_level=0, log_verbosity_level=1`` the EP logs, for every node unit it
considers (a QDQ group such as ``DQ -> LayerNormalization -> Q`` counts as one unit)::

    Validation PASSED|FAILED for N nodes in OrtNodeUnit (Op) :
        Operator type: DequantizeLinear Node name: x_DequantizeLinear Node index: 3
        ...
        REASON : Failed to add node.

preceded, when QNN's own op validation refused the unit, by
``QNN.backendValidateOpConfig() failed for node `X` of type `LayerNorm` with error code 3110``.
It does so once per ``GetCapability`` pass (before and after the layout transform, which
renames the nodes it rewrites ``<name>_token_<n>``); the last pass a node appears in decides. When the session is built, onnxruntime also lists the nodes it
placed on the CPU (``Node(s) placed on [CPUExecutionProvider]``), which is the final word.

:func:`parse_log` turns that into one :class:`NodeVerdict` per node name.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

#: ``htp``: QNN runs it; ``boundary``: a Q at a graph input or DQ at a graph output, which the EP
#: leaves to the CPU by default; ``rejected``: QNN refused it (``reason`` says why); ``cpu``:
#: accepted by validation but left on the CPU by onnxruntime's partitioning; ``unseen``: QNN was
#: never asked (it aborted first, or the node is not one it considers).
Status = Literal["htp", "boundary", "rejected", "cpu", "unseen"]

BOUNDARY_REASONS = ("not take Q nodes that consume a graph input", "not take DQ nodes that generate a graph output")

_UNIT = re.compile(r"Validation (PASSED|FAILED) for \d+ nodes in OrtNodeUnit \((?P<op>[^)]*)\)")
_MEMBER = re.compile(r"Operator type: (?P<op>\S+) Node name: (?P<name>.*) Node index: (?P<index>\d+)\s*$")
_REASON = re.compile(r"REASON : (?P<reason>.*)$")
_BACKEND = re.compile(r"backendValidateOpConfig\(\) failed for node `[^`]*` of type `(?P<type>[^`]*)` with error code (?P<code>\d+)")
_PASS = re.compile(r"GetCapability pass (?P<number>\d+)")
_TRYING = re.compile(r"QNN node builder is trying to add node")
_PLACED = re.compile(r"Node\(s\) placed on \[(?P<ep>[^\]]+)\]")
_PLACED_NODE = re.compile(r"VerifyEachNodeIsAssignedToAnEp\]\s{3}(?P<op>\S+) \((?P<name>.*)\)\s*$")


@dataclass(frozen=True)
class NodeVerdict:
    """What QNN decided for one node."""

    name: str
    op: str
    status: Status
    reason: str = ""
    #: The node unit it was validated in (the op that anchors the QDQ group).
    unit: str = ""

    @property
    def on_htp(self) -> bool:
        return self.status == "htp"

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "status": self.status, "reason": self.reason, "unit": self.unit}


@dataclass
class LogReading:
    """Everything :func:`parse_log` found: verdicts by node name, and whether placement was logged."""

    verdicts: dict[str, NodeVerdict] = field(default_factory=dict)
    placed_on_cpu: set[str] = field(default_factory=set)
    placements_logged: bool = False


#: onnxruntime's layout transformation (NCHW -> NHWC, before the second GetCapability pass)
#: replaces a node by one named ``<name>_token_<n>``.
_LAYOUT_COPY = re.compile(r"^(?P<name>.*)_token_\d+$")


def parse_log(text: str, names: Collection[str] = ()) -> LogReading:
    """Read the EP's validation lines and onnxruntime's node placements (see the module doc).

    ``names``: the model's node names; a layout-transformed copy of one of them
    (``conv_token_1``) is reported under the original's name.
    """
    known = set(names)

    def original(name: str) -> str:
        match = _LAYOUT_COPY.match(name)
        return match["name"] if match and match["name"] in known else name

    reading = LogReading()
    validated: dict[str, NodeVerdict] = {}
    members: list[tuple[str, str]] = []
    unit_op, passed, reason = "", False, ""
    backend_errors: list[str] = []
    placing: str | None = None

    def close_unit() -> None:
        nonlocal members
        if not members:
            return
        why = reason
        if not passed and backend_errors:
            why = f"{reason} ({'; '.join(dict.fromkeys(backend_errors))})" if reason else "; ".join(dict.fromkeys(backend_errors))
        for op, name in members:
            if passed:
                status: Status = "htp"
            elif any(marker in why for marker in BOUNDARY_REASONS):
                status = "boundary"
            else:
                status = "rejected"
            validated[name] = NodeVerdict(name, op, status, "" if passed else why, unit_op)
        members = []

    for line in text.splitlines():
        if _PASS.search(line) or _TRYING.search(line):
            close_unit()
            backend_errors = []
            continue
        if match := _BACKEND.search(line):
            backend_errors.append(f"QNN {match['type']}: backendValidateOpConfig error {match['code']}")
            continue
        if match := _UNIT.search(line):
            close_unit()
            unit_op, passed, reason = match["op"], match.group(1) == "PASSED", ""
            continue
        if match := _MEMBER.search(line):
            members.append((match["op"], original(match["name"])))
            continue
        if match := _REASON.search(line):
            reason = match["reason"].strip()
            continue
        if match := _PLACED.search(line):
            close_unit()
            reading.placements_logged = True
            placing = match["ep"]
            continue
        if placing is not None:
            if match := _PLACED_NODE.search(line):
                if placing == "CPUExecutionProvider":
                    reading.placed_on_cpu.add(original(match["name"]))
                continue
            placing = None
    close_unit()
    for name, verdict in validated.items():
        if verdict.status == "htp" and name in reading.placed_on_cpu:
            verdict = NodeVerdict(name, verdict.op, "cpu", "placed on the CPU by onnxruntime's partitioning", verdict.unit)
        reading.verdicts[name] = verdict
    return reading
