"""mapc's passes: the :class:`Pass` contract, the registry and the built-in passes.

Importing this package registers every built-in pass. A new pass is one module here (or under a
sub-package such as ``fusion/``) defining a registered :class:`Pass`, plus its tests.
"""

from mapc.passes import (  # noqa: F401  (registers the built-in passes)
    attention_mask,
    average_pool_as_conv,
    check_static,
    cleanup,
    decompose_lrn,
    fix_shapes,
    fold_constants,
    fusion,
    norm_input_second,
    pad_as_concat,
    pad_before_conv,
    peephole,
    pool_as_global,
    qoperator,
    quantize,
    quantized_io,
    split_stacked_kv,
    uniform_unit_types,
    unstride_conv,
    unstride_pool,
    upgrade_opset,
)
from mapc.passes.attention_mask.facts import MASK_INPUTS, MaskInputs
from mapc.passes.base import Note, Pass, PassContext, PassResult, convert_option
from mapc.passes.bindings import Binding
from mapc.passes.check_static import dynamic_tensors_in, inputs_static
from mapc.passes.facts import Fact, Facts
from mapc.passes.fix_shapes import check_dim_names, check_input_sizes, resolve_dims
from mapc.passes.flags import Flag, flag, flagged_fields
from mapc.passes.fold_if import inline_constant_ifs
from mapc.passes.pipeline import Fixpoint, PassManager, PassRecord, ProgressHook, Step, StepSpec, build_pipeline, flatten_steps, map_passes, with_options, with_pass_options
from mapc.passes.registry import get_pass, register_pass, registered_passes
from mapc.passes.quantized_io import QUANTIZED_IO, QuantizedTensor
from mapc.passes.shape_ops import SHAPES
from mapc.passes.uniform_unit_types import activation_types
from mapc.passes.verify import INTERFACE_CHANGES, SAMPLES, UNDEFINED_OUTPUTS, InterfaceChange, Verifier

__all__ = [
    "INTERFACE_CHANGES",
    "InterfaceChange",
    "MASK_INPUTS",
    "QUANTIZED_IO",
    "QuantizedTensor",
    "SAMPLES",
    "SHAPES",
    "UNDEFINED_OUTPUTS",
    "Binding",
    "Fact",
    "Facts",
    "Fixpoint",
    "Flag",
    "MaskInputs",
    "Note",
    "Pass",
    "PassContext",
    "PassManager",
    "PassRecord",
    "PassResult",
    "ProgressHook",
    "Step",
    "StepSpec",
    "Verifier",
    "activation_types",
    "build_pipeline",
    "check_dim_names",
    "check_input_sizes",
    "convert_option",
    "dynamic_tensors_in",
    "flag",
    "flagged_fields",
    "flatten_steps",
    "inline_constant_ifs",
    "inputs_static",
    "get_pass",
    "map_passes",
    "register_pass",
    "registered_passes",
    "resolve_dims",
    "with_options",
    "with_pass_options",
]
