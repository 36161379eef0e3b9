#!/usr/bin/env python3
"""mapc on other projects' test models: does it accept, compile and preserve them, and how do
its node counts and fusions compare with onnxsim, onnxslim and onnxruntime's optimizer?

Models: the test data shipped in the installed onnx wheel
(``onnx/backend/test/data/{light,pytorch-converted,pytorch-operator,simple}``), the sample
models of the onnxruntime wheel (``onnxruntime/datasets``; ``--no-wheels`` leaves both out), and
every ``*.onnx`` under the ``--models`` folders; each folder is one suite in the tables. onnx's ~1,900 node tests are generated
in-process, and onnxruntime's fusion tests are scripts that write their models, so write both
to folders first (the second needs a clone of microsoft/onnxruntime; the generators run in this
interpreter, onnx and numpy are all they need)::

    python benchmarks/wild.py --write-node-tests /tmp/wild/node
    python benchmarks/wild.py --write-ort-fusion-tests ~/onnxruntime /tmp/wild/ort-fusion-tests

Nothing is copied into the repository. For each model, in worker processes (a crash, a hang
or an abort of one tool on one model is a result, not the end of the run):

* **mapc**: ``mapc.load`` (accepted or refused at load), then ``mapc compile`` through the CLI
  entry point with the dynamic input shapes fixed (``--input-shape``, from the test case's
  ``test_data_set_0`` inputs, else symbolic dims at 2), once with the default pipeline and once
  with ``--target npu``. Exit 0 = compiled; 1-3 with one ``mapc: error:`` line = refused
  cleanly; exit 70, a traceback, a dead worker or more than ``--timeout`` seconds = crashed.
  A compiled model is *correct* when, on the test case's own inputs and on mapc's realistic
  verification samples (seed 16) of the fixed shapes, every sample the input model runs on in
  onnxruntime gives the same outputs (mapc's tolerances, ``mapc.ir.compare_outputs``); models
  the input itself does not run on are *unjudged*.
* **onnxsim** (``simplify(model, overwrite_input_shapes=...)``) and **onnxslim**
  (``slim(model, input_shapes=...)``), in a separate interpreter (``--peers-python``, a venv
  with ``pip install onnxsim onnxslim sympy``), given the same shapes: node count of the result
  (subgraphs included), or the failure; their outputs are checked like mapc's. The peers'
  process is restarted every 100 jobs (onnxslim's recursion depth grows call after call).
* **fusions**, on transformer-like models (at least five nodes, one of them Softmax, ReduceMean,
  Erf, Tanh or LayerNormalization): LayerNorm, SkipLayerNorm, RMSNorm, Attention and Gelu counts
  in mapc's default compile and with ``--target-opset 23`` (below opset 11 mapc writes no fused
  op) against ``onnxruntime.transformers.optimizer.optimize_model(model_type="bert",
  opt_level=0)``, run in the peers' interpreter (it needs sympy there).

    python benchmarks/wild.py --models /tmp/wild/node --models /tmp/wild/ort-fusion-tests \\
        --peers-python /tmp/peers/bin/python --json /tmp/wild/wild.json --markdown /tmp/wild/wild.md
    python benchmarks/wild.py --worker mapc|peers        # (internal: one job per stdin line)
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ONNX_SUITES = ("light", "pytorch-converted", "pytorch-operator", "simple")
CONFIGS = {"default": [], "npu": ["--target", "npu"]}
#: Also compiled on transformer-like models: below opset 11 mapc cannot write its fused ops at
#: all, and below 17-23 only as mapc functions; onnxruntime's optimizer writes contrib ops at any opset.
FUSION_CONFIGS = {"opset23": ["--target-opset", "23"]}
#: Fusion categories: ops of mapc's and onnxruntime's fused forms (standard, contrib, mapc functions).
FUSIONS = {
    "LayerNorm": {"LayerNormalization"},
    "SkipLayerNorm": {"SkipLayerNormalization"},
    "RMSNorm": {"RMSNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"},
    "Attention": {"Attention", "MultiHeadAttention", "GroupQueryAttention"},
    "Gelu": {"Gelu", "FastGelu", "BiasGelu", "BiasFastGelu"},
}
TRANSFORMER_OPS = {"Softmax", "ReduceMean", "Erf", "Tanh", "LayerNormalization"}
SYMBOLIC_DIM = 2
SAMPLE_SEED = 16


# -- models and their input shapes ---------------------------------------------------------------


def default_folders() -> list[Path]:
    import onnx
    import onnxruntime

    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    return [data / suite for suite in ONNX_SUITES] + [Path(onnxruntime.__file__).parent / "datasets"]


def discover(folders: list[Path], only: list[str] | None) -> list[dict]:
    models = []
    for folder in folders:
        for path in sorted(folder.rglob("*.onnx")):
            name = f"{folder.name}/{path.relative_to(folder).with_suffix('')}"
            if not only or any(part in name for part in only):
                models.append({"suite": folder.name, "name": name, "path": str(path)})
    return models


def test_inputs(path: Path) -> list[Path]:
    """The input tensors of the test case a model belongs to (its first data set)."""
    folder = path.parent / "test_data_set_0"
    return sorted(folder.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1])) if folder.is_dir() else []


def input_shapes(path: Path) -> dict[str, list[int]]:
    """The shape of every graph input: the test case's data, else the model's dims (symbolic at 2)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    shapes: dict[str, list[int]] = {}
    data = test_inputs(path)
    for index, info in enumerate(inputs):
        if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
            continue
        if index < len(data):
            tensor = onnx.TensorProto()
            try:
                tensor.ParseFromString(data[index].read_bytes())
            except Exception:  # a sequence/optional/map input: its shape is not a tensor's
                continue
            if tensor.data_type:
                shapes[info.name] = list(tensor.dims)
                continue
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else SYMBOLIC_DIM for d in info.type.tensor_type.shape.dim]
    return shapes


