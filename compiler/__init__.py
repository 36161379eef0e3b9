"""mapc: a graph compiler that maps ONNX models onto NPUs.

The Python API in brief::

    import mapc
    result = mapc.compile("model.onnx", verify=True)   # default target-independent pipeline
    result.save("model.mapc.onnx")
    model = mapc.load("model.onnx")                     # editable IR (mapc.ir.Model)
    mapc.save(model, "copy.onnx")

    @mapc.register_pass                                 # a pass of your own
    class MyPass(mapc.Pass):
        '''One-line summary. What it matches, what it produces.'''
        name = "my-pass"
        def run(self, model, ctx):
            return mapc.PassResult(changed=False)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mapc.api import CompileResult, compile
    from mapc.ir import CheckFailed, MapcError, Model, ModelError, OutputError, UsageError, VerificationError, __version__, load, save
    from mapc.options import CompileOptions, default_pipeline
    from mapc.passes import Fixpoint, Note, Pass, PassContext, PassManager, PassResult, register_pass, registered_passes

#: Where each public name lives. They are imported on first use (PEP 562), so that ``mapc
#: --version`` and ``--help``, which import :mod:`mapc.cli`, never load onnx or onnxruntime.
_SOURCES = {
    **dict.fromkeys(("CompileResult", "compile"), "mapc.api"),
    **dict.fromkeys(
        ("CheckFailed", "MapcError", "Model", "ModelError", "OutputError", "UsageError", "VerificationError", "__version__", "load", "save"),
        "mapc.ir",
    ),
    **dict.fromkeys(("CompileOptions", "default_pipeline"), "mapc.options"),
    **dict.fromkeys(
        ("Fixpoint", "Note", "Pass", "PassContext", "PassManager", "PassResult", "register_pass", "registered_passes"),
        "mapc.passes",
    ),
}


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'mapc' has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})


__all__ = [
    "CheckFailed",
    "CompileOptions",
    "CompileResult",
    "Fixpoint",
    "MapcError",
    "Model",
    "ModelError",
    "Note",
    "OutputError",
    "Pass",
    "PassContext",
    "PassManager",
    "PassResult",
    "UsageError",
    "VerificationError",
    "__version__",
    "compile",
    "default_pipeline",
    "load",
    "register_pass",
    "registered_passes",
    "save",
]
