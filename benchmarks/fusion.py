#!/usr/bin/env python3
"""Fusion coverage: mapc ``fuse`` against onnxruntime's transformers optimizer and onnxscript.

Runs every tool on every fixture of ``tests/fixtures/transformers`` (BERT, DistilBERT, GPT-2,
ViT, Whisper-encoder, Llama-GQA; TorchScript and dynamo exports; eager and SDPA attention), in
one run: each model as exported and, for TorchScript exports (which compute shapes at run
time), also with its input shapes fixed to the reference inputs and its shape arithmetic folded
(the same prepared model for every tool). For each result it counts the fused attention,
layer-norm, RMS-norm, GELU and rotary ops (contrib and standard alike; Skip*/Embed* LayerNorm
count as layer norms) against the manifest's expected counts, and checks the outputs against
PyTorch's.

Peers (installed by hand, not mapc dependencies)::

    pip install onnxscript            # onnxruntime.transformers ships with onnxruntime

Tools:
  ort        onnxruntime.transformers.optimizer.optimize_model(model_type by architecture, opt_level 0)
  osc-ort    onnxscript.rewriter.ort_fusions.optimize_for_ort (contrib ops)
  osc-onnx   onnxscript optimizer + rewriter.onnx_fusions.fuse (standard ops; opset-23 models only)
  mapc       mapc fuse (below opset 23: mapc functions)
  mapc-23    mapc upgrade-opset{opset=23},fuse (standard ops)

Usage: ``python benchmarks/fusion.py [--json out.json] [--only NAME...]`` from the repository root.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
import warnings
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mapc.ir import load  # noqa: E402
from mapc.passes import PassContext  # noqa: E402
from mapc.passes.pipeline import PassManager  # noqa: E402
from tests.passes.fusion.test_fixtures import FIXTURES, MANIFEST, OK, expected_counts, fix_and_fold, reference  # noqa: E402

CATEGORIES = {
    "attention": {"Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention", "PackedMultiHeadAttention"},
    "layernorm": {"LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization"},
    "rmsnorm": {"RMSNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"},
    "gelu": {"Gelu", "FastGelu", "BiasGelu", "BiasFastGelu"},
    "rotary": {"RotaryEmbedding"},
}
EXPECTED_KEYS = {"attention": "Attention", "layernorm": "LayerNormalization", "rmsnorm": "RMSNormalization", "gelu": "Gelu", "rotary": "RotaryEmbedding"}
ORT_MODEL_TYPE = {"bert": "bert", "distilbert": "bert", "gpt2": "gpt2", "vit": "vit", "whisper": "bart", "llama": "gpt2"}


def count(model: onnx.ModelProto) -> dict[str, int]:
    ops = Counter(node.op_type for node in model.graph.node)
    return {category: sum(ops[op] for op in names) for category, names in CATEGORIES.items()}


def outputs_ok(model: onnx.ModelProto, feeds: dict, expected: dict) -> bool | str:
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, {i.name: feeds[i.name] for i in session.get_inputs()})))
    except Exception as error:  # a peer's output may not load or run
        return f"error: {str(error).splitlines()[0][:80]}"
    tolerance = MANIFEST["tolerance"]
    return all(np.allclose(values[name], value, rtol=tolerance, atol=tolerance) for name, value in expected.items() if name in values)


def run_ort(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    from onnxruntime.transformers import optimizer

    entry = MANIFEST["fixtures"][name]
    config = entry.get("config", {})
    heads = config.get("num_attention_heads", config.get("n_head", config.get("encoder_attention_heads", 0)))
    hidden = config.get("hidden_size", config.get("n_embd", config.get("d_model", 0)))
    optimized = optimizer.optimize_model(proto, model_type=ORT_MODEL_TYPE[entry["architecture"]], num_heads=heads or 0, hidden_size=hidden or 0, opt_level=0)
    return optimized.model


def run_onnxscript_ort(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, _ = optimize_for_ort(ir.from_proto(proto))
    return ir.to_proto(model)


def run_onnxscript_onnx(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    import onnx_ir as ir
    import onnxscript.optimizer
    from onnxscript.rewriter import onnx_fusions

    model = ir.from_proto(proto)
    onnxscript.optimizer.optimize(model)
    onnx_fusions.fuse(model)
    return ir.to_proto(model)


def run_mapc(pipeline: str):
    def run(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
        model = load(proto)
        PassManager(pipeline).run(model, PassContext())
        return model.to_proto()

    return run


TOOLS = {
    "ort": run_ort,
    "osc-ort": run_onnxscript_ort,
    "osc-onnx": run_onnxscript_onnx,
    "mapc": run_mapc("fuse"),
    "mapc-23": run_mapc("upgrade-opset{opset=23},fuse"),
}


def quietly(function, *args):
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return function(*args)


def measure(name: str, prepared: bool) -> dict:
    feeds, expected_outputs = reference(name)
    proto = fix_and_fold(name, feeds).to_proto() if prepared else onnx.load(FIXTURES / f"{name}.onnx")
    wanted = expected_counts(name)
    expected = {category: wanted[EXPECTED_KEYS[category]] for category in CATEGORIES}
    row = {"fixture": name, "prepared": prepared, "expected": expected, "tools": {}}
    for tool, function in TOOLS.items():
        private = onnx.ModelProto()
        private.CopyFrom(proto)  # onnxruntime's optimizer edits the ModelProto it is given
        started = time.perf_counter()
        try:
            result = quietly(function, private, name)
        except Exception as error:  # peers crash on some exports; that is a result too
            row["tools"][tool] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:100] if str(error) else ''}"}
            continue
        counts = count(result)
        complete = all(counts[c] >= expected[c] for c in CATEGORIES)
        row["tools"][tool] = {
            "counts": counts,
            "complete": complete,
            "outputs_ok": quietly(outputs_ok, result, feeds, expected_outputs),
            "seconds": round(time.perf_counter() - started, 3),
        }
    return row


def cell(result: dict, expected: dict) -> str:
    if "error" in result:
        return "crash"
    counts = result["counts"]
    parts = [f"{counts[c]}/{expected[c]}" for c in CATEGORIES if expected[c] or counts[c]]
    mark = "" if result["outputs_ok"] is True else " (outputs!)"
    return ("FULL " if result["complete"] else "") + " ".join(parts) + mark


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write all results as JSON")
    parser.add_argument("--only", nargs="*", help="fixture names")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    ort.set_default_logger_severity(3)
    names = args.only or OK
    rows = []
    for name in names:
        rows.append(measure(name, prepared=False))
        if MANIFEST["fixtures"][name]["exporter"] == "torchscript":
            rows.append(measure(name, prepared=True))
    print(f"cells: fused/expected for each category the model has ({'/'.join(CATEGORIES)}); FULL = every layer fused;")
    print("(outputs!) = outputs differ from PyTorch's; + = shapes fixed and folded first\n")
    print("| fixture | " + " | ".join(TOOLS) + " |")
    print("|---|" + "---|" * len(TOOLS))
    for row in rows:
        label = row["fixture"] + (" +" if row["prepared"] else "")
        print(f"| {label} | " + " | ".join(cell(row["tools"][t], row["expected"]) for t in TOOLS) + " |")
    for title, subset in (("as exported", [r for r in rows if not r["prepared"]]), ("best of both", _best(rows))):
        totals = {t: sum(1 for r in subset if r["tools"][t].get("complete") and r["tools"][t].get("outputs_ok") is True) for t in TOOLS}
        print(f"| **fully fused, outputs ok ({title})** | " + " | ".join(f"**{totals[t]}/{len(subset)}**" for t in TOOLS) + " |")
    seconds = {t: sum(r["tools"][t].get("seconds", 0.0) for r in rows) for t in TOOLS}
    print("| total seconds | " + " | ".join(f"{seconds[t]:.1f}" for t in TOOLS) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def _best(rows: list[dict]) -> list[dict]:
    """Per fixture, per tool, the better of as-exported and prepared."""
    merged: dict[str, dict] = {}
    for row in rows:
        kept = merged.setdefault(row["fixture"], {"tools": {}})
        for tool, result in row["tools"].items():
            good = result.get("complete") and result.get("outputs_ok") is True
            if tool not in kept["tools"] or good:
                kept["tools"][tool] = result
    return list(merged.values())


if __name__ == "__main__":
    sys.exit(main())
