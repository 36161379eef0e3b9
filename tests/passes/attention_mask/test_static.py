"""additive-mask on masks whose shapes are fixed and whose causal part is folded.

Until mapc's own fix-shapes/fold-constants passes are merged, onnxruntime's basic graph
optimizer (constant folding with batch=1, sequence=8 fixed) makes the folded models, as the
research note did with onnxsim/ORT: ``Cast -> GatherND(C(idx)) -> And(C(causal), .) -> Where``
(dynamo) and ``ScatterND(C, C(idx), .) -> Slice`` (transformers 4.40).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mapc.ir import load, run
from mapc.ir.compare import Tolerance
from mapc.passes import SAMPLES, PassContext
from mapc.passes.pipeline import PassManager
from mapc.testing import assert_pass_preserves

from .cases import TRANSFORMERS, fully_masked_rows

BATCH, LENGTH = 1, 8
LEFT_PADDED = np.array([[0, 0, 1, 1, 1, 1, 1, 1]], np.int64)


@cache
def folded(name: str, tmp: str = "") -> onnx.ModelProto:
    import tempfile
    from pathlib import Path

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.add_free_dimension_override_by_name("batch_size", BATCH)
    options.add_free_dimension_override_by_name("sequence_length", LENGTH)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "folded.onnx"
        options.optimized_model_filepath = str(path)
        ort.InferenceSession(str(TRANSFORMERS / f"{name}.onnx"), options, providers=["CPUExecutionProvider"])
        return onnx.load(path)


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    feeds = {}
    for value in model.graph.input:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if value.name == "attention_mask":
            feeds[value.name] = LEFT_PADDED
        elif value.name == "token_type_ids":
            feeds[value.name] = np.zeros(shape, np.int64)
        else:
            feeds[value.name] = (np.arange(np.prod(shape)) % 50).reshape(shape).astype(np.int64)
    return feeds


@pytest.mark.parametrize(
    ("name", "collapsed", "split"),
    [("llama-dynamo-eager", 1, 1), ("bert-dynamo-sdpa", 1, 1), ("gpt2-ts-sdpa", 1, 1), ("llama-ts440-eager", 3, 0)],
)
def test_folded_masks_lose_their_index_plumbing_and_split_the_causal_part(name, collapsed, split):
    model = folded(name)
    feeds = _feeds(model)
    rewritten = load(model)
    ctx = PassContext()
    ctx.facts[SAMPLES] = [feeds]  # the decomposed RMSNorm of the Llama exports bounds no score: measured on the inputs
    record = PassManager("attention-mask").run(rewritten, ctx)[0]
    assert record.counters["identity_index_ops_collapsed"] == collapsed
    assert record.counters.get("causal_parts_split", 0) == split
    ops = {node.op for node in rewritten.graph.nodes}
    assert not ops & {"GatherND", "ScatterND", "And", "IsNaN"}
    assert not [n for n in record.notes if n.code == "attention-mask.unrecognised"]
    masks = sorted({a["mask"] for a in record.details["attentions"] if "mask" in a})
    values = run(rewritten, feeds, outputs=masks)
    rows = fully_masked_rows([values[m] for m in masks], record.details["mask_value"])
    ignore = {o.name: rows[:, :, None] for o in model.graph.output if len(o.type.tensor_type.shape.dim) == 3}
    assert_pass_preserves(model, "attention-mask", feeds=feeds, ignore=ignore, tolerance=Tolerance(rtol=1e-4, atol=1e-5), samples=[feeds])
