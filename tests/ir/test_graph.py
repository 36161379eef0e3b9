"""Graph editing helpers, shape inference and onnxruntime evaluation."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import (
    constant_value,
    consumers,
    count_nodes,
    infer_shapes,
    is_static,
    load,
    producer,
    remove_dead_nodes,
    remove_nodes,
    replace_all_uses,
    run,
    run_nodes,
    seeded_inputs,
    toposort,
)
from tests.conftest import make_model

F = TensorProto.FLOAT


def chain_model():
    return make_model(
        [
            helper.make_node("Relu", ["x"], ["a"], name="relu"),
            helper.make_node("Neg", ["a"], ["b"], name="neg"),
            helper.make_node("Abs", ["a"], ["c"], name="abs"),
            helper.make_node("Add", ["b", "c"], ["y"], name="add"),
        ],
        [helper.make_tensor_value_info("x", F, ["n", 3])],
        [helper.make_tensor_value_info("y", F, ["n", 3])],
    )


def test_producer_and_consumers():
    model = load(chain_model())
    a = model.graph.tensors()["a"]
    assert producer(a).name == "relu"
    assert sorted(node.name for node in consumers(a)) == ["abs", "neg"]
    assert producer(model.graph.inputs[0]) is None


def test_replace_all_uses_renames_a_node_output_to_keep_the_graph_output_name():
    model = load(chain_model())
    tensors = model.graph.tensors()
    replace_all_uses(model, tensors["y"], tensors["b"])
    remove_dead_nodes(model.graph)
    assert [t.name for t in model.graph.outputs] == ["y"]
    assert [n.name for n in model.graph.nodes] == ["relu", "neg"]
    feeds = {"x": np.array([[1.0, -2.0, 3.0]], np.float32)}
    np.testing.assert_array_equal(run(model, feeds)["y"], -np.maximum(feeds["x"], 0))


def test_replace_all_uses_inserts_identity_when_the_replacement_is_an_input():
    model = load(chain_model())
    tensors = model.graph.tensors()
    replace_all_uses(model, tensors["y"], tensors["x"])
    remove_dead_nodes(model.graph)
    assert [n.op for n in model.graph.nodes] == ["Identity"]
    assert [t.name for t in model.graph.outputs] == ["y"]


def test_remove_nodes_and_dead_node_removal():
    model = load(chain_model())
    assert remove_dead_nodes(model.graph) == 0
    add = next(n for n in model.graph.nodes if n.op == "Add")
    y = add.outputs[0]
    b = model.graph.tensors()["b"]
    add.outputs.clear()
    neg = producer(b)
    neg.outputs[0] = y
    assert remove_nodes(model.graph, [add]) == 1
    assert remove_dead_nodes(model.graph) == 1  # abs no longer feeds anything
    assert count_nodes(model.graph) == 2


def test_toposort_keeps_valid_order_and_detects_cycles():
    model = load(chain_model())
    model.graph.nodes.reverse()
    toposort(model.graph)
    assert [n.name for n in model.graph.nodes] == ["relu", "abs", "neg", "add"]  # abs before neg stays valid
    add = model.graph.nodes[-1]
    relu = model.graph.nodes[0]
    relu.inputs[0] = add.outputs[0]
    with pytest.raises(ValueError, match="cycle"):
        toposort(model.graph)


def test_constant_value_reads_initializers_and_constant_nodes():
    model = load(make_model(
        [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.array([2.0], np.float32))),
         helper.make_node("Mul", ["x", "k"], ["m"]), helper.make_node("Add", ["m", "w"], ["y"])],
        [helper.make_tensor_value_info("x", F, [1])],
        [helper.make_tensor_value_info("y", F, [1])],
        [numpy_helper.from_array(np.array([3.0], np.float32), "w")],
    ))
    tensors = model.graph.tensors()
    assert constant_value(tensors["k"]).tolist() == [2.0]
    assert constant_value(tensors["w"]).tolist() == [3.0]
    assert constant_value(tensors["m"]) is None


def test_infer_shapes_keeps_symbolic_dims_and_follows_shape_arithmetic():
    model = load(make_model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
            helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
            helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
            helper.make_node("Reshape", ["x", "target"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", F, ["batch", 3, 4])],
        [helper.make_tensor_value_info("y", F, [None, None])],
        [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array([0], np.int64), "axes"),
         numpy_helper.from_array(np.array([-1], np.int64), "minus_one")],
    ))
    assert infer_shapes(model)
    tensors = model.graph.tensors()
    assert tensors["y"].shape[0] == "batch"  # the -1 needs batch's value: left symbolic
    assert tensors["s"].dtype == np.int64
    assert not is_static(tensors["y"].shape) and is_static([1, 12])


def test_infer_shapes_replaces_an_output_declared_with_another_rank_and_keeps_declared_names():
    """A logits output declared as a scalar (a script that cut off the Softmax): onnxruntime
    merges leniently, QNN cannot size the Gemm writing it; the inferred shape replaces it. Where
    the ranks agree, a dim inference knows replaces a declared name."""
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    proto = make_model([helper.make_node("Gemm", ["x", "w"], ["logits"], transB=1), helper.make_node("Reshape", ["x", "flat"], ["y"])],
                       [helper.make_tensor_value_info("x", F, [2, 3])],
                       [helper.make_tensor_value_info("logits", F, []), helper.make_tensor_value_info("y", F, ["n"])],
                       [weight, numpy_helper.from_array(np.array([-1], np.int64), "flat")])
    model = load(proto)
    assert infer_shapes(model)
    tensors = model.graph.tensors()
    assert list(tensors["logits"].shape) == [2, 4] and list(tensors["y"].shape) == [6]


def test_run_exposes_intermediate_tensors_and_run_nodes_batches():
    model = load(chain_model())
    feeds = seeded_inputs(model, dims={"n": 4})
    assert feeds["x"].shape == (4, 3)
    values = run(model, feeds, outputs=["a", "y"])
    np.testing.assert_array_equal(values["a"], np.maximum(feeds["x"], 0))
    nodes = [n for n in model.graph.nodes if n.name in ("neg", "abs")]
    result = run_nodes(nodes, {"a": values["a"]}, ["b", "c"], opset_imports=model.opset_imports, ir_version=model.ir_version)
    np.testing.assert_array_equal(result["b"], -values["a"])
    np.testing.assert_array_equal(result["c"], values["a"])


def test_seeded_inputs_are_reproducible_and_typed():
    model = load(make_model(
        [helper.make_node("Cast", ["ids"], ["f"], to=F), helper.make_node("Where", ["flag", "f", "f"], ["y"])],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", 5]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", F, ["b", 5])],
    ))
    first, second = seeded_inputs(model, seed=3), seeded_inputs(model, seed=3)
    assert first["ids"].dtype == np.int64 and set(np.unique(first["ids"])) <= {0, 1}
    assert first["flag"].shape == () and first["flag"].dtype == np.bool_
    np.testing.assert_array_equal(first["ids"], second["ids"])
    assert seeded_inputs(model, shapes={"ids": [7, 5]})["ids"].shape == (7, 5)


def test_gs_graph_is_the_live_structure():
    model = load(chain_model())
    extra = gs.Variable(model.fresh_name("extra"), dtype=np.float32)
    model.graph.nodes.append(gs.Node("Sigmoid", inputs=[model.graph.outputs[0]], outputs=[extra]))
    model.graph.outputs.append(extra)
    assert set(run(model, {"x": np.ones((1, 3), np.float32)})) == {"y", "extra"}
