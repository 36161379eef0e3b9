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

__version__ = "0.1.0"

from .api import CompileResult, compile, default_pipeline
from .errors import (
    CheckFailed,
    MapcError,
    ModelError,
    OutputError,
    UsageError,
    VerificationError,
)
from .ir import Model, load, save
from .passes import (
    Note,
    Pass,
    PassContext,
    PassResult,
    register_pass,
    registered_passes,
)
from .pipeline import Fixpoint, PassManager

__all__ = [
    "CheckFailed",
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
