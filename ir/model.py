"""The editable model: load an ONNX file into onnx-graphsurgeon, and save it back safely.

:class:`Model` is an onnx-graphsurgeon ``Graph`` plus everything else the file held (IR version,
opset imports, producer, doc strings, metadata, training info, model-local functions), so a
round trip loses nothing. Weights stored as external data stay on disk as
:class:`~mapc.ir.external.ExternalValues` until a pass reads them.

:func:`save` writes atomically (temporary files in the destination folder, then rename), is
deterministic (the same model and options give the same bytes), refuses to overwrite the model
it was loaded from, and writes external data beside the output when the input had some, when the
model would exceed protobuf's 2 GB limit, or when asked.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Union

import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.ir.tensor import LazyValues
from onnx_graphsurgeon.logger import G_LOGGER

from mapc.ir.errors import ModelError, OutputError
from mapc.ir.external import (
    ExternalRef,
    ExternalValues,
    copy_bytes,
    external_ref,
    iter_chunks,
    same_file,
    tensor_nbytes,
    uses_external_data,
)
from mapc.ir.graph import constant_nbytes, toposort
from mapc.ir.gs_compat import copy_lost_parts, remember_lost_parts
from mapc.ir.notes import Note
from mapc.ir.validate import validate_model

G_LOGGER.severity = G_LOGGER.CRITICAL + 1  # mapc reports problems itself; keep gs quiet


ModelSource = Union[str, os.PathLike, bytes, onnx.ModelProto]

#: Above this many bytes of weights, a model cannot be one protobuf; save it with external data.
INLINE_LIMIT = (2 << 30) - (64 << 20)
#: Tensors at least this large go to the external data file when one is written.
EXTERNAL_THRESHOLD = 1024
_PAGE = 4096


class Model:
    """An ONNX model being compiled: ``graph`` is an onnx-graphsurgeon Graph, edited in place.

    Attributes:
        graph: the main graph (nodes, tensors, inputs, outputs, subgraphs).
        opset_imports: domain -> version, in declaration order (``""`` is ai.onnx).
        functions: model-local functions as FunctionProtos, kept verbatim.
        base_dir: folder that external-data locations resolve against (None for in-memory models).
        source_path: the file this model was loaded from, which :func:`save` never overwrites.
    """

    def __init__(
        self,
        graph: gs.Graph,
        *,
        opset_imports: dict[str, int],
        header: onnx.ModelProto,
        functions: list[onnx.FunctionProto],
        base_dir: Path | None = None,
        source_path: Path | None = None,
        external_values: list[ExternalValues] | None = None,
    ) -> None:
        self.graph = graph
        self.opset_imports = dict(opset_imports)
        self.functions = functions
        self.base_dir = base_dir
        self.source_path = source_path
        self._header = header
        self._external_values = list(external_values or [])
        #: Warnings about what loading repaired (e.g. a domain the model forgot to import).
        self.load_notes: list[Note] = []
        self._names: set[str] | None = None
        self._next_suffix: dict[str, int] = {}

    # -- read access -------------------------------------------------------------------------
    @property
    def nodes(self) -> list[gs.Node]:
        """Top-level nodes of the main graph, in topological order after :func:`toposort`."""
        return self.graph.nodes

    @property
    def opset(self) -> int:
        """The ai.onnx opset version (0 for a model that imports only other domains)."""
        return self.opset_imports.get("", 0)

    @property
    def ir_version(self) -> int:
        return self._header.ir_version

    @ir_version.setter
    def ir_version(self, version: int) -> None:
        self._header.ir_version = version

    @property
    def producer(self) -> str | None:
        """``producer_name producer_version`` as written by the exporter, if any."""
        return " ".join(filter(None, [self._header.producer_name, self._header.producer_version])) or None

    @property
    def metadata(self) -> dict[str, str]:
        """The model's metadata_props as a dict (a copy; use :meth:`set_metadata` to change)."""
        return {entry.key: entry.value for entry in self._header.metadata_props}

    def set_metadata(self, key: str, value: str) -> None:
        for entry in self._header.metadata_props:
            if entry.key == key:
                entry.value = value
                return
        self._header.metadata_props.add(key=key, value=value)

    @property
    def external_sources(self) -> list[Path]:
        """External data files this model reads weights from."""
        return sorted({value.ref.path for value in self._external_values})

    # -- names ---------------------------------------------------------------------------------
    def fresh_name(self, base: str) -> str:
        """A tensor/node name not used anywhere in the model, derived deterministically from ``base``."""
        if self._names is None:
            self._names = set(self.graph.tensors().keys()) | {n.name for n in self.graph.nodes}
            for subgraph in self.graph.subgraphs(recursive=True):
                self._names |= set(subgraph.tensors().keys()) | {n.name for n in subgraph.nodes}
        if base not in self._names:
            self._names.add(base)
            return base
        for suffix in itertools.count(self._next_suffix.get(base, 1)):
            candidate = f"{base}_{suffix}"
            if candidate not in self._names:
                self._names.add(candidate)
                self._next_suffix[base] = suffix + 1  # names are never freed: later calls start here
                return candidate
        raise AssertionError("unreachable")

    def forget_names(self) -> None:
        """Drop the cached name set (call after edits made without :meth:`fresh_name`)."""
        self._names = None
        self._next_suffix = {}

    # -- copies and export ---------------------------------------------------------------------
    def adopt(self, other: Model) -> None:
        """Take over ``other``'s content (graph, header, opsets, functions, weights) in place,
        keeping this model's source path and folder: for passes that rebuild the whole model."""
        self.graph = other.graph
        self.opset_imports = dict(other.opset_imports)
        self.functions = other.functions
        self._header = other._header
        self._external_values = list(other._external_values)
        self.forget_names()

    def copy(self) -> Model:
        """An independent copy of the structure; weight values are shared, never duplicated."""
        graph = self.graph.copy()
        header = onnx.ModelProto()
        header.CopyFrom(self._header)
        functions = []
        for function in self.functions:
            duplicate = onnx.FunctionProto()
            duplicate.CopyFrom(function)
            functions.append(duplicate)
        copy_lost_parts(self.graph, graph)
        return Model(
            graph,
            opset_imports=self.opset_imports,
            header=header,
            functions=functions,
            base_dir=self.base_dir,
            source_path=self.source_path,
            external_values=self._external_values,
        )

    def to_proto(self, *, weights_above: int | None = None) -> onnx.ModelProto:
        """Export to a ModelProto. Untouched external weights stay references to their files.

        ``weights_above``: if given, initializers of the main graph larger than that many bytes
        are exported as typed graph inputs without data: a skeleton for shape inference and
        checking that never copies weights.
        """
        self._restore_untouched_weights()
        if self.opset:
            self.graph.opset = self.opset
        model = onnx.ModelProto()
        model.CopyFrom(self._header)
        _export_graph_into(self.graph, model.graph, weights_above)
        if self.ir_version < 4:
            _list_initializers_as_inputs(model.graph)
        model.functions.extend(self.functions)
        del model.opset_import[:]
        for domain, version in self._used_opsets().items():
            model.opset_import.add(domain=domain, version=version)
        return model

    def _used_opsets(self) -> dict[str, int]:
        opsets = dict(self.opset_imports)
        graphs = [self.graph, *self.graph.subgraphs(recursive=True)]
        for domain in sorted({node.domain or "" for graph in graphs for node in graph.nodes}):
            opsets.setdefault(domain, 1)
        for function in self.functions:
            opsets.setdefault(function.domain, 1)
        return opsets

    def _restore_untouched_weights(self) -> None:
        """Swap memory-mapped weights that no pass replaced back to their lazy file references."""
        loaded = {id(value.loaded): value for value in self._external_values if value.loaded is not None}
        if not loaded:
            return
        for graph in (self.graph, *self.graph.subgraphs(recursive=True)):
            for tensor in graph.tensors().values():
                if isinstance(tensor, gs.Constant):
                    lazy = loaded.get(id(tensor._values))
                    if lazy is not None and lazy.loaded is tensor._values:
                        tensor._values = lazy


