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

from mapc.api import CompileResult, compile
from mapc.ir import (
    CheckFailed,
    MapcError,
    Model,
    ModelError,
    OutputError,
    UsageError,
    VerificationError,
    __version__,
    load,
    save,
)
from mapc.options import CompileOptions, default_pipeline
from mapc.passes import (
    Fixpoint,
    Note,
    Pass,
    PassContext,
    PassManager,
    PassResult,
    register_pass,
    registered_passes,
)

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
