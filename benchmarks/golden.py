#!/usr/bin/env python3
"""Golden harness: does a mapc build compile a fixed matrix of CLI configurations as another does?

Two modes, run by hand:

``run``: compile every configuration of the matrix (models x flag sets, about 300) with the given
``mapc`` executable, one compile at a time, each into its own temporary folder with
``-q --report report.json``, and write one JSON record per configuration: exit code, the last
stderr line, the report normalised (timings, versions and paths removed; the spellings issue 12
renamed mapped to the new ones; ``unk__N`` dims renumbered by first appearance), the compiled
model's op counts (graph and local functions apart), a placement summary, the SQNR figures of
``--quantize``, and a hash of every file written after renumbering ``unk__N`` dims (plus the raw
hash and the raw ``unk__N`` names, so a difference in those names alone stays visible)::

    nice -n 10 python benchmarks/golden.py run OLD_VENV/bin/mapc old.json
    nice -n 10 python benchmarks/golden.py run NEW_VENV/bin/mapc new.json [--only REGEX]

The models are read from this checkout (``examples/``, ``tests/fixtures/transformers/``) and
from the installed onnx wheel (``onnx/backend/test/data/light``), so both runs compile the same
bytes whichever mapc they call.

``compare``: read two such JSONs and print every configuration that differs, grouped by class:

- ``a-attention``: fuse fused a different number of ``Attention`` ops (or its attention
  near-misses, such as ``fuse.attention.batch-unproven``, differ); the op-count deltas of the
  graph and of the local functions are printed beside it;
- ``b-null-flags``: the report's ``options.quantize`` lists unset flags as ``null`` on one side;
- ``c-unk-names``: only onnx's ``unk__N`` placeholder names differ (a renaming);
- ``c-unk-identity``: a model differs only in which unknown dims share an ``unk__N`` placeholder;
- ``d-annotations``: a model differs only in its intermediate shape annotations (``value_info``);
- ``other``: anything else, with every differing path: a regression until explained::

    python benchmarks/golden.py compare old.json new.json [--json diff.json]

Exit code of ``compare``: 0 when nothing falls in ``other``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import onnx

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "transformers"
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MY_NPU = REPO / "examples" / "my_npu.toml"
TIMEOUT_S = 900

#: The fixture dims as tests/e2e/test_transformer_fixtures.py fixes them: 8 tokens after 16 cached.
FIXTURE_DIMS = {"batch_size": 1, "sequence_length": 8, "past_sequence_length": 16, "total_sequence_length": 24}

RANDOM = ["--calibration", "random"]
#: name -> flags. Every flag exists at d5228c2 and after issue 12 (`mapc compile --help`).
FLAG_SETS: dict[str, list[str]] = {
    "default": [],
    "dynamic": [],  # no shape flags: symbolic dims stay, so fusion must prove dims equal itself
    "npu": ["--target", "npu"],
    "ethos-u55": ["--target", "ethos-u55"],
    "cpu": ["--target", "cpu"],
    "my_npu": ["--target", str(MY_NPU)],
    "a8w8": ["--quantize", "a8w8", *RANDOM],
    "a16w8": ["--quantize", "a16w8", *RANDOM],
    "w4": ["--quantize", "w4", *RANDOM],
    "a16w4": ["--quantize", "a16w4", *RANDOM],
    "accuracy-30": ["--quantize", "a8w8", *RANDOM, "--accuracy-target", "30"],
    "mask-int8": ["--mask-precision", "int8"],
    "mask-value": ["--mask-value", "-100"],
    "mask-as-input": ["--mask-as-input"],
    "opset23-verify": ["--target-opset", "23", "--verify"],
}
#: Flag sets compiled without the model's shape flags.
UNFIXED = {"dynamic"}
EVERY_TRANSFORMER = ["default", "dynamic", "npu", "a8w8", "opset23-verify"]
SOME_TRANSFORMERS = ["ethos-u55", "cpu", "my_npu", "a16w8", "w4", "a16w4", "accuracy-30", "mask-int8", "mask-value", "mask-as-input"]
REPRESENTATIVE_TRANSFORMERS = ["transformer", "bert-ts-eager", "gpt2-dynamo-sdpa", "llama-ts-sdpa", "vit-dynamo-eager", "whisper-dynamo-eager", "llama-dynamo-sdpa-kvcache"]
EVERY_CNN = ["default", "npu", "ethos-u55", "a8w8", "opset23-verify"]
SOME_CNNS = ["cpu", "my_npu", "a16w8", "w4", "a16w4", "accuracy-30"]
REPRESENTATIVE_CNNS = ["cnn", "light_resnet50", "light_squeezenet", "light_shufflenet"]

UNK = re.compile(r"\bunk__\d+\b")
#: Issue 12's intended renames: old spelling -> new, for note codes (prefixes) and rule names.
CODE_PREFIXES = {"fold.": "fold-constants.", "static.": "check-static.", "upgrade.": "upgrade-opset."}
RULE_RENAMES = {"noop-cast": "identity-cast"}
DROPPED_KEYS = {"seconds", "mapc_version"}


def models() -> dict[str, tuple[Path, list[str], str]]:
    """Model key -> (path, the flags fixing its shapes, kind 'transformer' or 'cnn')."""
    found: dict[str, tuple[Path, list[str], str]] = {
        "transformer": (REPO / "examples" / "transformer.onnx", ["--input-shape", "input_ids:1,16", "--input-shape", "attention_mask:1,16"], "transformer"),
        "cnn": (REPO / "examples" / "cnn.onnx", ["--dim", "batch=1"], "cnn"),
    }
    for path in sorted(LIGHT.glob("*.onnx")):
        found[path.stem] = (path, [], "cnn")
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    for name, entry in sorted(manifest["fixtures"].items()):
        if entry.get("status") != "ok":
            continue
        names = sorted({dim for io in entry["inputs"] for dim in io["dims"] if isinstance(dim, str) and dim.isidentifier()})
        dims = [flag for dim in names for flag in ("--dim", f"{dim}={FIXTURE_DIMS[dim]}")]
        found[name] = (FIXTURES / entry["file"], dims, "transformer")
    return found


def matrix() -> list[tuple[str, str]]:
    """The (model key, flag-set name) pairs, in a fixed order."""
    configs = []
    for key, (_, _, kind) in models().items():
        if kind == "transformer":
            sets = EVERY_TRANSFORMER + (SOME_TRANSFORMERS if key in REPRESENTATIVE_TRANSFORMERS else [])
        else:
            sets = EVERY_CNN + (SOME_CNNS if key in REPRESENTATIVE_CNNS else [])
        configs += [(key, flag_set) for flag_set in sets]
    return configs


# --- normalisation -------------------------------------------------------------------------------


def renumber_unk(text: str) -> tuple[str, list[str]]:
    """``text`` with every ``unk__N`` renamed ``unk__<k>`` by order of first appearance, and the raw names."""
    order: dict[str, str] = {}
    for name in UNK.findall(text):
        order.setdefault(name, f"unk__{len(order)}")
    return UNK.sub(lambda m: order[m.group(0)], text), list(order)


def _rename_code(code: str) -> str:
    for old, new in CODE_PREFIXES.items():
        if code.startswith(old):
            return new + code[len(old):]
    return ".".join(RULE_RENAMES.get(part, part) for part in code.split("."))


def _normalise(value, key: str | None = None):
    """Timings and versions dropped, counter keys in kebab-case, renamed codes and rules mapped."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in DROPPED_KEYS:
                continue
            if key == "counters":
                k = RULE_RENAMES.get(k.replace("_", "-"), k.replace("_", "-"))
            if key == "details" and k == "rules":
                continue  # per-rule details are new (issue 12); counters and notes carry the same facts
            v = _normalise(v, k)
            if k == "details" and not v:
                continue  # null before, {} once the per-rule details are dropped
            out[k] = v
        return out
    if isinstance(value, list):
        return [_normalise(v, key) for v in value]
    if isinstance(value, str) and key == "code":
        return _rename_code(value)
    return value


