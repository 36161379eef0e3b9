"""Embedding lookups the host runs: ``token_embeds``/``position_embeds`` inputs and ``embed.onnx``.

For targets that cannot ``Gather`` by run-time indices (the static-LLM ``--embedding host``),
the token embedding Gather (and a learned position embedding's) leaves the graph: its output
becomes an input ``[1, T, hidden]``, and :func:`host_embedding` builds the small graph the host
runs instead (int32 ids and positions in, the embeddings out; its tables join the split's
shared weight file).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import Model, UsageError
from mapc.llm.graph_edits import onnx_type, rewire


def embeds_input(model: Model, gather: gs.Node | None, name: str, new_tokens: int) -> np.ndarray:
    """Replace ``gather``'s output by a graph input ``name`` [1, T, hidden]; return its table."""
    if gather is None:
        raise UsageError("cannot find the token embedding Gather to move to the host; keep it in the graph "
                         "(--embedding graph)")
    indices = gather.inputs[1]
    if int(gather.attrs.get("axis", 0)) != 0 or (indices.shape is not None and len(indices.shape) != 2):
        raise UsageError(f"the embedding Gather {gather.name!r} does not look up [batch, tokens] rows; keep it in "
                         "the graph (--embedding graph)")
    table = np.asarray(gather.inputs[0].values)
    output = gather.outputs[0]
    embeds = gs.Variable(name, dtype=table.dtype, shape=[1, new_tokens, int(table.shape[1])])
    for reader in list(output.outputs):
        rewire(reader, output, embeds)
    if output in model.graph.outputs:
        raise UsageError(f"the embedding {output.name!r} is a graph output; keep it in the graph (--embedding graph)")
    model.graph.inputs.append(embeds)
    return table


def host_embedding(tables: dict[str, tuple[str, np.ndarray]], opset: int) -> onnx.ModelProto:
    """The graph the host runs instead of the embedding Gathers: int32 ids/positions [1, tokens]
    in, one ``[1, tokens, hidden]`` output per table."""
    inputs, nodes, initializers, outputs = {}, [], [], []
    for name, (index_input, table) in tables.items():
        inputs[index_input] = onnx.helper.make_tensor_value_info(index_input, onnx.TensorProto.INT32, [1, "tokens"])
        initializers.append(onnx.numpy_helper.from_array(table, f"{name}.table"))
        nodes.append(onnx.helper.make_node("Gather", [f"{name}.table", index_input], [name], name=f"{name}.gather"))
        outputs.append(onnx.helper.make_tensor_value_info(name, onnx_type(table.dtype), [1, "tokens", int(table.shape[1])]))
    graph = onnx.helper.make_graph(nodes, "host_embedding", list(inputs.values()), outputs, initializers)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
