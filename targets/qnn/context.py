"""The artifact a Snapdragon device loads: the EPContext model, compiled by QNN (``--emit epcontext``).

onnxruntime's QNN EP can dump what it compiled as an *EPContext model*: an ONNX model whose
``EPContext`` nodes hold the QNN context binary (here embedded in the file) for one HTP
architecture and SoC, plus the nodes QNN left to the CPU (the boundary Q/DQ). A session on the
device loads it without compiling again. :func:`write_context_model` builds the planned QDQ
model with the target's QNN options in a child process (:func:`~mapc.targets.qnn.oracle.ask_qnn`)
and moves the result into place atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mapc.ir import CheckFailed, Model, UsageError
from mapc.targets.qnn.agreement import qnn_options, require_qnn_target
from mapc.targets.qnn.oracle import ask_qnn
from mapc.targets.spec import Target


@dataclass(frozen=True)
class ContextModel:
    """An EPContext model written for one target: where, how big, how long QNN took."""

    path: Path
    bytes: int
    compile_seconds: float
    arch: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "compile_seconds": round(self.compile_seconds, 3), "htp_arch": self.arch}


def context_path(output: Path, folder: Path | None = None) -> Path:
    """``<stem>_ctx.onnx`` beside ``output`` (or in ``folder``), onnxruntime's own naming."""
    stem = output.name[: -len(".onnx")] if output.name.endswith(".onnx") else output.name
    return (folder or output.parent) / f"{stem}_ctx.onnx"


def write_context_model(model: Model, target: Target, path: str | os.PathLike) -> ContextModel:
    """Compile ``model`` with QNN for ``target`` and write its EPContext model to ``path``.

    :class:`UsageError` when the target is not one QNN compiles or the extra is missing;
    :class:`CheckFailed` with QNN's own words when QNN does not build the model.
    """
    require_qnn_target(target, "--emit epcontext")
    final = Path(path)
    if not final.parent.is_dir():
        raise UsageError(f"--emit epcontext: folder {final.parent} does not exist")
    temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp.onnx")
    arch, options = qnn_options(target)
    try:
        check = ask_qnn(model, arch=arch, provider_options=options, context_model=temporary)
        if not check.built or not temporary.exists():
            raise CheckFailed(f"QNN did not compile the model into a context binary: {check.error or 'no EPContext model was written'}")
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    return ContextModel(final, final.stat().st_size, check.build_seconds or 0.0, arch)