def _strip_paths(text: str, workdir: Path) -> str:
    return text.replace(str(workdir), "<out>").replace(str(REPO), "<repo>").replace(str(LIGHT), "<light>")


def normalise_report(report: dict, workdir: Path) -> tuple[dict, list[str]]:
    """The report with paths, timings and versions removed and renames mapped; the raw unk names."""
    text = _strip_paths(json.dumps(_normalise(report), sort_keys=True), workdir)
    text, raw = renumber_unk(text)
    return json.loads(text), raw


def model_hashes(path: Path) -> tuple[str, str, str, str]:
    """sha256 of: the model with its ``unk__N`` dims renumbered by first appearance; its raw bytes;
    the model with every ``unk__N`` dim named ``unk`` (equal when two models differ at most in which
    unknown dims share a placeholder); the model without intermediate shape annotations
    (``value_info``; equal when two models differ at most in what they say about inner shapes)."""
    raw = path.read_bytes()
    model = onnx.load_from_string(raw)
    value_infos = [*model.graph.input, *model.graph.output, *model.graph.value_info, *(v for f in model.functions for v in f.value_info)]
    dims = [d for info in value_infos if info.type.HasField("tensor_type") for d in info.type.tensor_type.shape.dim]
    unknown = [d for d in dims if d.HasField("dim_param") and UNK.fullmatch(d.dim_param)]
    order: dict[str, str] = {}
    for dim in unknown:
        dim.dim_param = order.setdefault(dim.dim_param, f"unk__{len(order)}")
    canonical = model.SerializeToString(deterministic=True)
    for dim in unknown:
        dim.dim_param = "unk"
    erased = model.SerializeToString(deterministic=True)
    del model.graph.value_info[:]
    for function in model.functions:
        del function.value_info[:]
    bare = model.SerializeToString(deterministic=True)
    return tuple(hashlib.sha256(b).hexdigest() for b in (canonical, raw, erased, bare))


