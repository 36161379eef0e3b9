"""Running an onnxruntime session on element types its numpy bridge lacks (bfloat16, float8).

onnxruntime's ``session.run`` accepts and returns numpy arrays, but only for numpy's own
types: a bfloat16 input (an ml_dtypes array) is refused and a bfloat16 output raises. onnx maps
these types to ml_dtypes, as mapc's graphs do, so :func:`run_session` passes such arrays as
OrtValues of their ONNX type (the same bytes) and copies such outputs back into ml_dtypes arrays.
Everything else takes onnxruntime's ordinary path.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

#: ONNX element types onnx maps to ml_dtypes, one element per byte or two (not packed).
BRIDGED_TYPES = {
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.FLOAT8E4M3FN,
    onnx.TensorProto.FLOAT8E4M3FNUZ,
    onnx.TensorProto.FLOAT8E5M2,
    onnx.TensorProto.FLOAT8E5M2FNUZ,
}
_BY_DTYPE = {np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t)): t for t in BRIDGED_TYPES}
_BY_NAME = {f"tensor({onnx.TensorProto.DataType.Name(t).lower()})": t for t in BRIDGED_TYPES}


def is_bridged(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is an ml_dtypes float that onnxruntime's numpy bridge does not take."""
    return np.dtype(dtype) in _BY_DTYPE


def run_session(session: ort.InferenceSession, outputs: Sequence[str], feeds: Mapping[str, np.ndarray], options: ort.RunOptions) -> list[np.ndarray]:
    """``session.run(outputs, feeds, options)``, also for bfloat16 and float8 inputs and outputs."""
    kinds = {o.name: o.type for o in session.get_outputs()}
    if not any(is_bridged(np.asarray(v).dtype) for v in feeds.values()) and not any(kinds.get(n) in _BY_NAME for n in outputs):
        return session.run(list(outputs), dict(feeds), options)
    values = {name: _to_ort(np.asarray(value)) for name, value in feeds.items()}
    return [_from_ort(value) for value in session.run_with_ort_values(list(outputs), values, options)]


def _to_ort(array: np.ndarray) -> ort.OrtValue:
    if not is_bridged(array.dtype):
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
    raw = np.ascontiguousarray(array).view(np.uint16 if array.dtype.itemsize == 2 else np.uint8)
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, _BY_DTYPE[array.dtype])


def _from_ort(value: ort.OrtValue) -> np.ndarray:
    element = value.element_type() if value.is_tensor() else None
    if element not in BRIDGED_TYPES:
        return value.numpy()
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(element))
    size = value.tensor_size_in_bytes()
    raw = (ctypes.c_uint8 * size).from_address(value.data_ptr()) if size else b""
    return np.frombuffer(bytes(raw), dtype=dtype).reshape(value.shape()).copy()
