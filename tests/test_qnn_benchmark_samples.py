"""benchmarks/qnn.py: the samples of a model given by path (``NAME=PATH``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

QNN_BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "qnn.py"
_spec = importlib.util.spec_from_file_location("qnn_benchmark", QNN_BENCHMARK)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

VOCAB = 500


def embedding_model(path: Path) -> Path:
    """input_ids [batch, seq] index a [VOCAB, 4] table; attention_mask [batch, seq] is added in."""
    table = numpy_helper.from_array(np.ones((VOCAB, 4), np.float32), "table")
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axes"], ["mask_u"]),
        helper.make_node("Mul", ["embedded", "mask_u"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])],
        [table, numpy_helper.from_array(np.array([-1], np.int64), "axes")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_name_with_a_path_is_a_given_model_and_a_plain_name_is_not():
    assert bench.given_path("llama=/tmp/x.onnx") == ("llama", Path("/tmp/x.onnx"))
    assert bench.given_path("bert-ts-eager") is None


def test_token_ids_spread_over_the_vocabulary_and_masks_are_right_padded(tmp_path):
    path = embedding_model(tmp_path / "m.onnx")
    assert bench.vocabulary(onnx.load(path), "input_ids") == VOCAB
    samples = bench.path_samples(path, 6, seed=3, dims={"batch": 1, "seq": 64})
    ids = np.stack([s["input_ids"] for s in samples])
    assert ids.shape == (6, 1, 64) and ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < VOCAB and ids.max() > VOCAB // 2
    for sample in samples:
        mask = sample["attention_mask"][0]
        kept = int(mask.sum())
        assert 32 <= kept <= 64
        assert (mask[:kept] == 1).all() and (mask[kept:] == 0).all()
    assert len({int(s["attention_mask"].sum()) for s in samples}) > 1


def test_samples_are_seeded(tmp_path):
    path = embedding_model(tmp_path / "m.onnx")
    first = bench.path_samples(path, 2, seed=0, dims={"batch": 1, "seq": 8})
    again = bench.path_samples(path, 2, seed=0, dims={"batch": 1, "seq": 8})
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(first, again) for k in a)


def test_a_symbolic_dim_without_a_value_is_an_error_naming_it(tmp_path):
    path = embedding_model(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="--dim seq=N"):
        bench.path_samples(path, 1, seed=0, dims={"batch": 1})