def op_counts(path: Path) -> dict[str, dict[str, int]]:
    """Ops of the compiled model's graph and of its local functions ('domain::Op' outside ai.onnx)."""

    def key(node):
        return f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type

    model = onnx.load_from_string(path.read_bytes())
    return {
        "graph": dict(sorted(Counter(key(n) for n in model.graph.node).items())),
        "functions": dict(sorted(Counter(key(n) for f in model.functions for n in f.node).items())),
    }


def placement(report: dict) -> dict | None:
    """Coverage, each partition's device, size and ops, and the fallback reasons with node counts."""
    if "coverage" not in report:
        return None
    return {
        "coverage": report["coverage"],
        "partitions": [{k: p.get(k) for k in ("device", "nodes", "ops")} for p in report.get("partitions", [])],
        "fallback_by_reason": {r["code"]: r["nodes"] for r in report.get("fallback_by_reason", [])},
    }


def sqnr(report: dict) -> dict | None:
    """Worst and per-output SQNR of the quantize pass's accuracy report, and what it promoted."""
    for entry in report.get("passes", []):
        if entry["name"] == "quantize":
            details = entry.get("details") or {}
            accuracy = details.get("accuracy") or {}
            return {
                "worst_sqnr_db": accuracy.get("worst_sqnr_db"),
                "outputs": {o["output"]: o.get("sqnr_db") for o in accuracy.get("outputs", [])},
                "tensors_promoted": entry.get("counters", {}).get("tensors_promoted"),
            }
    return None


# --- run -----------------------------------------------------------------------------------------


