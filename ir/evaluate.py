"""Running a model, or a handful of its nodes, in onnxruntime.

* :func:`run` evaluates a :class:`~mapc.ir.Model` (or a ModelProto) on given inputs and can expose
  any intermediate tensor as an extra output. External weights are read by onnxruntime straight
  from the model's folder; nothing is copied into Python.
* :class:`Runner` keeps one session for many runs (calibration over many samples).
* :func:`run_nodes` evaluates a set of nodes extracted from a graph, with their inputs given as
  arrays: constant folding evaluates a whole batch of foldable nodes in one session this way.
* :func:`seeded_inputs` makes reproducible random inputs for a model's graph inputs.

Sessions run with graph optimizations disabled, so what is measured is the model as written.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from mapc.ir.dim_expr import evaluate_dim, symbols_of
from mapc.ir.errors import ModelError
from mapc.ir.external import ExternalValues
from mapc.ir.graph import constant_nbytes
from mapc.ir.model import INLINE_LIMIT, Model, save
from mapc.ir.ort_values import is_bridged, run_session

#: Value used for a symbolic dim nobody fixed when inputs are generated.
DEFAULT_DIM = 2


class OnnxRuntimeError(ModelError):
    """onnxruntime refused to load or to run a model."""


def session_options(base_dir: Path | None = None, *, optimized: bool = False) -> ort.SessionOptions:
    """Session options: graph optimizations off (the model as written) unless ``optimized``."""
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if base_dir is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(base_dir))
    return options


def _quiet_run() -> ort.RunOptions:
    options = ort.RunOptions()
    options.log_severity_level = 4
    return options


def make_session(model: Model | onnx.ModelProto, *, base_dir: Path | None = None, optimized: bool = False) -> ort.InferenceSession:
    """An onnxruntime CPU session for ``model``; raises :class:`OnnxRuntimeError` if it will not load."""
    if isinstance(model, Model):
        base_dir = model.base_dir if base_dir is None else base_dir
        model = model.to_proto()
    try:
        return ort.InferenceSession(
            model.SerializeToString(), session_options(base_dir, optimized=optimized), providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise OnnxRuntimeError(f"onnxruntime cannot load the model: {_first_line(error)}") from None


class Runner:
    """One onnxruntime session over a model, reused for many runs (calibration, accuracy checks).

    ``outputs`` names the tensors the session can return: the graph outputs (default) or any
    tensors of the graph, intermediate ones included. Each :meth:`run` may ask for a subset of
    them, so a caller can bound how many large activations it holds at once. The model is
    exported once; external weights are read by onnxruntime from the model's folder. A model
    whose in-memory weights (written by passes) would not fit in one protobuf is first saved
    with external data to a temporary folder that lives as long as the runner.
    ``optimized`` lets onnxruntime optimize the graph (faster; float results may differ in the
    last bits from the model as written).
    """

    def __init__(
        self,
        model: Model | onnx.ModelProto,
        outputs: Sequence[str] | None = None,
        *,
        base_dir: Path | None = None,
        optimized: bool = False,
    ) -> None:
        self._spill: tempfile.TemporaryDirectory | None = None
        if isinstance(model, Model) and inline_weight_bytes(model) > INLINE_LIMIT:
            self._spill = tempfile.TemporaryDirectory(prefix="mapc-session-")
            path = save(model, Path(self._spill.name) / "model.onnx", external_data=True)
            proto, base_dir = onnx.load(str(path), load_external_data=False), Path(self._spill.name)
        elif isinstance(model, Model):
            base_dir = model.base_dir if base_dir is None else base_dir
            proto = model.to_proto()
        else:
            proto = model
        if outputs is not None:
            proto = _with_outputs(proto, outputs)
        self.session = make_session(proto, base_dir=base_dir, optimized=optimized)
        self.output_names = list(outputs) if outputs is not None else [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run on ``feeds`` (extra entries are ignored); return ``outputs`` (default: all)."""
        wanted = list(outputs) if outputs is not None else self.output_names
        needed = set(self.input_names)
        try:
            values = run_session(self.session, wanted, {name: value for name, value in feeds.items() if name in needed}, _quiet_run())
        except Exception as error:
            raise OnnxRuntimeError(f"onnxruntime failed to run the model: {_first_line(error)}") from None
        return dict(zip(wanted, values))


def inline_weight_bytes(model: Model) -> int:
    """Bytes of the weights a ModelProto of ``model`` would hold inline (not in external files)."""
    total = 0
    for graph in (model.graph, *model.graph.subgraphs(recursive=True)):
        for tensor in graph.tensors().values():
            if isinstance(tensor, gs.Constant) and not isinstance(tensor._values, ExternalValues):
                total += constant_nbytes(tensor)
    return total


