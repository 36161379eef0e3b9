"""mapc's intermediate representation: an editable ONNX model built on onnx-graphsurgeon.

* :func:`load` / :func:`save` / :class:`Model`: files, bytes and ModelProtos in, atomic and
  deterministic files out; external data stays inside the model's folder and on disk.
* graph helpers: :func:`producer`, :func:`consumers`, :func:`replace_all_uses`,
  :func:`remove_nodes`, :func:`toposort`, :func:`remove_dead_nodes`, :func:`constant_value`.
* :func:`infer_shapes`: onnx shape inference keeping symbolic dims; :func:`infer_node`: one node,
  with the values of its constant inputs.
* :func:`value_bound`: interval analysis (a range every element provably stays in).
* :func:`run`, :class:`Runner`, :func:`run_nodes`, :func:`seeded_inputs`: evaluation in onnxruntime;
  :func:`verification_samples`: realistic inputs (several samples) for differential checks.
"""

from mapc.ir.compare import OutputComparison, Tolerance, check_valid, compare_outputs
from mapc.ir.dim_expr import evaluate_dim, solve_dim, symbols_of
from mapc.ir.errors import EXIT_INTERNAL, EXIT_OK, CheckFailed, MapcError, ModelError, OutputError, UsageError, VerificationError
from mapc.ir.evaluate import DEFAULT_DIM, OnnxRuntimeError, Runner, make_session, random_array, run, run_nodes, seeded_inputs
from mapc.ir.external import ExternalValues, iter_chunks, same_file
from mapc.ir.graph import (
    MAPC_DOMAIN,
    SHAPE_READERS,
    can_take_name,
    clip_bounds,
    constant_nbytes,
    constant_tensor,
    constant_value,
    consumers,
    count_nodes,
    int_constant,
    is_default_domain,
    is_float_activation,
    is_graph_input,
    is_graph_output,
    is_lazy,
    optional_input,
    peek_bytes,
    peek_values,
    producer,
    remove_dead_nodes,
    remove_nodes,
    replace_all_uses,
    scalar_value,
    small_constant,
    standard_op,
    toposort,
)
from mapc.ir.intervals import Bound, value_bound
from mapc.ir.gs_compat import remember_lost_parts, set_overload
from mapc.ir.memory import check_tensor_sizes, tensor_budget
from mapc.ir.model import Model, ModelSource, load, save, save_sharing_weights
from mapc.ir.node_inference import Inferred, infer_node
from mapc.ir.notes import Note
from mapc.ir.onnx_check import check_onnx
from mapc.ir.pattern import COMMUTATIVE_OPS, Alt, Match, const, op, product, var
from mapc.ir.rewrite import NearMiss, NoMatch, PatternRule, RewriteContext, Rule, RuleReport, apply_rules, rule, rule_details, rule_names, rule_notes
from mapc.ir.runtime_limits import runtime_limits
from mapc.ir.samples import Sample, dim_relations, verification_samples
from mapc.ir.shapes import SKELETON_INLINE_BYTES, infer_shapes, is_static, is_static_dim, same_dtype, static_shape
from mapc.ir.validate import MAX_DIM
from mapc.ir.version import __version__
from mapc.ir.walk import sole_reader, walk

__all__ = [
    "COMMUTATIVE_OPS",
    "DEFAULT_DIM",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "MAX_DIM",
    "MAPC_DOMAIN",
    "SHAPE_READERS",
    "SKELETON_INLINE_BYTES",
    "Alt",
    "Bound",
    "CheckFailed",
    "ExternalValues",
    "Inferred",
    "MapcError",
    "Match",
    "Model",
    "ModelError",
    "ModelSource",
    "NearMiss",
    "NoMatch",
    "Note",
    "OnnxRuntimeError",
    "OutputComparison",
    "OutputError",
    "PatternRule",
    "RewriteContext",
    "Rule",
    "Sample",
    "RuleReport",
    "Runner",
    "Tolerance",
    "UsageError",
    "VerificationError",
    "__version__",
    "apply_rules",
    "can_take_name",
    "check_onnx",
    "check_tensor_sizes",
    "check_valid",
    "compare_outputs",
    "clip_bounds",
    "const",
    "constant_nbytes",
    "constant_tensor",
    "constant_value",
    "consumers",
    "count_nodes",
    "evaluate_dim",
    "infer_node",
    "infer_shapes",
    "int_constant",
    "is_default_domain",
    "is_float_activation",
    "is_graph_input",
    "is_graph_output",
    "is_lazy",
    "is_static",
    "is_static_dim",
    "iter_chunks",
    "load",
    "make_session",
    "op",
    "optional_input",
    "peek_bytes",
    "peek_values",
    "producer",
    "product",
    "random_array",
    "remember_lost_parts",
    "remove_dead_nodes",
    "remove_nodes",
    "replace_all_uses",
    "rule",
    "rule_details",
    "rule_names",
    "rule_notes",
    "run",
    "run_nodes",
    "runtime_limits",
    "same_dtype",
    "same_file",
    "save",
    "save_sharing_weights",
    "scalar_value",
    "seeded_inputs",
    "set_overload",
    "small_constant",
    "sole_reader",
    "solve_dim",
    "standard_op",
    "static_shape",
    "symbols_of",
    "tensor_budget",
    "toposort",
    "value_bound",
    "var",
    "verification_samples",
    "dim_relations",
    "walk",
]
