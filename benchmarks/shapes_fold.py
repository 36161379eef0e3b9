#!/usr/bin/env python3
"""Static shapes and folding: mapc against onnxsim, onnxslim and onnxruntime, in one run.

For every model, each tool fixes the same input shapes and simplifies, in a subprocess of its
own, so wall time and peak memory (the worker's own VmHWM) are the tool's alone:

* ``mapc``: ``mapc.compile(model, input_shapes=..., passes=SHAPES_AND_FOLDING)`` (the
  default pipeline's simplification group: fix-shapes, fold-constants, peephole, cleanup to a
  fixed point, then check-static; fusion is measured by ``fusion.py``), then save;
* ``onnxsim``: ``onnxsim.simplify(model, overwrite_input_shapes=...)`` (``--overwrite-input-shape``);
* ``onnxslim``: ``onnxslim.slim(model, input_shapes=...)`` (``--input-shapes``);
* ``ort-basic``: onnxruntime's ``make_input_shape_fixed`` + ``fix_output_shapes``, then a session
  at ``ORT_ENABLE_BASIC`` writing its optimized model.

"wall" is the whole process (interpreter start and imports included), "work" is load, simplify
and save. Each result is checked: node count, ``Shape``/``Size`` ops and tensors with dynamic shapes left
(mapc's own shape inference on the tool's output), and outputs against the original model on
seeded inputs of the fixed shapes (onnxruntime, per-dtype tolerances). Models: the transformer
fixtures (batch 1, 8 tokens, 16 cached), a BERT-base-sized export built on the fly
(``synthetic_bert.py``, 440 MB), and the CNNs shipped in onnx's wheel
(``onnx/backend/test/data/light``). The peers are not mapc dependencies: install them into the
environment that runs this script (``pip install onnxsim onnxslim``).

    python benchmarks/shapes_fold.py                      # everything
    python benchmarks/shapes_fold.py --only bert --markdown table.md
    python benchmarks/shapes_fold.py --worker TOOL IN OUT SHAPES_JSON    # (internal)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "transformers"
TOOLS = ("mapc", "onnxsim", "onnxslim", "ort-basic")
#: The NPU case for the transformer fixtures.
NPU_DIMS = {"batch_size": 1, "sequence_length": 8, "past_sequence_length": 16, "total_sequence_length": 24}
#: Wall-clock repeats for models small enough that noise dominates (best run kept).
SMALL_MODEL_BYTES = 16 << 20
SMALL_REPEATS = 3


@dataclass
class Case:
    name: str
    path: Path
    shapes: dict[str, list[int]]
    kind: str


@dataclass
class Outcome:
    model: str
    kind: str
    tool: str
    ok: bool
    nodes_before: int = 0
    nodes: int | None = None
    shape_ops: int | None = None
    dynamic_tensors: int | None = None
    wall_s: float | None = None
    work_s: float | None = None
    peak_mb: float | None = None
    outputs_match: bool | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)


# -- the tools, each run inside a worker process --------------------------------------------------

#: The simplification group of the default pipeline, without the fusion and mask stages.
SHAPES_AND_FOLDING = "fixpoint(fix-shapes,fold-constants,peephole,cleanup),check-static"


def prepare_tool(tool: str):
    """Import what ``tool`` needs (not timed) and return ``run(source, target, shapes)``."""
    if tool == "mapc":
        import mapc

        def run(source: Path, target: Path, shapes: dict[str, list[int]]) -> None:
            mapc.compile(source, input_shapes=shapes, passes=SHAPES_AND_FOLDING).save(target)

    elif tool == "onnxsim":
        import onnx
        import onnxsim

        def run(source: Path, target: Path, shapes: dict[str, list[int]]) -> None:
            simplified, _ = onnxsim.simplify(onnx.load(str(source)), overwrite_input_shapes=shapes)
            onnx.save(simplified, str(target))

    elif tool == "onnxslim":
        import onnxslim

        def run(source: Path, target: Path, shapes: dict[str, list[int]]) -> None:
            onnxslim.slim(str(source), output_model=str(target), input_shapes=[f"{k}:{','.join(map(str, v))}" for k, v in shapes.items()])

    elif tool == "ort-basic":
        import onnx
        import onnxruntime as ort
        from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

        def run(source: Path, target: Path, shapes: dict[str, list[int]]) -> None:
            model = onnx.load(str(source))
            for name, shape in shapes.items():
                make_input_shape_fixed(model.graph, name, shape)
            fix_output_shapes(model)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            options.optimized_model_filepath = str(target)
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    else:
        raise SystemExit(f"unknown tool {tool}")
    return run


def worker(tool: str, source: str, target: str, shapes_json: str) -> int:
    run = prepare_tool(tool)
    started = time.perf_counter()
    run(Path(source), Path(target), json.loads(shapes_json))
    print(json.dumps({"work_s": time.perf_counter() - started, "peak_mb": peak_rss_mb()}))
    return 0


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Unlike ``ru_maxrss`` of a child, it does not
    count the parent's memory the child was forked with before it exec'd."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(tool: str, case: Case, target: Path) -> tuple[float, float, float, str | None]:
    """(wall seconds, work seconds, peak RSS MB, error) of one worker process."""
    command = [sys.executable, __file__, "--worker", tool, str(case.path), str(target), json.dumps(case.shapes)]
    log = target.with_suffix(".log")
    with open(log, "w+") as stderr, tempfile.TemporaryFile("w+") as stdout:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=target.parent)
        process.wait()
        wall = time.perf_counter() - started
        stdout.seek(0), stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    log.unlink()
    if process.returncode != 0 or not target.exists():
        lines = [line for line in err.strip().splitlines() if line.strip()]
        return wall, float("nan"), float("nan"), (lines[-1] if lines else f"exit {process.returncode}")[:200]
    report = json.loads(out.strip().splitlines()[-1])
    return wall, report["work_s"], report["peak_mb"], None


# -- checking a tool's output -------------------------------------------------------------------


def inspect_output(case: Case, produced: Path, reference: dict) -> dict:
    """Nodes, Shape/Size and dynamic tensors left, and whether the outputs still match. A tool's
    output that mapc refuses to load (e.g. invalid ONNX) is still counted and run in onnxruntime."""
    import onnx

    import mapc
    from mapc.ir import infer_shapes, run
    from mapc.ir.compare import compare_outputs
    from mapc.passes.check_static import dynamic_tensors

    proto = onnx.load(str(produced))
    nodes = list(_all_nodes(proto.graph))
    result: dict = {"nodes": len(nodes), "shape_ops": sum(1 for n in nodes if n.op_type in ("Shape", "Size"))}
    try:
        model = mapc.load(produced)
        infer_shapes(model, forget_existing=True)
        result["dynamic_tensors"] = len(dynamic_tensors(model))
    except mapc.MapcError as error:
        result["error"] = f"invalid output ({error})"[:200]
    try:
        actual = run(proto, reference["feeds"], base_dir=produced.parent)
        result["outputs_match"] = all(c.ok for c in compare_outputs(reference["outputs"], actual))
    except Exception as error:  # a tool's output that no longer runs is a finding, not a crash
        result["outputs_match"] = False
        result["error"] = f"does not run: {str(error)[:160]}"
    return result


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from _all_nodes(subgraph)


def reference_for(case: Case) -> dict:
    import mapc
    from mapc.ir import count_nodes, run, seeded_inputs

    model = mapc.load(case.path)
    feeds = seeded_inputs(model, seed=0, shapes=case.shapes)
    return {"feeds": feeds, "outputs": run(model, feeds), "nodes": count_nodes(model.graph)}


# -- the models ---------------------------------------------------------------------------------


def fixture_cases() -> list[Case]:
    from mapc.ir.dim_expr import evaluate_dim

    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    cases = []
    for name, entry in sorted(manifest["fixtures"].items()):
        if entry.get("status") != "ok":
            continue
        shapes = {io["name"]: [evaluate_dim(d, NPU_DIMS) if isinstance(d, str) else d for d in io["dims"]] for io in entry["inputs"]}
        cases.append(Case(name, FIXTURES / entry["file"], shapes, "transformer fixture"))
    return cases


def bert_cases(folder: Path, large: bool) -> list[Case]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from synthetic_bert import BertConfig, write_bert

    configs = [("bert-base", BertConfig())]
    if large:
        configs.append(("bert-large", BertConfig(layers=24, hidden=1024, heads=16, intermediate=4096)))
    cases = []
    for name, config in configs:
        path = folder / f"{name}.onnx"
        if not path.exists():
            print(f"building {name} ...", file=sys.stderr)
            write_bert(path, config, external_data=large and name == "bert-large")
        shapes = {name: [1, 128] for name in ("input_ids", "attention_mask", "token_type_ids")}
        cases.append(Case(name, path, shapes, "synthetic export"))
    return cases


def cnn_cases() -> list[Case]:
    import onnx

    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    cases = []
    for path in sorted(folder.glob("*.onnx")):
        proto = onnx.load(str(path), load_external_data=False)
        inits = {t.name for t in proto.graph.initializer}
        shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input if i.name not in inits}
        cases.append(Case(path.stem.removeprefix("light_"), path, shapes, "onnx light CNN"))
    return cases


# -- the run ------------------------------------------------------------------------------------


def benchmark(cases: list[Case], tools: list[str], scratch: Path) -> list[Outcome]:
    outcomes = []
    for case in cases:
        reference = reference_for(case)
        repeats = SMALL_REPEATS if case.path.stat().st_size < SMALL_MODEL_BYTES else 1
        for tool in tools:
            target = scratch / f"{case.name}.{tool}.onnx"
            best = None
            for _ in range(repeats):
                target.unlink(missing_ok=True)
                run = measure(tool, case, target)
                if best is None or (run[3] is None and run[0] < best[0]):
                    best = run
            wall, work, peak, error = best
            outcome = Outcome(case.name, case.kind, tool, error is None, reference["nodes"], wall_s=wall, work_s=work, peak_mb=peak, error=error)
            if error is None:
                for key, value in inspect_output(case, target, reference).items():
                    setattr(outcome, key, value)
                outcome.ok = bool(outcome.outputs_match) and outcome.error is None
            outcomes.append(outcome)
            print(_line(outcome), file=sys.stderr)
            for leftover in scratch.glob(f"{case.name}.{tool}.onnx*"):
                leftover.unlink()
    return outcomes


def _line(o: Outcome) -> str:
    if o.nodes is None:
        return f"{o.model:28s} {o.tool:9s} FAILED: {o.error}"
    dynamic = "?" if o.dynamic_tensors is None else o.dynamic_tensors
    verdict = "ok" if o.ok else ("outputs match, " if o.outputs_match else "MISMATCH, ") + (o.error or "")
    return (f"{o.model:28s} {o.tool:9s} nodes {o.nodes_before:5d} -> {o.nodes:5d}  shape ops {o.shape_ops:3d}  dynamic {dynamic:>4}"
            f"  {o.wall_s:7.2f} s wall {o.work_s:7.2f} s work {o.peak_mb:8.0f} MB  {verdict}")


def markdown(outcomes: list[Outcome], tools: list[str]) -> str:
    """One row per model: nodes (shape ops, dynamic tensors) and wall time per tool, plus totals."""
    models = list(dict.fromkeys(o.model for o in outcomes))
    by_key = {(o.model, o.tool): o for o in outcomes}
    header = "| model | before | " + " | ".join(f"{t} nodes | {t} s | {t} MB" for t in tools) + " |"
    rows = [header, "|" + "---|" * (2 + 3 * len(tools))]
    for model in models:
        cells = [model, str(next(o.nodes_before for o in outcomes if o.model == model))]
        for tool in tools:
            o = by_key.get((model, tool))
            if o is None or o.nodes is None:
                cells += ["failed", "-", "-"]
                continue
            mark = "" if o.outputs_match else " ✗"
            mark += " (invalid)" if o.error and o.error.startswith("invalid") else ""
            left = f" ({o.shape_ops} Shape, {o.dynamic_tensors} dyn)" if o.shape_ops or o.dynamic_tensors else ""
            cells += [f"{o.nodes}{left}{mark}", f"{o.wall_s:.2f}", f"{o.peak_mb:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def summary(outcomes: list[Outcome], tools: list[str]) -> str:
    """Per tool: total nodes and time over the models every tool handled, wins on node count."""
    models = [m for m in dict.fromkeys(o.model for o in outcomes) if all(any(o.model == m and o.tool == t and o.nodes is not None for o in outcomes) for t in tools)]
    lines = [f"over {len(models)} models every tool produced an output for:"]
    for tool in tools:
        mine = [o for o in outcomes if o.tool == tool and o.model in models]
        lines.append(
            f"  {tool:9s} nodes {sum(o.nodes for o in mine):6d}  Shape/Size left {sum(o.shape_ops for o in mine):4d}"
            f"  dynamic tensors left {sum(o.dynamic_tensors or 0 for o in mine):5d}  wall {sum(o.wall_s for o in mine):8.2f} s"
            f"  outputs wrong on {sum(not o.outputs_match for o in mine)}  invalid on {sum(bool(o.error and o.error.startswith('invalid')) for o in mine)}"
        )
    if "mapc" in tools:
        best_or_tied = sum(
            1 for m in models
            if next(o.nodes for o in outcomes if o.model == m and o.tool == "mapc") <= min(o.nodes for o in outcomes if o.model == m and o.nodes is not None)
        )
        lines.append(f"  mapc has the fewest nodes (or ties) on {best_or_tied} of {len(models)} models")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=4, metavar=("TOOL", "IN", "OUT", "SHAPES_JSON"), help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=("fixtures", "bert", "cnn"), action="append", help="model groups to run (default: all)")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--large", action="store_true", help="also build and run a BERT-large-sized model (1.3 GB, external data)")
    parser.add_argument("--models-dir", type=Path, help="where generated models are kept between runs (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write every result as JSON")
    parser.add_argument("--markdown", type=Path, help="write the results table as Markdown")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    tools = [t for t in args.tools.split(",") if t]
    groups = args.only or ["fixtures", "bert", "cnn"]
    with tempfile.TemporaryDirectory(prefix="mapc-bench-") as temporary:
        scratch = Path(temporary)
        models_dir = args.models_dir or scratch
        models_dir.mkdir(parents=True, exist_ok=True)
        cases = []
        if "fixtures" in groups:
            cases += fixture_cases()
        if "bert" in groups:
            cases += bert_cases(models_dir, args.large)
        if "cnn" in groups:
            cases += cnn_cases()
        outcomes = benchmark(cases, tools, scratch)
    print(summary(outcomes, tools))
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(outcomes, tools))
    return 0


if __name__ == "__main__":
    sys.exit(main())
