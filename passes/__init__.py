"""mapc's passes: the :class:`Pass` contract, the registry and the built-in passes.

Importing this package registers every built-in pass. A new pass is one module here (or under a
sub-package such as ``fusion/``) defining a registered :class:`Pass`, plus its tests.
"""

from mapc.passes import (  # noqa: F401  (registers the built-in passes)
    attention_mask,
    check_static,
    cleanup,
    fix_shapes,
    fold_constants,
    fusion,
    peephole,
    quantize,
    upgrade_opset,
)
from mapc.passes.attention_mask.facts import MASK_INPUTS, MaskInputs
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.facts import Fact, Facts
from mapc.passes.flags import flag
from mapc.passes.registry import get_pass, has_pass, register_pass, registered_passes
from mapc.passes.shape_ops import SHAPES
from mapc.passes.verify import UNDEFINED_OUTPUTS

__all__ = [
    "MASK_INPUTS",
    "SHAPES",
    "UNDEFINED_OUTPUTS",
    "Fact",
    "Facts",
    "flag",
    "MaskInputs",
    "Note",
    "Pass",
    "PassContext",
    "PassResult",
    "get_pass",
    "has_pass",
    "register_pass",
    "registered_passes",
]