def compile_one(mapc: str, key: str, flag_set: str) -> dict:
    """Compile one configuration in a fresh folder and return its record."""
    path, shape_flags, _ = models()[key]
    if flag_set in UNFIXED:
        shape_flags = []
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        workdir = Path(tmp).resolve()
        command = [mapc, "compile", str(path), *shape_flags, *FLAG_SETS[flag_set], "-o", str(workdir / "out.onnx"), "--report", str(workdir / "report.json"), "-q"]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT_S)
            exit_code, stderr = done.returncode, done.stderr
        except subprocess.TimeoutExpired:
            exit_code, stderr = "timeout", ""
        record = {
            "exit_code": exit_code,
            "seconds": round(time.perf_counter() - start, 2),
            "stderr": _strip_paths(stderr.strip().splitlines()[-1], workdir) if stderr.strip() else "",
        }
        report_path = workdir / "report.json"
        if report_path.exists():
            report = json.loads(report_path.read_text())
            record["report"], record["report_unk_raw"] = normalise_report(report, workdir)
            record["placement"] = placement(record["report"])
            record["sqnr"] = sqnr(record["report"])
        if (workdir / "out.onnx").exists():
            record["ops"] = op_counts(workdir / "out.onnx")
        kinds = ("files", "files_raw", "files_unk_erased", "files_no_value_info")
        for kind in kinds:
            record[kind] = {}
        for written in sorted(workdir.iterdir()):
            if written.name == "report.json" or not written.is_file():
                continue
            if written.suffix == ".onnx":
                hashes = model_hashes(written)
            else:
                hashes = (hashlib.sha256(written.read_bytes()).hexdigest(),) * len(kinds)
            for kind, digest in zip(kinds, hashes):
                record[kind][written.name] = digest
    return record


def run(args) -> int:
    mapc = str(Path(args.mapc).resolve())
    configs = [c for c in matrix() if not args.only or re.search(args.only, f"{c[0]}|{c[1]}")]
    results = {}
    if args.update and Path(args.out).exists():
        wanted = {f"{key}|{flag_set}" for key, flag_set in matrix()}
        results = {k: v for k, v in json.loads(Path(args.out).read_text())["results"].items() if k in wanted}
    for index, (key, flag_set) in enumerate(configs, 1):
        record = compile_one(mapc, key, flag_set)
        results[f"{key}|{flag_set}"] = record
        print(f"[{index}/{len(configs)}] {key} {flag_set}: exit {record['exit_code']} ({record['seconds']} s) {record['stderr'][:120]}", flush=True)
    header = {"mapc": mapc, "onnx": onnx.__version__, "configurations": len(results), "flag_sets": FLAG_SETS}
    Path(args.out).write_text(json.dumps({"header": header, "results": results}, indent=1, sort_keys=True))
    print(f"wrote {args.out}: {len(results)} configurations")
    return 0


# --- compare -------------------------------------------------------------------------------------

MISSING = "<missing>"


def diff_paths(a, b, path: str = "") -> list[tuple[str, object, object]]:
    """Every leaf path where ``a`` and ``b`` differ, with both values (MISSING when absent)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += diff_paths(a.get(k, MISSING), b.get(k, MISSING), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff_paths(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [(path, a, b)]


def _fuse_pass(record: dict) -> dict:
    for entry in (record.get("report") or {}).get("passes", []):
        if entry["name"] == "fuse":
            return entry
    return {}


def _attention_misses(record: dict) -> dict[str, int]:
    """fuse's attention near-misses by code (``fuse.attention.batch-unproven``: 2, ...)."""
    return dict(sorted(Counter(n["code"] for n in _fuse_pass(record).get("notes", []) if n.get("code", "").startswith("fuse.attention.")).items()))


def op_delta(old: dict, new: dict, part: str) -> dict[str, int]:
    """Per-op change of the graph's (or the local functions') op counts, new minus old."""
    total = Counter(new.get("ops", {}).get(part, {}))
    total.subtract(old.get("ops", {}).get(part, {}))
    return {k: v for k, v in sorted(total.items()) if v}


def _same_hash(old: dict, new: dict, kind: str, path: str) -> bool:
    """True if the file at ``path`` ('files.NAME') has the same ``kind`` hash in both records."""
    name = path.split(".", 1)[1]
    digest = old.get(kind, {}).get(name)
    return digest is not None and digest == new.get(kind, {}).get(name)


