"""docs/report-schema.md is the schema: real reports must match it, key for key and type for type."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import mapc
from mapc.cli import main
from tests.targets.models import static_cnn, static_transformer
from tests.targets.qnn.support import needs_qnn

SCHEMA_PAGE = Path(__file__).resolve().parents[1] / "docs" / "report-schema.md"
ROW = re.compile(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \|")
TYPES = {"any": object, "string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict, "array": list, "null": type(None)}


def documented() -> dict[str, tuple[str, str]]:
    """key path -> (type text, when) from the schema table."""
    rows = {}
    for line in SCHEMA_PAGE.read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = (match.group(2).strip(), match.group(3).strip())
    return rows


def type_ok(value: Any, text: str) -> bool:
    for option in text.split(" or "):
        option = option.strip()
        if option.startswith("map of "):
            inner = option[len("map of "):]
            if isinstance(value, dict) and all(type_ok(v, inner) for v in value.values()):
                return True
            continue
        expected = TYPES[option]
        if isinstance(value, bool) and option in ("integer", "number"):
            continue
        if isinstance(value, expected):
            return True
    return False


def flatten(value: Any, path: str, schema: dict[str, tuple[str, str]], found: dict[str, list[Any]]) -> None:
    if path:
        found.setdefault(path, []).append(value)
    if path in schema and schema[path][0].startswith("map of"):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(item, f"{path}.{key}" if path else key, schema, found)
    elif isinstance(value, list):
        for item in value:
            flatten(item, f"{path}[]", schema, found)


def check(report: dict[str, Any], present: set[str]) -> None:
    schema = documented()
    found: dict[str, list[Any]] = {}
    flatten(report, "", schema, found)
    containers = {key for key, values in found.items() if key.endswith("[]") and all(isinstance(v, (dict, list)) for v in values)}
    undocumented = sorted(set(found) - set(schema) - containers)
    assert not undocumented, f"keys missing from docs/report-schema.md: {undocumented}"
    for key, (type_text, when) in schema.items():
        if when in present and key.count("[]") == 0:
            assert key in found, f"documented key {key!r} ({when}) is missing"
        for value in found.get(key, []):
            assert type_ok(value, type_text), f"{key}: {value!r} is not {type_text}"


def test_the_schema_page_parses():
    schema = documented()
    assert {"target", "passes", "coverage", "partitions", "fallback", "estimate", "verification"} <= set(schema)
    assert all(when in {"always", "target", "verify", "verify-each", "cli", "qnn", "sometimes"} for _, when in schema.values())
    for type_text, _ in schema.values():
        for option in type_text.split(" or "):
            assert option.strip().removeprefix("map of ") in TYPES, type_text


def test_a_report_without_target_matches():
    check(mapc.compile(static_cnn(size=16)).report, {"always"})


@pytest.mark.parametrize("target", ["npu", "ethos-u55", "cpu"])
def test_target_reports_match(target):
    result = mapc.compile(static_transformer(sequence=8, hidden=32, layers=1), target=target, verify=True, verify_each=True)
    check(result.report, {"always", "target", "verify"})


def test_the_cli_report_matches_and_the_sample_in_the_docs_is_current_in_shape(tmp_path):
    model = tmp_path / "cnn.onnx"
    model.write_bytes(static_cnn().SerializeToString())
    report = tmp_path / "report.json"
    assert main(["compile", str(model), "--target", "npu", "--verify", "--report", str(report), "-q"]) == 0
    check(json.loads(report.read_text()), {"always", "target", "verify", "cli"})
    sample = SCHEMA_PAGE.parent / "sample-report" / "cnn-npu.json"
    check(json.loads(sample.read_text()), {"always", "target", "verify", "cli"})


@needs_qnn
def test_the_qnn_sections_match(tmp_path):
    model, report = tmp_path / "cnn.onnx", tmp_path / "report.json"
    model.write_bytes(static_cnn(size=16).SerializeToString())
    argv = ["compile", str(model), "--target", "qnn-htp", "--quantize", "--calibration", "random", "--check-with-qnn",
            "--accuracy-on", "qnn", "--emit", "epcontext", "--report", str(report), "-q"]
    assert main(argv) == 0
    check(json.loads(report.read_text()), {"always", "target", "cli", "qnn"})