# -- loading ---------------------------------------------------------------------------------------


def load(source: ModelSource, *, base_dir: str | os.PathLike | None = None) -> Model:
    """Load and validate an ONNX model from a path, serialized bytes or a ModelProto.

    External data is resolved inside the model's folder (or ``base_dir``) and left on disk.
    Raises :class:`~mapc.ir.errors.ModelError` with a one-line reason if the model is unusable.
    """
    source_path: Path | None = None
    if isinstance(source, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        proto = _parse(bytes(source), "the given bytes")
    elif isinstance(source, (str, os.PathLike)):
        source_path = Path(source)
        proto = _parse(_read_model_file(source_path), str(source_path))
        base_dir = source_path.parent if base_dir is None else base_dir
    else:
        raise TypeError(f"cannot load a model from {type(source).__name__}")
    folder = Path(base_dir).resolve() if base_dir is not None else None
    notes = validate_model(proto, folder)
    model = _from_proto(proto, folder, source_path.resolve() if source_path else None)
    model.load_notes = notes
    return model


def _read_model_file(path: Path) -> bytes:
    try:
        if path.is_dir():
            raise ModelError(f"{path} is a directory, not an ONNX file")
        size = path.stat().st_size
        if size >= 2 << 30:
            raise ModelError(f"{path} is {size} bytes; an ONNX protobuf must stay under 2 GB (use external data)")
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"no such file: {path}") from None
    except PermissionError:
        raise ModelError(f"cannot read {path}: permission denied") from None
    except OSError as error:
        raise ModelError(f"cannot read {path}: {error.strerror or error}") from None


