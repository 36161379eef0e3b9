"""mapc's passes: the :class:`Pass` contract, the registry and the built-in passes.

Importing this package registers every built-in pass. A new pass is one module here (or under a
sub-package such as ``fusion/``) defining a registered :class:`Pass`, plus its tests.
"""

from mapc.passes import (  # noqa: F401  (registers the built-in passes)
    attention_mask,
    cleanup,
    fix_shapes,
    fold_constants,
    fusion,
    peephole,
    quantize,
    static_report,
    upgrade_opset,
)
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.registry import get_pass, has_pass, register_pass, registered_passes

__all__ = ["Note", "Pass", "PassContext", "PassResult", "get_pass", "has_pass", "register_pass", "registered_passes"]
