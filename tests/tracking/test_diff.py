"""``mapc diff`` on real compiles that differ in known ways reports exactly those changes."""

from __future__ import annotations

import json
import subprocess

import pytest

from mapc.diff import Change, Diff, diff_metrics, fallback_changes
from mapc.diff_render import MAX_NODES_SHOWN, diff_markdown, fallback_rows, format_change
from mapc.metrics import load_report, metrics_of
from tests.conftest import MAPC_SCRIPT
from tests.tracking.conftest import EXAMPLES, SHAPES, read

#: Metrics that move with any recompile or any change of the lowered graph: the time (noise),
#: the node count after lowering, and the bytes of the written model and its weights (the
#: pipeline string in its metadata, the constants each partition takes).
INCIDENTAL = {"compile_seconds", "nodes", "output_bytes", "weight_bytes"}


def diff_of(reports, old, new):
    return diff_metrics(metrics_of(load_report(reports[old])), metrics_of(load_report(reports[new])), old, new)


def changed(diff) -> set[str]:
    return {change.metric for change in diff.changed} - INCIDENTAL


def fallback_nodes(report, op_type):
    return [entry["node"] for entry in report["fallback"] if entry["op_type"] == op_type]


def test_the_same_compile_twice_changes_nothing_but_time(reports):
    diff = diff_of(reports, "cq", "cq_again")
    assert {c.metric for c in diff.changed} <= {"compile_seconds"} and diff.fallback == []
    assert len(diff.changes) > 15


def test_cpu_ops_softmax_moves_the_softmax_and_its_qdq_to_the_cpu(reports):
    diff = diff_of(reports, "cq", "cq_softmax")
    new = read(reports["cq_softmax"])
    assert changed(diff) == {"nodes_on_target", "nodes_on_target_fraction", "fallback_nodes", "estimated_ms"}
    by_code = {entry.code: entry for entry in diff.fallback}
    assert by_code["user.cpu-ops"].status == "added"
    assert by_code["user.cpu-ops"].nodes_added == fallback_nodes(new, "Softmax") != []
    assert all(entry.status == "added" and not entry.nodes_removed for entry in diff.fallback)
    moved = {node for entry in diff.fallback for node in entry.nodes_added}
    assert moved == {entry["node"] for entry in new["fallback"]}, "every new CPU node is listed under its reasons"
    rows = {c.metric: c for c in diff.changes}
    assert rows["nodes_on_target"].delta == -len(moved) and rows["fallback_nodes"].delta == len(moved)
    assert rows["estimated_ms"].verdict == "worse"


def test_cpu_ops_softmax_changes_nothing_when_attention_fused_the_softmax(reports):
    diff = diff_of(reports, "t", "t_softmax")
    assert changed(diff) == set() and diff.fallback == []
    assert not fallback_nodes(read(reports["t_softmax"]), "Softmax")


def test_another_target(reports):
    diff = diff_of(reports, "cq", "cq_ethos")
    rows = {c.metric: c for c in diff.changes}
    assert (rows["target"].old, rows["target"].new) == ("npu", "ethos-u55")
    assert changed(diff) == {"target", "nodes_on_target", "nodes_on_target_fraction", "fallback_nodes", "estimated_ms"}
    new = read(reports["cq_ethos"])
    assert [(e.code, e.status, e.nodes_added) for e in diff.fallback] == [("dtype.data", "added", [n["node"] for n in new["fallback"]])]
    assert not changed(diff) & {"quantization", "macs_on_target", "partitions", "sqnr_db[probabilities]"}


def test_quantize_against_float(reports):
    diff = diff_of(reports, "t", "tq")
    rows = {c.metric: c for c in diff.changes}
    quantize = next(p for p in read(reports["tq"])["passes"] if p["name"] == "quantize")
    outputs = [entry["output"] for entry in quantize["details"]["accuracy"]["outputs"]]
    accuracy = {f"{kind}[{name}]" for name in outputs for kind in ("sqnr_db", "cosine", "top1")}
    expected = {"quantization", "nodes_on_target", "nodes_on_target_fraction", "fallback_nodes", "estimated_ms"} | accuracy
    assert changed(diff) == expected
    assert (rows["quantization"].old, rows["quantization"].new) == (None, "a8w8")
    assert rows["weight_bytes"].new < rows["weight_bytes"].old / 2, "int8 weights take under half the bytes"
    assert all(rows[key].old is None and rows[key].new is not None for key in accuracy)
    tq = read(reports["tq"])
    assert {n for e in diff.fallback for n in e.nodes_added} == {e["node"] for e in tq["fallback"]} - {e["node"] for e in read(reports["t"])["fallback"]}


def test_an_extra_fallback_op(reports):
    diff = diff_of(reports, "t", "t_acos")
    assert changed(diff) == {"nodes_on_target_fraction", "fallback_nodes", "estimated_ms"}
    assert [(e.code, e.status, e.nodes_added, e.nodes_removed) for e in diff.fallback] == [
        ("op.not-supported", "added", fallback_nodes(read(reports["t_acos"]), "Acos"), [])
    ]
    rows = {c.metric: c for c in diff.changes}
    assert rows["fallback_nodes"].delta == 1 and rows["nodes_on_target"].delta == 0


def test_static_and_fused_ops(reports):
    diff = diff_of(reports, "c_dynamic", "c")
    rows = {c.metric: c for c in diff.changes}
    assert (rows["static"].old, rows["static"].new) == (False, True) and rows["static"].verdict == "better"
    assert rows["fused.conv-batch-norm"].old == rows["fused.conv-batch-norm"].new == 4  # the CNN's four BatchNorms
    transformer = {c.metric: c for c in diff_of(reports, "c", "t").changes}
    assert {key: (c.old, c.new) for key, c in transformer.items() if key.startswith("fused.") and c.changed} == {
        "fused.conv-batch-norm": (4, 0), "fused.attention": (0, 2), "fused.layer-norm": (0, 5), "fused.gelu": (0, 2)}


