"""Range collection: run the float model on calibration samples and summarise tensors.

One onnxruntime session exposes every tensor to calibrate as an output. Each sample is run and
its activations are folded into running statistics, then dropped: memory holds one sample's
activations at most (and less when the tensors are fetched in chunks under
``memory_budget_mb``), never all samples' activations.

The session lets onnxruntime optimize the float graph (tensors exposed as outputs are kept).

* Pass 1 (always): streaming min/max of finite values, counts of non-finite values and of
  values at or below the attention-mask fill threshold, and per-channel sums for bias
  correction.
* Pass 2 (histogram methods only): a fixed-grid histogram per tensor over the pass-1 range
  (widened to contain 0, with 0 on a bin edge so the two sides can be folded for symmetric
  searches).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mapc.ir import Model, Runner, is_static_dim
from mapc.passes.quantize.data import CalibrationData

#: Values at or below this are attention-mask fills (finfo.min, -1e9, -1e4 plus a score, -inf),
#: not activations.
MASK_FILL = -9e3
DEFAULT_BINS = 2048

Progress = Callable[[str, int, int], None]


@dataclass
class TensorStats:
    """Running statistics of one tensor over the calibration samples."""

    count: int = 0
    nonfinite: int = 0
    negative_infinite: int = 0
    low: float = math.inf
    high: float = -math.inf
    #: min over finite values above :data:`MASK_FILL` (the range once mask fills are ignored).
    body_low: float = math.inf
    below_fill: int = 0
    histogram: np.ndarray | None = None
    #: exact zeros among the histogrammed values (0 is always on the quantization grid).
    zeros: int = 0
    #: the histogram's grid: first edge and bin width (0 is an edge).
    first_edge: float = 0.0
    bin_width: float = 0.0
    channel_sum: np.ndarray | None = None
    channel_count: int = 0

    @property
    def observed(self) -> bool:
        return self.count > 0

    @property
    def single_valued(self) -> bool:
        return self.observed and self.low == self.high

    @property
    def mask_like(self) -> bool:
        """Dominated by mask fills: values at or below about -1e4 (or -inf) that stretch the
        range more than a hundredfold beyond where the other values lie."""
        if self.negative_infinite:
            return True
        if not self.below_fill or self.low > MASK_FILL:
            return False
        body = max(self.high, 0.0) - min(self.body_low if self.body_low != math.inf else 0.0, 0.0)
        return body < 0.01 * (max(self.high, 0.0) - self.low)

    @property
    def channel_mean(self) -> np.ndarray | None:
        if self.channel_sum is None or not self.channel_count:
            return None
        return self.channel_sum / self.channel_count

    def update_range(self, values: np.ndarray, channel_axis: int | None = None) -> None:
        if values.size == 0:
            return
        low, high = float(values.min()), float(values.max())
        finite_values = values
        if not (math.isfinite(low) and math.isfinite(high)):
            finite = np.isfinite(values)
            bad = int(values.size - np.count_nonzero(finite))
            self.nonfinite += bad
            self.negative_infinite += int(np.count_nonzero(values == -np.inf))
            finite_values = values[finite]
            if finite_values.size == 0:
                return
            low, high = float(finite_values.min()), float(finite_values.max())
        self.count += int(finite_values.size)
        self.low, self.high = min(self.low, low), max(self.high, high)
        if low <= MASK_FILL:
            body = finite_values > MASK_FILL
            self.below_fill += int(finite_values.size - np.count_nonzero(body))
            if body.any():
                self.body_low = min(self.body_low, float(finite_values[body].min()))
        else:
            self.body_low = min(self.body_low, low)
        if channel_axis is not None and values.ndim and finite_values is values:
            self._update_channels(values, channel_axis)

    def _update_channels(self, values: np.ndarray, axis: int) -> None:
        axis = axis % values.ndim
        others = tuple(a for a in range(values.ndim) if a != axis)
        sums = values.sum(axis=others, dtype=np.float64)
        if self.channel_sum is None:
            self.channel_sum = sums
        elif self.channel_sum.shape == sums.shape:
            self.channel_sum += sums
        else:
            return
        self.channel_count += values.size // max(values.shape[axis], 1)

    def start_histogram(self, bins: int) -> None:
        """Fix the grid: ``bins`` bins over [min(low, 0), max(high, 0)], 0 on an edge."""
        low, high = min(self.low, 0.0), max(self.high, 0.0)
        width = (high - low) / bins
        first = math.floor(low / width)
        last = math.ceil(high / width)
        self.first_edge = first * width
        self.bin_width = width
        self.histogram = np.zeros(max(last - first, 1), dtype=np.int64)

    def update_histogram(self, values: np.ndarray) -> None:
        if self.histogram is None or values.size == 0:
            return
        if self.nonfinite:
            values = values[np.isfinite(values)]
        if max(abs(self.first_edge), abs(self.high)) > 1e30:
            values = values.astype(np.float64)
        bins = len(self.histogram)
        counts, _ = np.histogram(values, bins=bins, range=(self.first_edge, self.first_edge + bins * self.bin_width))
        self.histogram += counts
        self.zeros += int(values.size - np.count_nonzero(values))

    @property
    def zero_bin(self) -> int:
        """Index of the histogram edge at 0."""
        return int(round(-self.first_edge / self.bin_width)) if self.bin_width else 0


@dataclass
class Collection:
    """What :func:`collect` found, and how it went."""

    stats: dict[str, TensorStats] = field(default_factory=dict)
    samples: int = 0
    chunks: int = 1
    #: bytes of each tensor in one sample (as measured on the first one).
    sizes: dict[str, int] = field(default_factory=dict)


def collect(
    model: Model,
    tensors: Sequence[str],
    data: CalibrationData,
    indices: Sequence[int],
    *,
    histograms: Sequence[str] = (),
    bins: int = DEFAULT_BINS,
    channel_axes: dict[str, int] | None = None,
    memory_budget_mb: float = 1024.0,
    progress: Progress | None = None,
) -> Collection:
    """Statistics of ``tensors`` over the samples ``indices`` of ``data`` (see module doc).

    ``histograms`` names the tensors that also get pass 2; ``channel_axes`` the tensors whose
    per-channel means are wanted (axis of the channels).
    """
    channel_axes = dict(channel_axes or {})
    names = list(dict.fromkeys([*tensors, *channel_axes]))
    result = Collection(stats={name: TensorStats() for name in names}, samples=len(indices))
    if not names or not indices:
        return result
    runner = Runner(model, names, optimized=True)
    budget = max(int(memory_budget_mb * (1 << 20)), 1)
    sizes = result.sizes = estimated_sizes(model, names)
    chunks = chunk_by_size(names, sizes, budget)
    total = len(indices)

    def each_output(sample: dict[str, np.ndarray]):
        for chunk in chunks:
            outputs = runner.run(sample, chunk)
            for name in chunk:
                value = outputs.pop(name)
                sizes[name] = max(sizes.get(name, 0), int(getattr(value, "nbytes", 0)))
                yield name, value
            del outputs

    for done, sample in enumerate(data.samples(indices)):
        for name, value in each_output(sample):
            if _is_float(value):
                result.stats[name].update_range(value, channel_axes.get(name))
        if done == 0:
            chunks = chunk_by_size(names, sizes, budget)
            result.chunks = len(chunks)
        if progress is not None:
            progress("calibration: ranges", done + 1, total)
    wanted = [name for name in dict.fromkeys(histograms) if name in result.stats]
    needing = [name for name in wanted if result.stats[name].observed and not result.stats[name].single_valued]
    if not needing:
        return result
    for name in needing:
        result.stats[name].start_histogram(bins)
    chunks = chunk_by_size(needing, sizes, budget)
    runner_names = set(needing)
    for done, sample in enumerate(data.samples(indices)):
        for chunk in chunks:
            outputs = runner.run(sample, chunk)
            for name in chunk:
                if name in runner_names and _is_float(outputs[name]):
                    result.stats[name].update_histogram(outputs[name])
            del outputs
        if progress is not None:
            progress("calibration: histograms", done + 1, total)
    return result


def estimated_sizes(model: Model, names: Sequence[str]) -> dict[str, int]:
    """Bytes of each tensor from its inferred shape (unknown dims count as 1), refined with
    the real sizes once the first sample has run."""
    tensors = model.graph.tensors()
    sizes = {}
    for name in names:
        tensor = tensors.get(name)
        shape = getattr(tensor, "shape", None) or ()
        count = 1
        for dim in shape:
            count *= int(dim) if is_static_dim(dim) and dim > 0 else 1
        sizes[name] = 4 * count
    return sizes


def _is_float(value: object) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def chunk_by_size(names: Sequence[str], sizes: dict[str, int], budget: int) -> list[list[str]]:
    """Split ``names`` into runs whose outputs together stay under ``budget`` bytes."""
    chunks: list[list[str]] = [[]]
    used = 0
    for name in names:
        size = sizes.get(name, 0)
        if chunks[-1] and used + size > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(name)
        used += size
    return chunks
