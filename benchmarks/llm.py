"""``mapc llm`` against what users do today, per model and exporter, in one run.

**today**: onnxruntime's ``make_dim_param_fixed`` twice (once per shape: prefill with N new
tokens, decode with 1, each over a past of C - T positions), then its optimizer
(``ORT_ENABLE_BASIC``: constant folding and redundant-node removal; the extended level writes
contrib ops such as ``SimplifiedLayerNormalization`` that no NPU compiler takes), each saved
with its own weights. The graphs keep the export's interface: a 2-D padding mask, the
positions computed inside from the past length, ``present`` = the whole grown cache. The host
runs them the only way that interface allows: the cache left-padded (right-aligned) and slid by
one position per step, empty slots masked.

**mapc**: ``mapc llm MODEL --context C --prefill N --target npu``.

Per model, exporter and tool: greedy tokens equal to the dynamic export's (prompts of N/2 and N
tokens, 12 new tokens), nodes and % of nodes on the npu target per graph (mapc's target model
judges both tools' graphs), partitions, weight bytes on disk, compile time, and the npu
target's estimated ms per decoded token. Deterministic; timings are this machine's.

Usage::

    python benchmarks/llm.py                     # every fixture, table on stdout
    python benchmarks/llm.py --context 32 --prefill 8 --json out.json --markdown out.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed

import mapc
from mapc.llm import LLMOptions, find_roles, generate, generate_dynamic, split, write

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "llm"
NEW_TOKENS = 12


def prompts(vocab: int, prefill: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, vocab, length).tolist() for length in (max(1, prefill // 2), prefill)]


def today(source: Path, context: int, prefill: int, folder: Path) -> dict[str, Path]:
    """The two fixed-shape graphs a user makes by hand, optimized by onnxruntime."""
    graphs = {}
    for name, new in (("prefill", prefill), ("decode", 1)):
        model = onnx.load(str(source))
        dims = {"batch_size": 1, "sequence_length": new, "past_sequence_length": context - new,
                "total_sequence_length": context, "past_sequence_length + sequence_length": context}
        for param, value in dims.items():
            make_dim_param_fixed(model.graph, param, value)
        fixed = folder / f"{name}.fixed.onnx"
        onnx.save(model, str(fixed))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folder / f"{name}.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(fixed), options, providers=["CPUExecutionProvider"])
        graphs[name] = folder / f"{name}.onnx"
    return graphs


def today_generate(graphs: dict[str, Path], source: Path, prompt: list[int], steps: int, context: int, prefill: int) -> list[int]:
    """Greedy decoding with the hand-fixed graphs: cache right-aligned, slid one slot per step."""
    roles = find_roles(mapc.load(source))
    sessions = {name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) for name, path in graphs.items()}
    pad = prefill - len(prompt)
    feeds = {roles.input_ids: np.array([[0] * pad + prompt], np.int64),
             roles.attention_mask: np.array([[0] * (context - prefill) + [0] * pad + [1] * len(prompt)], np.int64)}
    if roles.position_ids is not None:
        feeds[roles.position_ids] = np.array([[0] * pad + list(range(len(prompt)))], np.int64)
    for name in roles.past_inputs:
        feeds[name] = np.zeros((1, roles.kv_heads, context - prefill, roles.head_dim), np.float32)
    mask = feeds[roles.attention_mask][0].tolist()
    tokens: list[int] = []
    graph, filled = "prefill", len(prompt)
    while True:
        names = [roles.logits, *roles.present_outputs]
        values = dict(zip(names, sessions[graph].run(names, feeds)))
        token = int(np.argmax(values[roles.logits][0, -1]))
        tokens.append(token)
        if len(tokens) == steps or filled >= context:
            return tokens
        # the new cache: the last C-1 slots of present; the mask follows it
        mask = (mask + [1])[-context:]
        feeds = {roles.input_ids: np.array([[token]], np.int64), roles.attention_mask: np.array([mask], np.int64)}
        if roles.position_ids is not None:
            feeds[roles.position_ids] = np.array([[filled]], np.int64)
        for layer in roles.layers:
            feeds[layer.past_key] = values[layer.present_key][:, :, -(context - 1):]
            feeds[layer.past_value] = values[layer.present_value][:, :, -(context - 1):]
        graph, filled = "decode", filled + 1


def placement(path: Path) -> dict:
    """mapc's npu target judging a graph as it is (no rewrites): coverage, partitions, estimate."""
    report = mapc.compile(mapc.load(path), passes="cleanup", target="npu").report
    return {"nodes": report["coverage"]["nodes_total"], "percent": report["coverage"]["nodes_percent"],
            "partitions": len(report["partitions"]), "ms": report["estimate"]["target_ms"]}