def test_fallback_changes_per_code():
    old = {"a": ["n1", "n2"], "b": ["n3"]}
    new = {"a": ["n2", "n4"], "c": ["n5"]}
    assert [e.as_dict() for e in fallback_changes(old, new)] == [
        {"code": "a", "status": "changed", "nodes_added": ["n4"], "nodes_removed": ["n1"]},
        {"code": "b", "status": "removed", "nodes_added": [], "nodes_removed": ["n3"]},
        {"code": "c", "status": "added", "nodes_added": ["n5"], "nodes_removed": []},
    ]
    assert fallback_changes(None, {"a": ["n1"]})[0].status == "added"


@pytest.mark.parametrize(("change", "text"), [
    (Change("m", "m", "count", 3, 5), "+2 (+66.7%)"),
    (Change("m", "m", "fraction", 0.5, 0.25), "-25.0 pts"),
    (Change("m", "m", "db", 30.0, 29.5), "-0.50"),
    (Change("m", "m", "text", "npu", "cpu"), "changed"),
    (Change("m", "m", "count", None, 5), "changed"),
    (Change("m", "m", "count", 5, 5), ""),
])
def test_change_text(change, text):
    assert format_change(change) == text


def test_verdicts_follow_the_direction():
    assert Change("m", "m", "ms", 1.0, 2.0, "lower").verdict == "worse"
    assert Change("m", "m", "db", 20.0, "exact", "higher").verdict == "better"
    assert Change("m", "m", "count", 1, 2).verdict is None


def test_markdown_escapes_cells_and_lists_fallback(reports):
    diff = diff_of(reports, "cq", "cq_softmax")
    text = diff_markdown(diff)
    assert text.startswith("### mapc diff: `cq` → `cq_softmax`")
    assert "| metric | old | new | change |" in text
    assert f"| `user.cpu-ops` | new: 1 node(s) | +{diff.fallback[-1].nodes_added[0]} |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "**" in line]
    assert len(rows) == len([c for c in diff.changes if c.changed]), "each changed metric is bold"
    assert diff_markdown(diff_metrics(metrics_of(read(reports["cq"])), metrics_of(read(reports["cq"])), "a|b", "c")).startswith("### mapc diff: `a|b`")


def test_cli_diff_of_reports_json_and_markdown(reports):
    done = subprocess.run([MAPC_SCRIPT, "diff", str(reports["t"]), str(reports["t_acos"]), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["fallback"][0]["code"] == "op.not-supported" and "fallback_nodes" in data["changed"]
    done = subprocess.run([MAPC_SCRIPT, "diff", str(reports["t"]), str(reports["t_acos"]), "--markdown"], capture_output=True, text=True)
    assert done.returncode == 0 and "`op.not-supported`" in done.stdout
    done = subprocess.run([MAPC_SCRIPT, "diff", str(reports["t"]), str(reports["t_acos"])], capture_output=True, text=True)
    assert done.returncode == 0 and "op.not-supported" in done.stdout and "metrics changed" in done.stdout


def test_cli_diff_compiles_two_models_with_the_flags(reports, acos_model):
    before = acos_model.read_bytes()
    argv = [MAPC_SCRIPT, "diff", str(EXAMPLES / "transformer.onnx"), str(acos_model), *SHAPES, "--target", "npu", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert acos_model.read_bytes() == before, "the input model is never modified"
    assert done.returncode == 0, done.stderr
    from_models = json.loads(done.stdout)
    from_reports = diff_of(reports, "t", "t_acos").as_dict()
    assert from_models["fallback"] == from_reports["fallback"]
    same = {m["metric"]: (m["old"], m["new"]) for m in from_reports["metrics"] if m["metric"] not in INCIDENTAL}
    assert {m["metric"]: (m["old"], m["new"]) for m in from_models["metrics"] if m["metric"] not in INCIDENTAL} == same


@pytest.mark.parametrize(("args", "fragment"), [
    (["missing.json", "{cq}"], "report missing.json does not exist"),
    (["{notreport}", "{cq}"], "not a mapc compile report"),
    (["{broken}", "{cq}"], "broken.json: not a mapc compile report (KeyError"),
    (["{cq}", "{cq}", "--target", "npu"], "--target compiles a model, but"),
    (["{cq}", "{cq}", "--junit", "x.xml"], "--junit needs --expect"),
])
def test_cli_diff_errors_are_one_line(reports, tmp_path, args, fragment):
    (tmp_path / "notreport.json").write_text('{"a": 1}')
    broken = read(reports["cq"])
    del broken["partitions"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    names = {"{cq}": str(reports["cq"]), "{notreport}": str(tmp_path / "notreport.json"), "{broken}": str(tmp_path / "broken.json")}
    argv = [names.get(a, a) for a in args]
    done = subprocess.run([MAPC_SCRIPT, "diff", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mapc: error: ") and fragment in lines[0], done.stderr


def test_long_node_lists_are_cut_in_tables_but_not_in_json():
    many = [f"n{i}" for i in range(MAX_NODES_SHOWN + 3)]
    diff = Diff("a", "b", [], fallback_changes({}, {"op.not-supported": many}))
    [(code, status, nodes)] = fallback_rows(diff)
    assert status == f"new: {len(many)} node(s)" and nodes.endswith(f"+n{MAX_NODES_SHOWN - 1} and 3 more")
    assert diff.as_dict()["fallback"][0]["nodes_added"] == many