def _parse(data: bytes, what: str) -> onnx.ModelProto:
    if not data:
        raise ModelError(f"{what} is empty, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise ModelError(f"{what} is not an ONNX model (protobuf decoding failed: {error})") from None
    return proto


def _from_proto(proto: onnx.ModelProto, base_dir: Path | None, source_path: Path | None) -> Model:
    functions = []
    for function in proto.functions:
        duplicate = onnx.FunctionProto()
        duplicate.CopyFrom(function)
        functions.append(duplicate)
    opsets = {("" if e.domain == "ai.onnx" else e.domain): e.version for e in proto.opset_import}
    try:
        graph = gs.import_onnx(proto)
    except Exception as error:  # onnx-graphsurgeon raises bare exceptions on malformed graphs
        raise ModelError(f"cannot import the graph: {str(error).strip().splitlines()[0]}") from None
    graph.functions = []
    remember_lost_parts(proto.graph, graph)
    proto.ClearField("graph")
    del proto.functions[:]
    del proto.opset_import[:]
    external_values = _make_external_weights_lazy(graph, base_dir)
    model = Model(
        graph,
        opset_imports=opsets,
        header=proto,
        functions=functions,
        base_dir=base_dir,
        source_path=source_path,
        external_values=external_values,
    )
    try:
        toposort(model.graph)
    except ValueError as error:  # validate_model already refused cycles; this guards the import
        raise ModelError(str(error)) from None
    return model


def _make_external_weights_lazy(graph: gs.Graph, base_dir: Path | None) -> list[ExternalValues]:
    made = []
    for each in (graph, *graph.subgraphs(recursive=True)):
        for tensor in each.tensors().values():
            values = getattr(tensor, "_values", None)
            if isinstance(values, LazyValues) and uses_external_data(values.tensor):
                assert base_dir is not None  # validate_model refused external data without a folder
                lazy = ExternalValues(values.tensor, external_ref(values.tensor, base_dir))
                tensor._values = lazy
                made.append(lazy)
    return made


# -- export ----------------------------------------------------------------------------------------


def _export_graph_into(graph: gs.Graph, target: onnx.GraphProto, weights_above: int | None = None) -> None:
    """Fill ``target`` from ``graph`` using onnx-graphsurgeon's exporters, copying each weight once.

    Constants larger than ``weights_above`` bytes become data-less typed inputs (see to_proto).
    """
    target.name = graph.name or "main_graph"
    if graph.doc_string:
        target.doc_string = graph.doc_string
    target.node.extend(OnnxExporter.export_node(node) for node in graph.nodes)
    target.input.extend(OnnxExporter.export_value_info_proto(t, do_type_check=False) for t in graph.inputs)
    target.output.extend(OnnxExporter.export_value_info_proto(t, do_type_check=False) for t in graph.outputs)
    io_names = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant):
            if weights_above is not None and constant_nbytes(tensor) > weights_above:
                target.input.append(OnnxExporter.export_value_info_proto(tensor, do_type_check=False))
            elif type(tensor._values).__name__ == "SparseValues":
                target.sparse_initializer.append(OnnxExporter.export_sparse_tensor_proto(tensor))
            else:
                target.initializer.append(OnnxExporter.export_tensor_proto(tensor))
        elif tensor.name not in io_names and (tensor.dtype is not None or tensor.shape is not None):
            target.value_info.append(OnnxExporter.export_value_info_proto(tensor, do_type_check=False))


