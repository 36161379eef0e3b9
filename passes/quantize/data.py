"""Calibration data: where the samples come from, checked against the model's inputs.

Accepted forms of ``--calibration``:

* a directory of ``.npz`` files, one sample per file, keys = input names (sorted by file name);
* a directory of ``.npy`` files named ``<input>.npy``, or one ``.npz`` file whose keys are input
  names: each array holds the samples stacked along a new leading axis (an array of the input's
  own rank is a single sample);
* one ``.npy`` file for a single-input model, stacked the same way;
* ``random``: seeded random inputs shaped like real ones (:func:`mapc.ir.verification_samples`
  at unit float scale: token ids over the vocabulary of the table they index, padded masks,
  normal floats, other integers 0 or 1). The scales then say nothing about real data; mapc
  warns loudly.

Keys may carry an ``input:`` prefix (mapc's fixture files); ``output:`` keys and names that
are not inputs are ignored. Samples are read one at a time (``.npy`` files are memory-mapped),
so a large data set is never held in memory.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, UsageError, is_static_dim, verification_samples

RANDOM = "random"


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...] | None


@dataclass
class CalibrationData:
    """A sequence of samples (``{input name: array}``), read lazily."""

    description: str
    count: int
    reader: Callable[[int], dict[str, np.ndarray]]
    is_random: bool = False

    def __len__(self) -> int:
        return self.count

    def sample(self, index: int) -> dict[str, np.ndarray]:
        return self.reader(index)

    def samples(self, indices: Sequence[int]) -> Iterator[dict[str, np.ndarray]]:
        for index in indices:
            yield self.reader(index)

    def split(self, holdout: float) -> tuple[list[int], list[int], bool]:
        """Indices for calibration and for the accuracy check (the last ``holdout`` fraction,
        at least one sample). With a single sample both use it; the flag says so."""
        if self.count == 1:
            return [0], [0], True
        held = min(self.count - 1, max(1, int(round(self.count * holdout)))) if holdout > 0 else 0
        calibration = list(range(self.count - held))
        return calibration, list(range(self.count - held, self.count)) or calibration, held == 0


def model_inputs(model: Model) -> list[InputSpec]:
    """The graph inputs a sample must provide (initializers listed as inputs excluded)."""
    return [
        InputSpec(t.name, np.dtype(t.dtype or np.float32), tuple(t.shape) if t.shape is not None else None)
        for t in model.graph.inputs
        if not isinstance(t, gs.Constant)
    ]


def open_calibration(
    spec: str,
    model: Model,
    *,
    seed: int = 0,
    random_samples: int = 8,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> CalibrationData:
    """Open ``spec`` (a path or ``random``) as calibration data for ``model``.

    Raises :class:`UsageError` with a one-line reason for a missing or unreadable path, a sample
    that lacks an input, or an array whose dtype or static dims do not fit the input.
    """
    inputs = model_inputs(model)
    if not inputs:
        raise UsageError("the model has no graph inputs to calibrate with")
    if spec == RANDOM:
        return _random(model, seed, random_samples, dims or {}, input_shapes or {})
    path = Path(spec)
    if not path.exists():
        raise UsageError(f"calibration data {spec!r}: no such file or directory (give a folder of .npz samples, a .npz/.npy file, or 'random')")
    if path.is_dir():
        npz = sorted(path.glob("*.npz"))
        if npz:
            return _per_file(npz, inputs)
        npy = sorted(path.glob("*.npy"))
        if npy:
            return _stacked({_strip(p.stem): _load_npy(p) for p in npy}, inputs, str(path))
        raise UsageError(f"calibration data {spec!r}: the folder holds no .npz or .npy files")
    if path.suffix == ".npz":
        return _stacked(_load_npz(path), inputs, str(path))
    if path.suffix == ".npy":
        if len(inputs) != 1:
            raise UsageError(f"calibration data {spec!r}: one .npy file can only feed a single-input model; this one has {len(inputs)} inputs (use a .npz)")
        return _stacked({inputs[0].name: _load_npy(path)}, inputs, str(path))
    raise UsageError(f"calibration data {spec!r}: expected a folder, a .npz or a .npy file, or 'random'")


def _random(model: Model, seed: int, count: int, dims: Mapping[str, int], shapes: Mapping[str, Sequence[int]]) -> CalibrationData:
    """``count`` samples from :func:`mapc.ir.verification_samples` with floats at unit scale:
    token ids over the vocabulary of the table they index, masks padded at the end, the start,
    a fully masked row or at random, other integers 0 or 1; one sample at a time."""
    if count < 1:
        raise UsageError("random calibration needs at least one sample (random_samples >= 1)")
    fixed_dims = {name: int(value) for name, value in dims.items()}

    def read(index: int) -> dict[str, np.ndarray]:
        [sample] = verification_samples(model, seed=seed, dims=fixed_dims, shapes=shapes, count=1, start=index, float_scales=(1.0,))
        return sample.feeds

    return CalibrationData(f"{count} random samples (seed {seed})", count, read, is_random=True)


def _strip(key: str) -> str:
    return key[len("input:"):] if key.startswith("input:") else key


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {_strip(key): archive[key] for key in archive.files if not key.startswith("output:")}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise UsageError(f"calibration data {str(path)!r} is not a readable .npz file ({error})") from None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise UsageError(f"calibration data {str(path)!r} is not a readable .npy file ({error})") from None


def _per_file(files: list[Path], inputs: list[InputSpec]) -> CalibrationData:
    def read(index: int) -> dict[str, np.ndarray]:
        path = files[index]
        arrays = _load_npz(path)
        return {spec.name: _fit(arrays, spec, str(path)) for spec in inputs}

    read(0)  # fail early, with the file name, if the first sample does not fit
    return CalibrationData(f"{len(files)} samples from {files[0].parent}", len(files), read)


def _stacked(arrays: dict[str, np.ndarray], inputs: list[InputSpec], where: str) -> CalibrationData:
    counts = {}
    for spec in inputs:
        if spec.name not in arrays:
            raise UsageError(f"calibration data {where!r} has no array for input {spec.name!r} (it has: {', '.join(sorted(arrays)) or 'nothing'})")
        array = arrays[spec.name]
        rank = len(spec.shape) if spec.shape is not None else array.ndim
        if array.ndim == rank + 1:
            counts[spec.name] = array.shape[0]
        elif array.ndim == rank:
            counts[spec.name] = None
        else:
            raise UsageError(f"calibration data {where!r}: input {spec.name!r} has rank {rank}, but its array has shape {list(array.shape)}")
    stacked = {n for n, c in counts.items() if c is not None}
    sizes = {counts[n] for n in stacked}
    if len(sizes) > 1:
        raise UsageError(f"calibration data {where!r}: inputs hold different numbers of samples ({', '.join(f'{n}: {counts[n]}' for n in sorted(stacked))})")
    count = sizes.pop() if sizes else 1
    if count < 1:
        raise UsageError(f"calibration data {where!r} holds no samples")

    def read(index: int) -> dict[str, np.ndarray]:
        sample = {name: (arrays[name][index] if name in stacked else arrays[name]) for name in counts}
        return {spec.name: _fit(sample, spec, where) for spec in inputs}

    read(0)
    return CalibrationData(f"{count} samples from {where}", count, read)


def _fit(arrays: Mapping[str, np.ndarray], spec: InputSpec, where: str) -> np.ndarray:
    if spec.name not in arrays:
        raise UsageError(f"calibration sample {where!r} has no array for input {spec.name!r} (it has: {', '.join(sorted(arrays)) or 'nothing'})")
    array = np.asarray(arrays[spec.name])
    if array.dtype != spec.dtype:
        same_kind = {array.dtype.kind, spec.dtype.kind} <= {"i", "u"} or array.dtype.kind == spec.dtype.kind
        if not same_kind:
            raise UsageError(f"calibration sample {where!r}: input {spec.name!r} needs {spec.dtype}, the array is {array.dtype}")
        array = array.astype(spec.dtype)
    if spec.shape is not None:
        if array.ndim != len(spec.shape):
            raise UsageError(f"calibration sample {where!r}: input {spec.name!r} has rank {len(spec.shape)}, the array has shape {list(array.shape)}")
        for axis, (want, have) in enumerate(zip(spec.shape, array.shape)):
            if is_static_dim(want) and want != have:
                raise UsageError(f"calibration sample {where!r}: input {spec.name!r} needs size {want} on axis {axis}, the array has {have}")
    return np.ascontiguousarray(array)
