"""infer_node: onnx's inference for one node, told the values of some inputs."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import infer_node

OPSETS = {"": 18}


def reshape(target: gs.Tensor) -> gs.Node:
    x = gs.Variable("x", dtype=np.float32, shape=[2, 3, 4])
    return gs.Node("Reshape", inputs=[x, target], outputs=[gs.Variable("y")])


def test_a_value_given_for_an_input_sets_the_output_shape():
    target = gs.Variable("target", dtype=np.int64, shape=[2])
    node = reshape(target)
    assert infer_node(node, OPSETS, 10, {"target": np.array([6, -1], np.int64)}) == [(np.dtype(np.float32), [6, 4])]


def test_without_the_value_only_the_rank_is_known():
    node = reshape(gs.Variable("target", dtype=np.int64, shape=[2]))
    [(dtype, shape)] = infer_node(node, OPSETS, 10, {})
    assert dtype == np.float32 and len(shape) == 2 and not any(isinstance(d, int) for d in shape)


def test_symbolic_dims_flow_through():
    x = gs.Variable("x", dtype=np.float32, shape=["batch", 4])
    node = gs.Node("Relu", inputs=[x], outputs=[gs.Variable("y")])
    assert infer_node(node, OPSETS, 10, {}) == [(np.dtype(np.float32), ["batch", 4])]


def test_unknown_ops_unknown_dtypes_and_inconsistent_nodes_give_none():
    x = gs.Variable("x", dtype=np.float32, shape=[2])
    assert infer_node(gs.Node("Mystery", domain="custom", inputs=[x], outputs=[gs.Variable("y")]), {**OPSETS, "custom": 1}, 10, {}) is None
    untyped = gs.Variable("u")
    assert infer_node(gs.Node("Relu", inputs=[untyped], outputs=[gs.Variable("y")]), OPSETS, 10, {}) is None
    clash = gs.Node("Add", inputs=[x, gs.Variable("z", dtype=np.float32, shape=[3])], outputs=[gs.Variable("y")])
    assert infer_node(clash, OPSETS, 10, {}) is None  # [2] and [3] do not broadcast


def test_an_unused_optional_output_is_unknown():
    x = gs.Variable("x", dtype=np.float32, shape=[2, 3])
    node = gs.Node("Dropout", inputs=[x], outputs=[gs.Variable("y"), gs.Variable("")])
    assert infer_node(node, OPSETS, 10, {}) == [(np.dtype(np.float32), [2, 3]), (None, None)]
