"""mapc's intermediate representation: an editable ONNX model built on onnx-graphsurgeon.

* :func:`load` / :func:`save` / :class:`Model`: files, bytes and ModelProtos in, atomic and
  deterministic files out; external data stays inside the model's folder and on disk.
* graph helpers: :func:`producer`, :func:`consumers`, :func:`replace_all_uses`,
  :func:`remove_nodes`, :func:`toposort`, :func:`remove_dead_nodes`, :func:`constant_value`.
* :func:`infer_shapes`: onnx shape inference keeping symbolic dims.
* :func:`run`, :class:`Runner`, :func:`run_nodes`, :func:`seeded_inputs`: evaluation in onnxruntime.
"""

from mapc.ir.evaluate import OnnxRuntimeError, Runner, make_session, run, run_nodes, seeded_inputs
from mapc.ir.graph import (
    MAPC_DOMAIN,
    can_take_name,
    constant_nbytes,
    constant_value,
    consumers,
    count_nodes,
    is_default_domain,
    is_graph_input,
    is_graph_output,
    is_lazy,
    peek_bytes,
    peek_values,
    producer,
    remove_dead_nodes,
    remove_nodes,
    replace_all_uses,
    standard_op,
    toposort,
)
from mapc.ir.model import Model, load, save
from mapc.ir.shapes import infer_shapes, is_static

__all__ = [
    "MAPC_DOMAIN",
    "Model",
    "OnnxRuntimeError",
    "can_take_name",
    "Runner",
    "constant_nbytes",
    "constant_value",
    "consumers",
    "count_nodes",
    "infer_shapes",
    "is_default_domain",
    "is_graph_input",
    "is_graph_output",
    "is_lazy",
    "is_static",
    "peek_bytes",
    "peek_values",
    "load",
    "make_session",
    "producer",
    "remove_dead_nodes",
    "remove_nodes",
    "replace_all_uses",
    "run",
    "run_nodes",
    "save",
    "seeded_inputs",
    "standard_op",
    "toposort",
]
