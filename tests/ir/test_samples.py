"""The verification samples: ids over the vocabulary, padded and fully masked masks, float scales, free dims."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import mapc
from mapc.ir import Runner, dim_relations, load, verification_samples
from tests.conftest import make_model

TRANSFORMERS = Path(__file__).resolve().parents[1] / "fixtures" / "transformers"

VOCAB = 50


def _embedding_model():
    nodes = [helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.INT64), helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("Unsqueeze", ["attention_mask", "axes"], ["m"]), helper.make_node("Cast", ["m"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["e", "mf"], ["masked"]), helper.make_node("Add", ["masked", "extra"], ["y"])]
    inits = [numpy_helper.from_array(np.zeros((VOCAB, 4), np.float32), "table"), numpy_helper.from_array(np.array([2], np.int64), "axes")]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", "seq"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
              helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch", "seq", 4])]
    return load(make_model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])], inits))


def test_token_ids_spread_over_the_embedding_table():
    ids = np.concatenate([s.feeds["input_ids"].ravel() for s in verification_samples(_embedding_model(), dims={"batch": 2, "seq": 16})])
    assert ids.min() >= 0 and ids.max() < VOCAB and len(np.unique(ids)) > 10


def test_masks_are_padded_left_and_right_and_one_row_is_fully_masked():
    samples = verification_samples(_embedding_model(), dims={"batch": 2, "seq": 6})
    masks = [s.feeds["attention_mask"] for s in samples]
    assert masks[0][1].tolist() == [1, 1, 1, 1, 0, 0] and masks[0][0].all()
    assert masks[1][1].tolist() == [0, 0, 1, 1, 1, 1]
    assert not masks[2][1].any() and masks[2][0].all()
    assert masks[3][:, 0].all()


def test_floats_come_at_several_scales_and_free_dims_at_several_values():
    samples = verification_samples(_embedding_model(), dims={"batch": 1})
    scales = [np.abs(s.feeds["extra"]).max() for s in samples]
    assert scales[1] < 0.01 < 1 < scales[0] < 10 < 100 < scales[2]
    assert [s.feeds["extra"].shape[1] for s in samples] == [2, 3, 2, 5]
    assert all(s.feeds["extra"].shape[0] == 1 for s in samples)  # the fixed dim stays fixed
    assert "floats ×1000" in samples[2].label


def test_samples_are_reproducible():
    first, second = (verification_samples(_embedding_model(), seed=4) for _ in range(2))
    for a, b in zip(first, second):
        assert all(np.array_equal(a.feeds[k], b.feeds[k]) for k in a.feeds)


def test_a_kv_cache_decoders_related_dims_are_found_and_kept():
    """dynamo's KV-cache export takes attention_mask [batch, total_sequence_length] and returns
    past_sequence_length + sequence_length keys: the model runs only when the two agree."""
    model = load(TRANSFORMERS / "llama-dynamo-sdpa-kvcache.onnx")
    relations = dim_relations(model)
    assert {"total_sequence_length": "past_sequence_length + sequence_length"} in relations
    relation = {"total_sequence_length": "past_sequence_length + sequence_length"}
    for sample in verification_samples(model, relation=relation):
        feeds = sample.feeds
        assert feeds["attention_mask"].shape[1] == feeds["past_key_values.0.key"].shape[2] + feeds["input_ids"].shape[1]
        Runner(model).run(feeds)


def test_verify_runs_a_dynamo_kv_cache_decoder_on_related_dims():
    result = mapc.compile(TRANSFORMERS / "llama-dynamo-sdpa-kvcache.onnx", verify=True)
    assert result.verification["ok"] and result.verification["samples"] >= 2


@pytest.mark.parametrize("shape", [[3, 6], [3, 5, 6], [3, 1, 5, 6], [3, 2, 5, 6]])
@pytest.mark.parametrize(("name", "dtype"), [("attention_mask", TensorProto.INT64), ("attention_mask", TensorProto.BOOL),
                                             ("additive_mask", TensorProto.FLOAT)])
def test_a_generated_fully_masked_row_comes_with_its_whole_batch_item_masked(shape, name, dtype):
    """What the fuzz check's differential comparison relies on when it leaves out whole batch
    items (tests/e2e/fuzz_support.py): every fully masked row a generated mask holds lies in a
    batch item that is masked entirely, so leaving the item out leaves out nothing defined."""
    cast = helper.make_node("Cast", [name], ["y"], to=TensorProto.FLOAT)
    model = load(make_model([cast], [helper.make_tensor_value_info(name, dtype, shape)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]))
    fully_masked_items = 0
    for sample in verification_samples(model, seed=16):
        mask = sample.feeds[name]
        masked = mask <= np.finfo(mask.dtype).min / 2 if mask.dtype.kind == "f" else ~mask.astype(bool)
        rows = masked.all(axis=-1).reshape(shape[0], -1)
        assert np.array_equal(rows.any(axis=1), rows.all(axis=1)), sample.label
        fully_masked_items += int(rows.all(axis=1).sum())
    assert fully_masked_items == 1  # the "fully masked row" sample