def weight_bytes(folder: Path, files: list[str]) -> int:
    total = 0
    for name in files:
        model = onnx.load(str(folder / name), load_external_data=False)
        total += sum(t.ByteSize() for t in model.graph.initializer)
    data = folder / "weights.data"
    return total + (data.stat().st_size if data.exists() else 0)


def bench(name: str, context: int, prefill: int) -> dict:
    source = FIXTURES / f"{name}.onnx"
    vocab = find_roles(mapc.load(source)).vocab_size
    cases = prompts(vocab, prefill)
    expected = [generate_dynamic(source, p, NEW_TOKENS) for p in cases]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        row = {"model": name}
        start = time.perf_counter()
        (folder / "today").mkdir()
        graphs = today(source, context, prefill, folder / "today")
        seconds = time.perf_counter() - start
        got = [today_generate(graphs, source, p, NEW_TOKENS, context, prefill) for p in cases]
        row["today"] = {
            "tokens_equal": sum(int(a == b) for g, e in zip(got, expected) for a, b in zip(g, e)),
            "tokens": sum(len(e) for e in expected),
            "graphs": {g: placement(path) for g, path in graphs.items()},
            "weight_bytes": weight_bytes(folder / "today", ["prefill.onnx", "decode.onnx"]),
            "seconds": round(seconds, 2),
        }
        start = time.perf_counter()
        llm = split(source, LLMOptions(context=context, prefill=prefill, target="npu"))
        write(llm, folder / "mapc", measure=False)
        seconds = time.perf_counter() - start
        got = [generate(folder / "mapc", p, NEW_TOKENS) for p in cases]
        files = ["prefill.onnx", "decode.onnx"] + (["embed.onnx"] if llm.embedding is not None else [])
        row["mapc"] = {
            "tokens_equal": sum(int(a == b) for g, e in zip(got, expected) for a, b in zip(g, e)),
            "tokens": sum(len(e) for e in expected),
            "graphs": {g: {"nodes": r.report["coverage"]["nodes_total"], "percent": r.report["coverage"]["nodes_percent"],
                           "partitions": len(r.report["partitions"]), "ms": r.report["estimate"]["target_ms"]}
                       for g, r in llm.graphs.items()},
            "weight_bytes": weight_bytes(folder / "mapc", files),
            "seconds": round(seconds, 2),
        }
    return row


def markdown(rows: list[dict], context: int, prefill: int) -> str:
    lines = [f"context {context}, prefill {prefill}, target npu; tokens: greedy, {NEW_TOKENS} new tokens after prompts of "
             f"{max(1, prefill // 2)} and {prefill} tokens, equal to the dynamic export's", "",
             "| model | tool | tokens equal | prefill nodes (% npu, partitions) | decode nodes (% npu, partitions) | "
             "weight bytes | compile s | est. ms/token |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for tool in ("today", "mapc"):
            r = row[tool]
            cell = lambda g: f"{r['graphs'][g]['nodes']} ({r['graphs'][g]['percent']:.1f}%, {r['graphs'][g]['partitions']})"  # noqa: E731
            lines.append(f"| {row['model']} | {tool} | {r['tokens_equal']}/{r['tokens']} | {cell('prefill')} | {cell('decode')} | "
                         f"{r['weight_bytes']:,} | {r['seconds']} | {r['graphs']['decode']['ms']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated fixture names (default: all)")
    parser.add_argument("--context", type=int, default=32)
    parser.add_argument("--prefill", type=int, default=8)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    names = args.models.split(",") if args.models else sorted(p.stem for p in FIXTURES.glob("*.onnx"))
    rows = []
    for name in names:
        rows.append(bench(name, args.context, args.prefill))
        print(f"{name}: today {rows[-1]['today']['tokens_equal']}/{rows[-1]['today']['tokens']}, "
              f"mapc {rows[-1]['mapc']['tokens_equal']}/{rows[-1]['mapc']['tokens']}", file=sys.stderr)
    text = markdown(rows, args.context, args.prefill)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
