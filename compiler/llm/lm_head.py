"""lm_head as its own graph: the step graphs end at the final hidden states, a third graph projects them.

The vocabulary projection is the largest MatMul of a small LLM (151,936 x 1,536 weights in
Qwen2.5-1.5B, 15% of them) and the one a device most often cannot hold beside the layers; Intel's
NPUW cuts it into a model of its own, which the host runs where it fits (``--lm-head-graph``).

:func:`cut_lm_head` matches the logits output produced by ``MatMul(hidden, W)`` with a constant
``W`` (through the Slice ``--logits last`` inserts, if any). It produces a step graph whose
output ``hidden_states`` is that MatMul's input (``[1, T, hidden]``, or ``[1, 1, hidden]``), and
returns ``W``; :func:`lm_head_model` is the graph ``hidden_states -> logits`` that reads it, its
weight stored once in the split's shared weight file.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import Model, UsageError, standard_op
from mapc.llm.graph_edits import onnx_type

HIDDEN = "hidden_states"


def cut_lm_head(model: Model, logits: gs.Tensor) -> np.ndarray:
    """Make the graph end at lm_head's input (output ``hidden_states``); return lm_head's weight."""
    head = logits.inputs[0] if logits.inputs else None
    if head is None or standard_op(head) != "MatMul" or not isinstance(head.inputs[1], gs.Constant) \
            or len(head.inputs[1].shape or ()) != 2:
        raise UsageError("--lm-head-graph: the logits are not one MatMul of the hidden states by a constant weight; "
                         "keep lm_head in the graphs")
    hidden = head.inputs[0]
    weight = np.asarray(head.inputs[1].values)
    graph = model.graph
    if hidden in graph.inputs or hidden in graph.outputs or isinstance(hidden, gs.Constant):
        raise UsageError("--lm-head-graph: lm_head reads a graph input or output directly; keep lm_head in the graphs")
    hidden.name = HIDDEN
    graph.outputs = [hidden if tensor is logits else tensor for tensor in graph.outputs]
    head.inputs.clear()
    head.outputs.clear()
    return weight


def lm_head_model(weight: np.ndarray, opset: int) -> onnx.ModelProto:
    """``logits = hidden_states @ weight``: float ``[1, tokens, hidden]`` in, ``[1, tokens, vocab]`` out."""
    dtype = onnx_type(weight.dtype)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", [HIDDEN, "lm_head.weight"], ["logits"], name="lm_head")],
        "lm_head",
        [onnx.helper.make_tensor_value_info(HIDDEN, dtype, [1, "tokens", int(weight.shape[0])])],
        [onnx.helper.make_tensor_value_info("logits", dtype, [1, "tokens", int(weight.shape[1])])],
        [onnx.numpy_helper.from_array(weight, "lm_head.weight")],
    )
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
