"""The newest IR version and opset mapc can compile: what the installed onnx and onnxruntime run.

mapc checks a model with onnx (checker, shape inference) and runs it in onnxruntime
(verification, folding, calibration), so it accepts what both accept. Neither publishes its
limits as a number that holds across releases, so :func:`runtime_limits` asks them once per
process: onnx says the newest IR version and ai.onnx opset its schemas know, and onnxruntime is
probed by loading a one-node model at each candidate, newest first, until one loads. A new
release of either is picked up on the next run, with nothing to edit here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import onnx
import onnx.defs
import onnxruntime as ort
from onnx import TensorProto, helper

#: The oldest ai.onnx opset there is.
MIN_OPSET = 1
#: IR version used when probing opsets (ONNX IR 3 is the first with opset imports).
_PROBE_FLOOR_IR = 3


@dataclass(frozen=True)
class RuntimeLimits:
    """The newest model versions mapc accepts, and the library versions they come from."""

    max_ir_version: int
    max_opset: int
    max_ml_opset: int
    onnx_version: str
    onnxruntime_version: str

    def describe(self) -> str:
        """``onnx 1.23.2 and onnxruntime 1.32.0``: who set the limits, for error messages."""
        return f"onnx {self.onnx_version} and onnxruntime {self.onnxruntime_version}"


@cache
def runtime_limits() -> RuntimeLimits:
    """The limits of the installed onnx and onnxruntime (probed on first use, then cached)."""
    onnx_max_opset = onnx.defs.onnx_opset_version()
    max_ir = _newest(onnx.IR_VERSION, _PROBE_FLOOR_IR, lambda ir: _loads(ir, min(13, onnx_max_opset)))
    max_opset = _newest(onnx_max_opset, MIN_OPSET, lambda opset: _loads(max_ir, opset))
    return RuntimeLimits(
        max_ir_version=max_ir,
        max_opset=max_opset,
        max_ml_opset=onnx.defs.C.schema_version_map()["ai.onnx.ml"][1],
        onnx_version=onnx.__version__,
        onnxruntime_version=ort.__version__,
    )


def _newest(start: int, floor: int, accepted) -> int:
    """The largest value in ``[floor, start]`` that ``accepted``; ``floor`` if none is."""
    for candidate in range(start, floor, -1):
        if accepted(candidate):
            return candidate
    return floor


def _loads(ir_version: int, opset: int) -> bool:
    """Whether onnxruntime loads an Identity model stamped with ``ir_version`` and ``opset``."""
    value = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", value[:1], value[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return onnxruntime_loads(model)


def onnxruntime_loads(model: onnx.ModelProto) -> bool:
    """Whether onnxruntime's CPU provider makes a session of ``model`` (no graph optimization)."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own Fail/InvalidGraph types for a model it refuses
        return False
    return True


@cache
def runtime_kernels() -> dict[tuple[str, str], tuple[tuple[int, int], ...]]:
    """(domain, op) -> the opset version ranges onnxruntime's CPU provider has a kernel for."""
    from onnxruntime.capi import _pybind_state

    kernels: dict[tuple[str, str], set[tuple[int, int]]] = {}
    for kernel in _pybind_state.get_all_opkernel_def():
        if kernel.provider == "CPUExecutionProvider":
            domain = "" if kernel.domain == "ai.onnx" else kernel.domain
            kernels.setdefault((domain, kernel.op_name), set()).add(tuple(kernel.version_range))
    return {key: tuple(sorted(ranges)) for key, ranges in kernels.items()}


@cache
def runtime_schemas() -> frozenset[tuple[str, str]]:
    """(domain, op) of every operator schema onnxruntime registers (onnx's and its contrib ops)."""
    from onnxruntime.capi import _pybind_state

    return frozenset(("" if s.domain == "ai.onnx" else s.domain, s.name) for s in _pybind_state.get_all_operator_schema())


def runs_in_onnxruntime(domain: str, op: str, since_version: int | None) -> bool:
    """Whether onnxruntime's CPU provider has a kernel for ``op`` in ``domain`` at the schema
    version ``since_version`` (any version when None)."""
    ranges = runtime_kernels().get((domain, op), ())
    return any(since_version is None or low <= since_version <= high for low, high in ranges)


@cache
def _runtime_schema_versions() -> dict[tuple[str, str], tuple[tuple[int, bool], ...]]:
    """(domain, op) -> (since_version, deprecated) of each schema onnxruntime registers for it."""
    from onnxruntime.capi import _pybind_state

    versions: dict[tuple[str, str], set[tuple[int, bool]]] = {}
    for schema in _pybind_state.get_all_operator_schema():
        key = ("" if schema.domain == "ai.onnx" else schema.domain, schema.name)
        versions.setdefault(key, set()).add((schema.since_version, bool(schema.deprecated)))
    return {key: tuple(sorted(found)) for key, found in versions.items()}


def runtime_only_op(domain: str, op: str, opset: int) -> bool:
    """Whether onnxruntime runs ``op`` at ``opset`` of ``domain`` although onnx has no schema for
    it there: an experimental op onnx dropped (``ImageScaler`` up to opset 9), or one onnxruntime
    registered before onnx adopted it (``LayerNormalization`` below opset 17)."""
    current = [deprecated for since, deprecated in _runtime_schema_versions().get((domain, op), ()) if since <= opset]
    return bool(current) and not current[-1] and runs_in_onnxruntime(domain, op, opset)