def classify(old: dict, new: dict) -> tuple[set[str], list[tuple[str, object, object]], dict]:
    """The classes explaining the differences of one configuration, the unexplained paths, and facts."""
    diffs = [d for d in diff_paths(old, new) if d[0] != "seconds"]
    classes, facts, left = set(), {}, []
    extra = _fuse_pass(new).get("counters", {}).get("attention", 0) - _fuse_pass(old).get("counters", {}).get("attention", 0)
    if extra or _attention_misses(old) != _attention_misses(new):
        classes.add("a-attention")
        facts = {
            "extra_attention": extra,
            "graph_ops": op_delta(old, new, "graph"),
            "function_ops": op_delta(old, new, "functions"),
            "attention_near_misses": [_attention_misses(old), _attention_misses(new)],
        }
    for path, a, b in diffs:
        if path.startswith("report.options.quantize.") and a is None and b == MISSING:
            classes.add("b-null-flags")
        elif path.startswith(("report_unk_raw", "files_raw.", "files_unk_erased.", "files_no_value_info.")):
            continue  # judged below, with the canonical hashes
        elif path.startswith("files.") and _same_hash(old, new, "files_unk_erased", path):
            classes.add("c-unk-identity")  # the same model but for which unknown dims share a placeholder
        elif path.startswith("files.") and "a-attention" not in classes and _same_hash(old, new, "files_no_value_info", path):
            classes.add("d-annotations")  # the same model but for its intermediate shape annotations
        elif "a-attention" in classes:
            continue  # downstream of a different fusion: reported with the op deltas
        else:
            left.append((path, a, b))
    renamed_files = [p for p, _, _ in diffs if p.startswith("files_raw.") and not any(q == "files." + p.split(".", 1)[1] for q, _, _ in diffs)]
    if renamed_files or any(p.startswith("report_unk_raw") for p, _, _ in diffs):
        if "a-attention" not in classes:
            classes.add("c-unk-names")
    if left:
        classes.add("other")
    return classes, left, facts


def load_run(path: str) -> dict[str, dict]:
    """The records of a run, their reports normalised again (idempotent; newer rules apply to old runs)."""
    results = json.loads(Path(path).read_text())["results"]
    for record in results.values():
        if record.get("report") is not None:
            record["report"] = _normalise(record["report"])
    return results


def compare(args) -> int:
    old, new = load_run(args.old), load_run(args.new)
    groups: dict[str, list[tuple[str, list, dict]]] = {}
    for name in sorted(set(old) | set(new)):
        if name not in old or name not in new:
            groups.setdefault("other", []).append((name, [("configuration", name in old, name in new)], {}))
            continue
        classes, left, facts = classify(old[name], new[name])
        if classes:
            groups.setdefault("+".join(sorted(classes)), []).append((name, left, facts))
    same = len(set(old) & set(new)) - sum(len(v) for v in groups.values())
    print(f"{len(set(old) | set(new))} configurations: {same} identical after normalisation")
    for group, members in sorted(groups.items()):
        print(f"\n## {group}: {len(members)}")
        for name, left, facts in members:
            print(f"- {name}" + (f"  {json.dumps(facts, sort_keys=True)}" if facts else ""))
            for path, a, b in left[: args.max_paths]:
                print(f"    {path}: {json.dumps(a)[:200]} -> {json.dumps(b)[:200]}")
            if len(left) > args.max_paths:
                print(f"    ... {len(left) - args.max_paths} more paths")
    if args.json:
        Path(args.json).write_text(json.dumps({g: [{"config": n, "facts": f, "paths": [list(map(str, d)) for d in left]} for n, left, f in m] for g, m in groups.items()}, indent=1))
    return 1 if any("other" in g for g in groups) else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run", help="compile the matrix with one mapc executable")
    r.add_argument("mapc", help="the mapc script of a venv, e.g. ../old/.venv/bin/mapc")
    r.add_argument("out", help="JSON file to write")
    r.add_argument("--only", help="regular expression on 'model|flag-set'")
    r.add_argument("--list", action="store_true", help="print the matrix and exit")
    r.add_argument("--update", action="store_true", help="merge into OUT: keep its records of the matrix, replace those run now")
    c = sub.add_parser("compare", help="print the differences of two runs, by class")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--json", help="also write the grouped differences here")
    c.add_argument("--max-paths", type=int, default=12, help="differing paths printed per configuration")
    args = parser.parse_args(argv)
    if args.mode == "run" and args.list:
        for key, flag_set in matrix():
            print(key, flag_set)
        return 0
    return run(args) if args.mode == "run" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