def _list_initializers_as_inputs(graph: onnx.GraphProto) -> None:
    """IR versions before 4 require every initializer to be a graph input too (onnx-graphsurgeon
    drops such inputs on import); add the missing ones, typed like their initializers."""
    listed = {value.name for value in graph.input}
    for tensor in graph.initializer:
        if tensor.name not in listed:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))


# -- saving ----------------------------------------------------------------------------------------


def save(
    model: Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically and deterministically; return the path written.

    ``external_data``: True to always write weights to ``<name>.data`` beside the output, False
    to embed them, None (default) to do so when the input had external data or the weights would
    not fit in one protobuf. Raises :class:`~mapc.ir.errors.OutputError` if ``path`` is the model's
    own source file, or the data file would overwrite one the model reads from.
    """
    out = Path(path)
    if out.is_dir():
        raise OutputError(f"output {out} is a directory")
    if model.source_path is not None and (out.resolve() == model.source_path or same_file(out, model.source_path)):
        raise OutputError(f"refusing to overwrite the input model {model.source_path}; choose another output path")
    proto = model.to_proto()
    tensors = list(_initializers(proto.graph))
    sources = {id(t): _source_ref(t, model.base_dir) for t in tensors}
    total = sum(_tensor_size(t, sources[id(t)]) for t in tensors)
    if external_data is None:
        # the input's external weights may all have been replaced (quantized): it still had some
        external_data = bool(model.external_sources) or any(ref is not None for ref in sources.values()) or total > INLINE_LIMIT
    elif not external_data and total > INLINE_LIMIT:
        raise OutputError(f"the model holds {total} bytes of weights; it must be saved with external data")

    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist")
    temporaries: list[Path] = []
    try:
        renames: list[tuple[Path, Path]] = []
        if external_data:
            data_path = out.with_name(out.name + ".data")
            for source in model.external_sources:
                if same_file(data_path, source):
                    raise OutputError(f"refusing to overwrite {data_path}: the input model reads its weights from it")
            data_tmp = _temporary(folder, data_path.name, temporaries)
            with open(data_tmp, "wb") as handle:
                _write_external(tensors, sources, handle, data_path.name)
                _flush(handle)
            renames.append((data_tmp, data_path))
        renames.append(_write_temporary(folder, out, proto.SerializeToString(deterministic=True), temporaries))
        _rename_all(renames, temporaries)
    except OSError as error:
        raise OutputError(f"cannot write {out}: {error.strerror or error}") from None
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
    return out


def save_sharing_weights(models: Mapping[str | os.PathLike, Model], data_name: str) -> list[Path]:
    """Write several models into one folder with one external data file ``data_name`` they share.

    A weight whose bytes (and element type) an earlier model already wrote is stored once and
    every model points at the same bytes: two graphs compiled from one checkpoint (an LLM's
    prefill and decode steps) keep one copy of the weights. Atomic like :func:`save`: every file
    is written to a temporary name first and nothing is renamed until all are written.
    """
    outputs = [(Path(path), model) for path, model in models.items()]
    folders = {path.parent for path, _ in outputs}
    if len(folders) != 1:
        raise OutputError("models sharing a weight file must be written to one folder")
    folder = folders.pop() if str(next(iter(folders), "")) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist")
    data_path = folder / data_name
    for path, model in outputs:
        if model.source_path is not None and (path.resolve() == model.source_path or same_file(path, model.source_path)):
            raise OutputError(f"refusing to overwrite the input model {model.source_path}; choose another output folder")
        if any(same_file(data_path, source) for source in model.external_sources):
            raise OutputError(f"refusing to overwrite {data_path}: the input model reads its weights from it")
    temporaries: list[Path] = []
    try:
        renames: list[tuple[Path, Path]] = []
        data_tmp = _temporary(folder, data_name, temporaries)
        written: dict[tuple[int, bytes], tuple[int, int]] = {}
        serialized = []
        with open(data_tmp, "wb") as handle:
            offset = 0
            for path, model in outputs:
                proto = model.to_proto()
                for tensor in _initializers(proto.graph):
                    ref = _source_ref(tensor, model.base_dir)
                    if ref is None and (tensor.ByteSize() < EXTERNAL_THRESHOLD or tensor.data_type == onnx.TensorProto.STRING):
                        continue
                    raw = None if ref is not None else _raw_bytes(tensor)
                    digest = hashlib.sha256()
                    for chunk in (iter_chunks(ref) if ref is not None else (raw,)):
                        digest.update(chunk)
                    key = (tensor.data_type, digest.digest())
                    if key not in written:
                        start, length = _append_aligned(handle, offset, ref, raw)
                        written[key] = (start, length)
                        offset = start + length
                    _point_at(tensor, data_name, *written[key])
                serialized.append((path, proto.SerializeToString(deterministic=True)))
            _flush(handle)
        renames.append((data_tmp, data_path))
        renames += [_write_temporary(folder, path, data, temporaries) for path, data in serialized]
        _rename_all(renames, temporaries)
    except OSError as error:
        raise OutputError(f"cannot write {data_path}: {error.strerror or error}") from None
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
    return [path for path, _ in outputs]


def _initializers(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every initializer of ``graph`` and its subgraphs, in a deterministic order."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _initializers(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _initializers(subgraph)


def _source_ref(tensor: onnx.TensorProto, base_dir: Path | None) -> ExternalRef | None:
    if not uses_external_data(tensor):
        return None
    if base_dir is None:
        raise ModelError(f"tensor {tensor.name!r} refers to external data but the model has no folder")
    return external_ref(tensor, base_dir)


def _tensor_size(tensor: onnx.TensorProto, ref: ExternalRef | None) -> int:
    """Bytes of a tensor's data, from its dims and type (``ByteSize`` walks the whole message)."""
    if ref is not None:
        return ref.length
    return tensor_nbytes(tensor) if tensor.data_type != onnx.TensorProto.STRING else tensor.ByteSize()


def _write_external(
    tensors: list[onnx.TensorProto],
    sources: dict[int, ExternalRef | None],
    handle: BinaryIO,
    location: str,
) -> None:
    """Move every large (or already external) tensor's bytes into ``handle``, rewriting its entry."""
    offset = 0
    for tensor in tensors:
        ref = sources[id(tensor)]
        if ref is None and (tensor.ByteSize() < EXTERNAL_THRESHOLD or tensor.data_type == onnx.TensorProto.STRING):
            continue
        start, length = _append_aligned(handle, offset, ref, None if ref is not None else _raw_bytes(tensor))
        _point_at(tensor, location, start, length)
        offset = start + length


def _append_aligned(handle: BinaryIO, offset: int, ref: ExternalRef | None, raw: bytes | None) -> tuple[int, int]:
    """Append a tensor's bytes (copied from ``ref`` or ``raw``) at ``offset`` padded to 64 bytes,
    or to a page for large ones (memory-mappable); return (where they start, their length)."""
    length = ref.length if ref is not None else len(raw or b"")
    padding = -offset % (_PAGE if length >= 16 * _PAGE else 64)
    handle.write(b"\0" * padding)
    if ref is not None:
        copy_bytes(ref, handle)
    else:
        handle.write(raw or b"")
    return offset + padding, length


def _raw_bytes(tensor: onnx.TensorProto) -> bytes:
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor)).raw_data


def _point_at(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        tensor.ClearField(field)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)


def _temporary(folder: Path, final_name: str, registry: list[Path]) -> Path:
    for attempt in itertools.count():
        candidate = folder / f".{final_name}.{os.getpid()}.{attempt}.tmp"
        try:
            descriptor = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(descriptor)
        registry.append(candidate)
        return candidate
    raise AssertionError("unreachable")


def _write_temporary(folder: Path, final: Path, data: bytes, registry: list[Path]) -> tuple[Path, Path]:
    """Write ``data`` to a temporary file for ``final``; return (temporary, final) for :func:`_rename_all`."""
    temporary = _temporary(folder, final.name, registry)
    with open(temporary, "wb") as handle:
        handle.write(data)
        _flush(handle)
    return temporary, final


def _rename_all(renames: list[tuple[Path, Path]], registry: list[Path]) -> None:
    """Give every written temporary its final name (once all are written: nothing half-saved)."""
    for temporary, final in renames:
        os.replace(temporary, final)
        registry.remove(temporary)


def _flush(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