def run(
    model: Model | onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None = None,
    *,
    base_dir: Path | None = None,
) -> dict[str, np.ndarray]:
    """Run ``model`` on ``feeds``; return the graph outputs, or the named tensors in ``outputs``
    (any tensor of the graph, intermediate ones included)."""
    return Runner(model, outputs, base_dir=base_dir).run(feeds)


def _with_outputs(proto: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    existing = {o.name for o in proto.graph.output}
    extra = [name for name in names if name not in existing]
    if not extra:
        return proto
    widened = onnx.ModelProto()
    widened.CopyFrom(proto)
    known = {v.name: v for v in widened.graph.value_info}
    for name in extra:
        info = known.get(name)
        if info is not None and info.type.tensor_type.elem_type:
            widened.graph.output.append(info)
        else:
            widened.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return widened


def run_nodes(
    nodes: Iterable[gs.Node],
    feeds: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    *,
    opset_imports: Mapping[str, int],
    ir_version: int,
    functions: Sequence[onnx.FunctionProto] = (),
) -> dict[str, np.ndarray]:
    """Evaluate ``nodes`` (from any graph) with ``feeds`` bound to the tensors they read.

    Every tensor a node reads must be in ``feeds`` or produced by another of ``nodes``. Returns
    the tensors named in ``outputs``. One session evaluates the whole batch. Feeds are passed to
    onnxruntime as inputs, not serialized into the model, so a memory-mapped weight is read in
    place rather than copied; the session runs on one thread so results are reproducible.
    """
    node_protos = [OnnxExporter.export_node(node) for node in nodes]
    arrays = {name: np.asarray(value) for name, value in feeds.items()}
    graph = onnx.helper.make_graph(
        node_protos,
        "mapc_subgraph",
        inputs=[_value_info(name, array) for name, array in arrays.items()],
        outputs=[onnx.helper.make_empty_tensor_value_info(name) for name in outputs],
    )
    proto = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid(domain, version) for domain, version in opset_imports.items()],
        ir_version=ir_version,
        functions=list(functions),
    )
    options = session_options()
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise OnnxRuntimeError(f"onnxruntime cannot load the nodes: {_first_line(error)}") from None
    try:
        values = run_session(session, list(outputs), arrays, _quiet_run())
    except Exception as error:
        raise OnnxRuntimeError(f"onnxruntime failed to evaluate nodes: {_first_line(error)}") from None
    return dict(zip(outputs, values))


def _value_info(name: str, array: np.ndarray) -> onnx.ValueInfoProto:
    element = onnx.TensorProto.STRING if array.dtype.kind in "OUS" else onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
    return onnx.helper.make_tensor_value_info(name, element, list(array.shape))


def seeded_inputs(
    model: Model,
    *,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """Reproducible inputs for every graph input that is not also an initializer.

    Symbolic dims take their value from ``dims`` (by dim name) or :data:`DEFAULT_DIM`; dims
    written as expressions (``past_sequence_length + sequence_length``) are computed from those;
    ``shapes`` fixes whole inputs by name. Floats are standard normal, integers are 0 or 1
    (valid as token ids, masks, positions and indices into any non-empty axis), booleans random.
    """
    dims = dict(dims or {})
    shapes = dict(shapes or {})
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for tensor in model.graph.inputs:
        if isinstance(tensor, gs.Constant):
            continue
        if tensor.name in shapes:
            shape = [int(d) for d in shapes[tensor.name]]
        else:
            shape = [concrete_dim(d, dims) for d in (tensor.shape or [])]
        feeds[tensor.name] = random_array(rng, np.dtype(tensor.dtype or np.float32), shape)
    return feeds


def concrete_dim(dim: int | str | None, dims: Mapping[str, int]) -> int:
    """A dim's value: its number, its value in ``dims``, an expression (``past + seq``) evaluated
    with ``dims`` (symbols nobody fixed count as :data:`DEFAULT_DIM`), else DEFAULT_DIM."""
    if isinstance(dim, (int, np.integer)) and dim >= 0:
        return int(dim)
    if isinstance(dim, str):
        values = {symbol: int(dims.get(symbol, DEFAULT_DIM)) for symbol in symbols_of(dim)}
        value = evaluate_dim(dim, {**values, **dims})
        if value is not None:
            return value
    return DEFAULT_DIM


def random_array(rng: np.random.Generator, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
    """A random array of ``dtype``: normal floats, ints in {0, 1}, random booleans."""
    if dtype == np.bool_:
        return np.asarray(rng.random(shape) < 0.5)
    if np.issubdtype(dtype, np.floating) or is_bridged(dtype):
        return np.asarray(rng.standard_normal(shape)).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        return np.asarray(rng.integers(0, 2, size=shape), dtype=dtype)
    if dtype.kind in ("U", "S", "O"):
        return np.array(rng.choice(["a", "b"], size=shape), dtype=object)
    return np.zeros(shape, dtype=dtype)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
