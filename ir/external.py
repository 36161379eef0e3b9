"""External tensor data: safe location resolution, lazy access and streaming copies.

ONNX models above 2 GB keep their weights in side files named by each tensor's
``external_data`` entries (``location``, ``offset``, ``length``). This module:

* resolves a location strictly inside the model's folder, refusing absolute paths, ``..``
  segments and symlinks that lead outside it (:func:`resolve_location`);
* represents such a tensor as :class:`ExternalValues`, an onnx-graphsurgeon ``LazyValues`` whose
  ``load()`` returns a read-only ``numpy.memmap``, so a weight that no pass reads is never copied
  into Python memory and one that is read is paged in by the OS, not duplicated;
* copies a tensor's bytes from its source file to a destination file in bounded chunks
  (:func:`copy_bytes`), which is how :func:`mapc.ir.save` writes untouched weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

import numpy as np
import onnx
import onnx.numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues

from mapc.ir.errors import ModelError

#: Chunk size for streaming copies and hashes; bounds memory whatever the tensor size.
CHUNK_BYTES = 16 << 20

# Sub-byte element types are packed in files; they cannot be memory-mapped element by element
# and are read through onnx instead. Strings have no fixed width at all.
_BITS_PER_ELEMENT = {
    getattr(onnx.TensorProto, name): bits
    for name, bits in (("UINT4", 4), ("INT4", 4), ("FLOAT4E2M1", 4), ("UINT2", 2), ("INT2", 2))
    if hasattr(onnx.TensorProto, name)
}
_NOT_MAPPABLE = set(_BITS_PER_ELEMENT) | {onnx.TensorProto.STRING}


@dataclass(frozen=True)
class ExternalRef:
    """Where one tensor's bytes live: an absolute, validated file path, offset and length."""

    path: Path
    offset: int
    length: int


def uses_external_data(tensor: onnx.TensorProto) -> bool:
    """True if ``tensor`` keeps its bytes in a side file rather than inside the model."""
    return tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.EXTERNAL


def tensor_nbytes(tensor: onnx.TensorProto) -> int:
    """Number of bytes ``tensor``'s data occupies in raw (little-endian, packed) form."""
    count = int(np.prod(tensor.dims, dtype=np.int64)) if len(tensor.dims) else 1
    bits = _BITS_PER_ELEMENT.get(tensor.data_type)
    if bits is not None:
        return (count * bits + 7) // 8
    return count * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize


def resolve_location(base_dir: Path, location: str, tensor_name: str) -> Path:
    """Return the absolute path of ``location`` if it stays inside ``base_dir``.

    Raises :class:`ModelError` for empty, absolute or ``..`` locations, and for locations that
    leave ``base_dir`` once symlinks are resolved.
    """
    where = f"external data of tensor {tensor_name!r}"
    if not location:
        raise ModelError(f"{where} has no 'location'")
    posix, windows = PurePosixPath(location), PureWindowsPath(location)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise ModelError(f"{where} uses an absolute path {location!r}; only paths inside the model's folder are allowed")
    if ".." in posix.parts or ".." in windows.parts:
        raise ModelError(f"{where} points outside the model's folder: {location!r}")
    root = base_dir.resolve()
    target = (root / location).resolve()
    if target != root and root not in target.parents:
        raise ModelError(f"{where} resolves outside the model's folder (through a symlink): {location!r}")
    return target


def external_ref(tensor: onnx.TensorProto, base_dir: Path) -> ExternalRef:
    """Validate ``tensor``'s external-data entries against the file system and return them."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    path = resolve_location(base_dir, info.get("location", ""), tensor.name)
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ModelError(f"external data of tensor {tensor.name!r} has a non-integer offset or length") from None
    expected = tensor_nbytes(tensor)
    if length is None:
        length = expected
    if offset < 0 or length < 0:
        raise ModelError(f"external data of tensor {tensor.name!r} has a negative offset or length")
    if length != expected:
        raise ModelError(
            f"external data of tensor {tensor.name!r} holds {length} bytes but its shape and type need {expected}"
        )
    if not path.is_file():
        raise ModelError(f"external data file {info.get('location')!r} of tensor {tensor.name!r} does not exist")
    size = path.stat().st_size
    if offset + length > size:
        raise ModelError(
            f"external data of tensor {tensor.name!r} ends at byte {offset + length} "
            f"but {info.get('location')!r} has only {size} bytes"
        )
    return ExternalRef(path, offset, length)


class ExternalValues(LazyValues):
    """Lazy values of a tensor stored in an external file; ``load()`` memory-maps, never copies.

    ``tensor`` stays the original (data-less) TensorProto, so exporting a graph whose constant was
    never replaced keeps pointing at the source bytes instead of embedding them.
    """

    def __init__(self, tensor: onnx.TensorProto, ref: ExternalRef) -> None:
        super().__init__(tensor)
        self.ref = ref
        #: The read-only array ``load()`` returned, so export can recognise it as unchanged.
        self.loaded: np.ndarray | None = None

    def load(self) -> np.ndarray:
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(self.tensor.data_type)
        shape = tuple(int(d) for d in self.tensor.dims)
        if self.tensor.data_type in _NOT_MAPPABLE:
            array = self._load_through_onnx()
        elif self.ref.length == 0:
            array = np.zeros(shape, dtype=np_dtype)
        else:
            array = np.memmap(self.ref.path, dtype=np_dtype, mode="r", offset=self.ref.offset, shape=shape)
        array.setflags(write=False)
        self.loaded = array
        return array

    def _load_through_onnx(self) -> np.ndarray:
        proto = onnx.TensorProto()
        proto.CopyFrom(self.tensor)
        del proto.external_data[:]
        proto.data_location = onnx.TensorProto.DEFAULT
        with open(self.ref.path, "rb") as handle:
            handle.seek(self.ref.offset)
            proto.raw_data = handle.read(self.ref.length)
        return onnx.numpy_helper.to_array(proto)


def iter_chunks(ref: ExternalRef):
    """Yield ``ref``'s bytes in bounded chunks (for copies and hashes without loading)."""
    remaining = ref.length
    with open(ref.path, "rb") as source:
        source.seek(ref.offset)
        while remaining:
            chunk = source.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                raise ModelError(f"external data file {ref.path.name!r} ended early")
            remaining -= len(chunk)
            yield chunk


def copy_bytes(ref: ExternalRef, destination: BinaryIO) -> None:
    """Append the bytes ``ref`` names to ``destination`` in bounded chunks."""
    for chunk in iter_chunks(ref):
        destination.write(chunk)


def same_file(a: Path, b: Path) -> bool:
    """True if ``a`` and ``b`` name the same existing file (hard links and symlinks included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