def dynamic_inputs(path: Path) -> set[str]:
    """The graph inputs with a dim that is not a number: the ones whose shape the tools must fix."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {
        i.name for i in model.graph.input
        if i.type.HasField("tensor_type") and any(not d.HasField("dim_value") for d in i.type.tensor_type.shape.dim)
    }


# -- workers: one job per stdin line, one JSON result per line on the original stdout -------------


def serve(handle) -> int:
    """Answer jobs from stdin with ``handle(job)``; anything libraries print goes to stderr."""
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        try:
            answer = handle(json.loads(line))
        except Exception as error:  # a bug of this script, not of the tool it measures
            answer = {"harness_error": f"{type(error).__name__}: {str(error)[:200]}"}
        results.write(json.dumps(answer) + "\n")
        results.flush()
    return 0


def count_nodes(graph) -> int:
    total = 0
    for node in graph.node:
        total += 1
        for attribute in node.attribute:
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                total += count_nodes(subgraph)
    return total


def peer_job(job: dict) -> dict:
    """onnxsim or onnxslim on one model (runs in the peers' interpreter)."""
    import onnx

    try:
        if job["tool"] == "onnxsim":
            import onnxsim

            simplified, _ = onnxsim.simplify(onnx.load(job["model"]), overwrite_input_shapes=job["shapes"] or None)
            onnx.save(simplified, job["out"])
        elif job["tool"] == "ort-transformers":
            import logging

            from onnxruntime.transformers import optimizer

            logging.disable(logging.WARNING)
            optimized = optimizer.optimize_model(job["model"], model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
            onnx.save(optimized.model, job["out"])
            return {"ok": True, "nodes": count_nodes(optimized.model.graph), "fusions": fusions(optimized.model)}
        else:
            import onnxslim

            shapes = [f"{k}:{','.join(map(str, v))}" for k, v in job["shapes"].items()] or None
            onnxslim.slim(job["model"], output_model=job["out"], input_shapes=shapes)
        return {"ok": True, "nodes": count_nodes(onnx.load(job["out"], load_external_data=False).graph)}
    except BaseException as error:  # a peer failing on a model is a result
        return {"ok": False, "error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:160] if str(error).strip() else ''}"}


def mapc_job(job: dict) -> dict:
    """mapc on one model: load, both compiles, correctness, nodes, fusions; the peers' outputs
    checked the same way (runs in mapc's interpreter)."""
    import onnx

    from mapc.ir import load

    source, out = Path(job["model"]), Path(job["out"])
    original = onnx.load(str(source), load_external_data=False)
    result: dict = {"nodes_before": count_nodes(original.graph), "configs": {}, "peers": {}}
    try:
        load(source)
        result["accepted"] = True
    except Exception as error:
        result["accepted"], result["load_error"] = False, str(error).splitlines()[0][:200]
    samples = reference_samples(source, original, job["shapes"])
    result["reference_runs"] = bool(samples)
    flags = [f for name, shape in job["shapes"].items() if name in job["dynamic"] and shape for f in ("--input-shape", f"{name}:{','.join(map(str, shape))}")]
    configs = {**CONFIGS, **(FUSION_CONFIGS if transformer_like(original) else {})}
    for config, extra in configs.items():
        target = out / f"{config}.onnx"
        outcome = compile_once(source, target, [*flags, *extra])
        if outcome["code"] == 0:
            compiled = onnx.load(str(target), load_external_data=False)
            outcome["nodes"] = count_nodes(compiled.graph)
            outcome["fusions"] = fusions(compiled)
            outcome["correct"], outcome["problem"] = judge(compiled, target.parent, samples)
        result["configs"][config] = outcome
    for tool, produced in job["peers"].items():
        result["peers"][tool] = dict(zip(("correct", "problem"), judge(onnx.load(produced), Path(produced).parent, samples)))
    return result


def compile_once(source: Path, target: Path, flags: list[str]) -> dict:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from mapc.cli import main

    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(["compile", str(source), "-o", str(target), "-q", *flags])
    lines = [line for line in err.getvalue().strip().splitlines() if line.strip()]
    clean = code in (1, 2, 3) and len(lines) == 1 and lines[0].startswith("mapc: error: ")
    outcome = {"code": code, "status": "compiled" if code == 0 else "refused" if clean else "crashed"}
    if code != 0:
        outcome["error"] = (lines[-1] if lines else f"exit {code}")[:300]
    if "Traceback" in err.getvalue():
        outcome["status"], outcome["error"] = "crashed", "traceback: " + outcome.get("error", lines[-1] if lines else "")
    return outcome


def reference_samples(source: Path, original, shapes: dict) -> list[tuple[str, dict, dict]]:
    """(label, feeds, outputs of the input model) for the test case's inputs and mapc's
    verification samples, keeping those the input model runs on in onnxruntime."""
    import onnx
    from onnx import numpy_helper

    from mapc.ir import load, run, verification_samples

    candidates = []
    weights = {t.name for t in original.graph.initializer}
    names = [i.name for i in original.graph.input if i.name not in weights]
    data = test_inputs(source)
    if data:
        feeds = {}
        for name, path in zip(names, data):
            tensor = onnx.TensorProto()
            tensor.ParseFromString(path.read_bytes())
            feeds[name] = numpy_helper.to_array(tensor)
        candidates.append(("test-case inputs", feeds))
    try:
        model = load(source)
        candidates += [(s.label, s.feeds) for s in verification_samples(model, seed=SAMPLE_SEED, shapes=shapes)]
    except Exception:  # mapc refuses the model, or a non-tensor input: the test case's data only
        pass
    kept = []
    for label, feeds in candidates:
        try:
            kept.append((label, feeds, run(original, feeds, base_dir=source.parent)))
        except Exception:
            continue
    return kept


def judge(model, folder: Path, samples: list) -> tuple[bool | None, str | None]:
    from mapc.ir import compare_outputs, run

    if not samples:
        return None, "the input model runs on no sample"
    for label, feeds, expected in samples:
        try:
            actual = run(model, feeds, base_dir=folder)
        except Exception as error:
            return False, f"{label}: does not run: {str(error)[:200]}"
        bad = [f"{c.name}: {c.problem}" for c in compare_outputs(*_flatten(expected, actual)) if not c.ok]
        if bad:
            return False, f"{label}: {'; '.join(bad)[:300]}"
    return True, None


def _flatten(expected: dict, actual: dict) -> tuple[dict, dict]:
    """Sequence outputs (lists of arrays) as one entry per element, so they compare like tensors."""
    flat_expected, flat_actual = {}, {}
    for name, value in expected.items():
        other = actual.get(name)
        if isinstance(value, list):
            if not isinstance(other, list) or len(other) != len(value):
                flat_expected[name], flat_actual[name] = value, None
                continue
            for index, (a, b) in enumerate(zip(value, other)):
                flat_expected[f"{name}[{index}]"], flat_actual[f"{name}[{index}]"] = a, b
        elif value is None or other is None:
            flat_expected[name] = np.asarray(value is None)
            flat_actual[name] = np.asarray(other is None)
        else:
            flat_expected[name], flat_actual[name] = value, other
    flat_actual = {k: v for k, v in flat_actual.items() if v is not None}
    return flat_expected, flat_actual


def transformer_like_file(path: Path) -> bool:
    import onnx

    return transformer_like(onnx.load(str(path), load_external_data=False))


def transformer_like(model) -> bool:
    ops = {node.op_type for node in model.graph.node}
    return len(model.graph.node) >= 5 and bool(ops & TRANSFORMER_OPS)


def fusions(model) -> dict[str, int]:
    ops = Counter(node.op_type for node in model.graph.node)
    return {category: sum(ops[op] for op in names) for category, names in FUSIONS.items()}


# -- the orchestrator --------------------------------------------------------------------------


class Worker:
    """A persistent worker process; restarted after it dies or overruns a job's time limit."""

    def __init__(self, command: list[str], timeout: float, log: Path, jobs_per_process: int = 100) -> None:
        self.command, self.timeout, self.log = command, timeout, log
        self.jobs_per_process, self.jobs = jobs_per_process, 0
        self.process: subprocess.Popen | None = None

    def ask(self, job: dict) -> dict:
        self.jobs += 1
        if self.jobs % self.jobs_per_process == 0:
            self.close()  # a fresh interpreter now and then: onnxslim's recursion depth grows call after call
        if self.process is None or self.process.poll() is not None:
            with open(self.log, "a") as log:
                self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
        assert self.process.stdin and self.process.stdout
        try:
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return self._died()
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        if not ready:
            self.close()
            return {"hang": True, "error": f"no answer within {self.timeout:g}s"}
        line = self.process.stdout.readline()
        return json.loads(line) if line else self._died()

    def _died(self) -> dict:
        code = self.process.wait() if self.process else None
        self.process = None
        return {"died": True, "error": f"worker died (exit {code})"}

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def sweep(models: list[dict], scratch: Path, peers_python: str | None, timeout: float) -> list[dict]:
    mapc_worker = Worker([sys.executable, __file__, "--worker", "mapc"], timeout, scratch / "mapc-worker.log")
    peer_worker = Worker([peers_python, __file__, "--worker", "peers"], timeout, scratch / "peers-worker.log") if peers_python else None
    rows = []
    for index, entry in enumerate(models):
        started = time.perf_counter()
        out = scratch / f"m{index}"
        out.mkdir(parents=True, exist_ok=True)
        row = dict(entry)
        try:
            row["shapes"] = input_shapes(Path(entry["path"]))
        except Exception as error:  # not even onnx can read it: mapc still gets its say
            row["shapes"], row["shape_error"] = {}, str(error)[:160]
        try:
            dynamic = dynamic_inputs(Path(entry["path"]))
            row["transformer_like"] = transformer_like_file(Path(entry["path"]))
        except Exception:
            dynamic, row["transformer_like"] = set(), False
        fixed = {k: v for k, v in row["shapes"].items() if k in dynamic and v}
        row["peers"] = {}
        produced = {}
        tools = ("onnxsim", "onnxslim", "ort-transformers") if row["transformer_like"] else ("onnxsim", "onnxslim")
        for tool in tools if peer_worker else ():
            target = out / f"{tool}.onnx"
            answer = peer_worker.ask({"tool": tool, "model": entry["path"], "out": str(target), "shapes": fixed})
            row["peers"][tool] = answer
            if answer.get("ok"):
                produced[tool] = str(target)
        answer = mapc_worker.ask({"model": entry["path"], "out": str(out), "shapes": row["shapes"], "dynamic": sorted(dynamic), "peers": produced})
        if answer.get("hang") or answer.get("died") or answer.get("harness_error"):
            row["mapc_worker"] = answer
        else:
            for tool, check in answer.pop("peers").items():
                row["peers"][tool].update(check)
            row.update(answer)
        shutil.rmtree(out, ignore_errors=True)
        row["seconds"] = round(time.perf_counter() - started, 2)
        rows.append(row)
        print(f"[{index + 1}/{len(models)}] {entry['name']}: {status_line(row)}", file=sys.stderr, flush=True)
    mapc_worker.close()
    if peer_worker:
        peer_worker.close()
    return rows


def status(row: dict, config: str) -> str:
    """accepted/compiled/... status of one mapc config: refused-at-load, compiled-correct,
    compiled-wrong, compiled-unjudged, refused, crashed."""
    if "mapc_worker" in row:
        return "harness-error" if row["mapc_worker"].get("harness_error") else "crashed"
    outcome = row["configs"][config]
    if outcome["status"] != "compiled":
        return outcome["status"]
    return {True: "correct", False: "wrong", None: "unjudged"}[outcome.get("correct")]


def status_line(row: dict) -> str:
    if "mapc_worker" in row:
        worker = row["mapc_worker"]
        return f"benchmark error: {worker['harness_error']}" if worker.get("harness_error") else f"mapc crashed: {worker['error']}"
    return ", ".join(f"{c}={status(row, c)}" for c in CONFIGS) + ("" if row.get("accepted") else " (refused at load)")


# -- reports ---------------------------------------------------------------------------------------

STATUSES = ("correct", "wrong", "unjudged", "refused", "crashed", "harness-error")


def markdown(rows: list[dict], header: str) -> str:
    suites = sorted({r["suite"] for r in rows})
    lines = [header, "", "## mapc: accepted, compiled, compiled correctly", ""]
    lines += ["| suite | config | models | accepted | compiled | correct | wrong | unjudged | refused (clean) | crashed | benchmark error |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for suite in [*suites, "all"]:
        chosen = [r for r in rows if suite in ("all", r["suite"])]
        for config in CONFIGS:
            counts = Counter(status(r, config) for r in chosen)
            compiled = counts["correct"] + counts["wrong"] + counts["unjudged"]
            accepted = sum(1 for r in chosen if r.get("accepted"))
            lines.append(f"| {suite} | {config} | {len(chosen)} | {accepted} | {compiled} | " + " | ".join(str(counts[s]) for s in STATUSES) + " |")
    lines += ["", "## Nodes after mapc (default config), onnxsim and onnxslim", ""]
    lines += ["Totals over the models all three compiled; a failed peer counts as failed, not as a node count.", ""]
    lines += ["| suite | models | both peers and mapc ok | nodes before | mapc | onnxsim | onnxslim | mapc fewer / equal / more than the best peer | onnxsim failed | onnxslim failed | onnxsim wrong | onnxslim wrong |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for suite in [*suites, "all"]:
        chosen = [r for r in rows if suite in ("all", r["suite"])]
        common = [r for r in chosen if r.get("configs", {}).get("default", {}).get("nodes") is not None and all(r["peers"].get(t, {}).get("ok") for t in ("onnxsim", "onnxslim"))]
        before = sum(r["nodes_before"] for r in common)
        ours = sum(r["configs"]["default"]["nodes"] for r in common)
        sim = sum(r["peers"]["onnxsim"]["nodes"] for r in common)
        slim = sum(r["peers"]["onnxslim"]["nodes"] for r in common)
        best = [min(r["peers"]["onnxsim"]["nodes"], r["peers"]["onnxslim"]["nodes"]) for r in common]
        cmp = Counter((r["configs"]["default"]["nodes"] > b) - (r["configs"]["default"]["nodes"] < b) for r, b in zip(common, best))
        failed = {t: sum(1 for r in chosen if not r["peers"].get(t, {}).get("ok")) for t in ("onnxsim", "onnxslim")}
        wrong = {t: sum(1 for r in chosen if r["peers"].get(t, {}).get("correct") is False) for t in ("onnxsim", "onnxslim")}
        lines.append(f"| {suite} | {len(chosen)} | {len(common)} | {before} | {ours} | {sim} | {slim} | {cmp[-1]} / {cmp[0]} / {cmp[1]} | {failed['onnxsim']} | {failed['onnxslim']} | {wrong['onnxsim']} | {wrong['onnxslim']} |")
    lines += ["", "## Fusions on transformer-like models: mapc vs onnxruntime's transformers optimizer", ""]
    lines += ["Per category: mapc's default compile / mapc with `--target-opset 23` / onnxruntime's optimizer; ✗ = that tool failed or was wrong (see the last column); models where nobody fused anything are left out.", ""]
    lines += ["| model | nodes before | " + " | ".join(FUSIONS) + " | mapc-23 output | ort output |", "|---|---|" + "---|" * len(FUSIONS) + "---|---|"]
    totals = {c: [0, 0, 0] for c in FUSIONS}
    listed = 0
    for r in rows:
        if not r.get("transformer_like") or "configs" not in r:
            continue
        counts = [r["configs"].get(c, {}).get("fusions") for c in ("default", "opset23")]
        ort = r["peers"].get("ort-transformers", {})
        counts.append(ort.get("fusions") if ort.get("ok") else None)
        if not any(found and any(found.values()) for found in counts):
            continue
        listed += 1
        cells = []
        for category in FUSIONS:
            values = [found[category] if found else None for found in counts]
            for index, value in enumerate(values):
                totals[category][index] += value or 0
            cells.append(" / ".join("✗" if v is None else str(v) for v in values))
        upgraded = r["configs"].get("opset23", {})
        ours = _verdict(upgraded.get("correct"), upgraded.get("error"))
        theirs = _verdict(ort.get("correct"), None if ort.get("ok") else ort.get("error"))
        lines.append(f"| {r['name']} | {r['nodes_before']} | " + " | ".join(cells) + f" | {ours} | {theirs} |")
    lines.append(f"| **total ({listed} models)** | | " + " | ".join("**" + " / ".join(map(str, t)) + "**" for t in totals.values()) + " | | |")
    harness = [r for r in rows if status(r, "default") == "harness-error"]
    if harness:
        lines += ["", f"## Models this script failed on ({len(harness)}; not counted for or against mapc)", ""]
        lines += [f"- `{r['name']}`: {r['mapc_worker']['harness_error']}" for r in harness]
    problems = [r for r in rows if any(status(r, c) in ("wrong", "crashed") for c in CONFIGS)]
    lines += ["", f"## mapc crashes and wrong outputs ({len(problems)})", ""]
    for r in problems:
        if "mapc_worker" in r:
            lines.append(f"- `{r['name']}`: {r['mapc_worker'].get('error')}")
            continue
        for config in CONFIGS:
            outcome = r["configs"][config]
            if status(r, config) in ("wrong", "crashed"):
                lines.append(f"- `{r['name']}` ({config}): {outcome.get('error') or outcome.get('problem')}")
    refusals = Counter(_reason(r["configs"]["default"].get("error", "")) for r in rows if "configs" in r and r["configs"]["default"]["status"] == "refused")
    lines += ["", "## Why mapc refused (default config), by message", ""]
    lines += [f"- {n} × {reason}" for reason, n in refusals.most_common()]
    return "\n".join(lines) + "\n"


def _verdict(correct: bool | None, error: str | None) -> str:
    if error:
        return error[:120]
    return {True: "correct", False: "wrong", None: "unjudged"}[correct]


def _reason(error: str) -> str:
    """An error line with its model-specific names cut off, to group refusals."""
    text = error.removeprefix("mapc: error: ")
    for marker in (" '", ' "', " `", ": "):
        if marker in text:
            text = text.split(marker)[0]
    return text[:120]


def write_node_tests(folder: Path) -> int:
    """Write onnx's node test cases (model and first data set) under ``folder``."""
    import warnings

    import numpy as np
    from onnx import numpy_helper
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    for case in cases:
        target = folder / case.name
        (target / "test_data_set_0").mkdir(parents=True, exist_ok=True)
        (target / "model.onnx").write_bytes(case.model.SerializeToString())
        inputs = case.data_sets[0][0] if case.data_sets else []
        for index, (info, value) in enumerate(zip(case.model.graph.input, inputs)):
            if info.type.HasField("tensor_type") and isinstance(value, np.ndarray):
                (target / "test_data_set_0" / f"input_{index}.pb").write_bytes(numpy_helper.from_array(value, info.name).SerializeToString())
    print(f"{len(cases)} node test cases written to {folder}")
    return 0


#: onnxruntime's generators of its fusion tests (onnxruntime/test/testdata/transform/fusion/),
#: with the toggles at the top of each script: every combination is generated.
ORT_GENERATORS = {
    "gelu_gen.py": ("has_bias", "gelu_use_graph_input", "node_has_graph_output", "switch_order"),
    "fast_gelu.py": ("has_bias", "gelu_use_graph_input"),
    "layer_norm_t5_gen.py": (),
    "skip_layer_norm_gen.py": (),
}


def write_ort_fusion_tests(checkout: Path, folder: Path) -> int:
    """Run onnxruntime's fusion-test generators from ``checkout`` (a clone of
    microsoft/onnxruntime) in ``folder``. ``skip_layer_norm_gen.py`` calls ``make_model`` without
    opsets, so it runs with opset 12 as the default (the opset of the .onnx files onnxruntime
    commits; its ReduceMean axes attribute is invalid from opset 18)."""
    import itertools
    import re

    folder.mkdir(parents=True, exist_ok=True)
    prelude = "import onnx.helper as h\n_make = h.make_model\nh.make_model = lambda g, **k: _make(g, **({'opset_imports': [h.make_opsetid('', 12)]} | k))\n"
    for script, toggles in ORT_GENERATORS.items():
        source = (checkout / "onnxruntime" / "test" / "testdata" / "transform" / "fusion" / script).read_text()
        for values in itertools.product((True, False), repeat=len(toggles)):
            text = source
            for name, value in zip(toggles, values):
                text = re.sub(rf"^{name} = .*$", f"{name} = {value}", text, flags=re.MULTILINE)
            subprocess.run([sys.executable, "-c", prelude + text], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    print(f"{len(list(folder.glob('*.onnx')))} models written to {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=("mapc", "peers"), help=argparse.SUPPRESS)
    parser.add_argument("--write-node-tests", type=Path, metavar="DIR", help="write onnx's node test cases to DIR and stop")
    parser.add_argument("--write-ort-fusion-tests", nargs=2, type=Path, metavar=("ORT_CHECKOUT", "DIR"), help="run onnxruntime's fusion-test generators into DIR and stop")
    parser.add_argument("--models", type=Path, action="append", default=[], help="a folder of models (repeatable), besides the wheels' test models")
    parser.add_argument("--no-wheels", action="store_true", help="leave out the onnx and onnxruntime wheels' test models")
    parser.add_argument("--only", action="append", help="only models whose name contains this (repeatable)")
    parser.add_argument("--peers-python", help="interpreter with onnxsim and onnxslim installed")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per tool and model before it counts as a hang")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/mapc-wild"), help="where compiled models go")
    parser.add_argument("--json", type=Path, help="write every result as JSON")
    parser.add_argument("--markdown", type=Path, help="write the summary as Markdown")
    args = parser.parse_args(argv)
    if args.worker:
        return serve(mapc_job if args.worker == "mapc" else peer_job)
    if args.write_node_tests:
        return write_node_tests(args.write_node_tests)
    if args.write_ort_fusion_tests:
        return write_ort_fusion_tests(*args.write_ort_fusion_tests)
    models = discover(([] if args.no_wheels else default_folders()) + args.models, args.only)
    args.scratch.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows = sweep(models, args.scratch, args.peers_python, args.timeout)
    header = f"# mapc on other projects' test models\n\n{len(rows)} models, {time.strftime('%Y-%m-%d', time.gmtime(started))}, {time.time() - started:.0f} s."
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    text = markdown(rows, header)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
