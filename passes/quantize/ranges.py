"""Calibration methods: from a tensor's statistics to the real range its quantizer covers.

* ``minmax``: the observed minimum and maximum.
* ``percentile``: keep ``p`` percent of the values, cutting half of the rest on each side that
  has values (onnxruntime's and TensorRT's convention).
* ``entropy``: the clipping threshold minimising the KL divergence between the histogram and
  its quantized version (TensorRT's method; symmetric window for two-sided tensors, one-sided
  window otherwise).
* ``mse``: the range minimising the expected squared error, clipping (exact, from the
  histogram) plus rounding (``step² / 12`` per value inside the range), over a grid of low and
  high bounds.

A method that cannot handle a tensor — no finite values, a single value (constant or all
zeros), no histogram, a grid finer than the histogram (entropy at 16 bits), a result that
collapses to nothing — falls back to ``minmax`` for that tensor and says why; it never raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mapc.passes.quantize.calibrate import TensorStats
from mapc.passes.quantize.qtypes import QuantType

METHODS = ("minmax", "percentile", "entropy", "mse")
HISTOGRAM_METHODS = frozenset({"percentile", "entropy", "mse"})
#: Thresholds tried by the entropy and mse searches (spread over the histogram).
SEARCH_POINTS = 192


@dataclass(frozen=True)
class RangeChoice:
    low: float
    high: float
    method: str
    fallback: str | None = None


def choose_range(
    stats: TensorStats,
    method: str,
    qtype: QuantType,
    *,
    symmetric: bool = False,
    percentile: float = 99.999,
) -> RangeChoice:
    """The range ``method`` picks for a tensor with ``stats`` quantized to ``qtype``."""
    if not stats.observed:
        return RangeChoice(0.0, 0.0, "minmax", "no finite values were observed")
    minmax = RangeChoice(stats.low, stats.high, "minmax")
    if method == "minmax":
        return minmax
    if stats.single_valued:
        return _fallback(stats, "single-valued (constant or all zeros)")
    histogram = stats.histogram
    if histogram is None or not histogram.any():
        return _fallback(stats, "no histogram was collected")
    if method == "percentile":
        low, high = _percentile(stats, percentile)
    elif method == "entropy":
        found = _entropy(stats, qtype)
        if found is None:
            return _fallback(stats, f"a {qtype.bits}-bit grid is finer than the {len(histogram)}-bin histogram")
        low, high = found
    elif method == "mse":
        low, high = _mse(stats, qtype, symmetric)
    else:
        raise ValueError(f"unknown calibration method {method!r}")
    low, high = max(low, stats.low), min(high, stats.high)
    if not (high > low) or not (math.isfinite(low) and math.isfinite(high)):
        return _fallback(stats, f"{method} collapsed the range")
    return RangeChoice(low, high, method)


def _fallback(stats: TensorStats, reason: str) -> RangeChoice:
    return RangeChoice(stats.low, stats.high, "minmax", reason)


def _edges(stats: TensorStats) -> np.ndarray:
    assert stats.histogram is not None
    return stats.first_edge + stats.bin_width * np.arange(len(stats.histogram) + 1, dtype=np.float64)


def _percentile(stats: TensorStats, percentile: float) -> tuple[float, float]:
    """Edges keeping ``percentile`` percent of the values: half of the rest is cut on each side
    (onnxruntime's and TensorRT's convention), a side without values is not cut."""
    histogram = stats.histogram
    assert histogram is not None
    edges = _edges(stats)
    cumulative = np.cumsum(histogram)
    total = cumulative[-1]
    tail = total * (100.0 - percentile) / 200.0
    low = stats.low
    if stats.low < 0:
        index = int(np.searchsorted(cumulative, tail, side="right"))
        low = float(edges[min(index, len(histogram) - 1)])
    high = stats.high
    if stats.high > 0:
        index = int(np.searchsorted(cumulative, total - tail, side="left"))
        high = float(edges[min(index, len(histogram))])
    return low, high


def _without_zeros(stats: TensorStats) -> np.ndarray:
    """The histogram minus its exact zeros: they are quantized exactly whatever the range, so
    they must not pull a search towards narrow ranges (a ReLU output is half zeros)."""
    histogram = stats.histogram
    assert histogram is not None
    histogram = histogram.copy()
    zero = min(stats.zero_bin, len(histogram) - 1)
    histogram[zero] = max(histogram[zero] - stats.zeros, 0)
    return histogram


def _magnitudes(stats: TensorStats) -> np.ndarray:
    """The histogram of nonzero |x| on the same grid (0 is an edge, so the sides line up)."""
    histogram = _without_zeros(stats)
    zero = stats.zero_bin
    positive, negative = histogram[zero:], histogram[:zero][::-1]
    size = max(len(positive), len(negative))
    folded = np.zeros(size, dtype=np.int64)
    folded[: len(positive)] += positive
    folded[: len(negative)] += negative
    return folded


def _entropy(stats: TensorStats, qtype: QuantType) -> tuple[float, float] | None:
    two_sided = stats.low < 0 < stats.high
    magnitudes = _magnitudes(stats)
    levels = qtype.levels // 2 if two_sided else qtype.levels
    if len(magnitudes) <= levels:
        return None
    if not magnitudes.any():
        return None
    bins = _kl_threshold(magnitudes.astype(np.float64), levels)
    threshold = bins * stats.bin_width
    if two_sided:
        return -threshold, threshold
    return (0.0, threshold) if stats.high > 0 else (-threshold, 0.0)


def _kl_threshold(histogram: np.ndarray, levels: int) -> int:
    """Number of leading bins whose levels-bucket quantization loses least information."""
    size = len(histogram)
    candidates = np.unique(np.linspace(levels, size, min(SEARCH_POINTS, size - levels + 1)).astype(int))
    best, best_divergence = size, math.inf
    for bins in candidates:
        reference = histogram[:bins].copy()
        reference[-1] += histogram[bins:].sum()
        if reference.sum() == 0:
            continue
        starts = np.linspace(0, bins, levels + 1).astype(int)[:-1]
        starts = np.unique(starts)
        kept = histogram[:bins]
        bucket_sums = np.add.reduceat(kept, starts)
        bucket_nonzero = np.add.reduceat((kept > 0).astype(np.float64), starts)
        per_bin = np.divide(bucket_sums, bucket_nonzero, out=np.zeros_like(bucket_sums), where=bucket_nonzero > 0)
        lengths = np.diff(np.append(starts, bins))
        expanded = np.repeat(per_bin, lengths) * (kept > 0)
        divergence = _kl(reference, expanded)
        if divergence < best_divergence:
            best, best_divergence = int(bins), divergence
    return best


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of two unnormalised histograms, q smoothed where p has mass and q has none."""
    p = p / p.sum()
    total_q = q.sum()
    if total_q <= 0:
        return math.inf
    q = q / total_q
    support = p > 0
    eps = 1e-10
    q = np.where(support & (q <= 0), eps, q)
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def _mse(stats: TensorStats, qtype: QuantType, symmetric: bool) -> tuple[float, float]:
    """The (low, high) on the histogram grid with the least expected squared error."""
    histogram = _without_zeros(stats)
    edges = _edges(stats)
    centers = (edges[:-1] + edges[1:]) / 2
    counts = histogram.astype(np.float64)
    zero = stats.zero_bin
    # prefix sums over bins [0, i): counts, sum of c, sum of c²
    s0 = np.concatenate([[0.0], np.cumsum(counts)])
    s1 = np.concatenate([[0.0], np.cumsum(counts * centers)])
    s2 = np.concatenate([[0.0], np.cumsum(counts * centers * centers)])
    size = len(histogram)
    if symmetric:
        reach = max(zero, size - zero)
        steps = _spread(1, reach)
        low_index = np.clip(zero - steps, 0, size)
        high_index = np.clip(zero + steps, 0, size)
        lows, highs = -steps * stats.bin_width, steps * stats.bin_width
        error = _clip_below(lows, low_index, s0, s1, s2) + _clip_above(highs, high_index, s0, s1, s2)
        inside = s0[high_index] - s0[low_index]
        error = error + inside * ((highs - lows) / qtype.levels) ** 2 / 12
        best = int(np.argmin(error))
        return float(lows[best]), float(highs[best])
    low_index = zero - _spread(0, zero)[::-1] if zero > 0 else np.array([zero])
    high_index = zero + _spread(0, size - zero) if size > zero else np.array([zero])
    low_index, high_index = np.unique(low_index), np.unique(high_index)
    lows, highs = edges[low_index], edges[high_index]
    below = _clip_below(lows, low_index, s0, s1, s2)[:, None]
    above = _clip_above(highs, high_index, s0, s1, s2)[None, :]
    inside = s0[high_index][None, :] - s0[low_index][:, None]
    span = highs[None, :] - lows[:, None]
    error = below + above + inside * (span / qtype.levels) ** 2 / 12
    error = np.where(span > 0, error, np.inf)
    row, column = np.unravel_index(int(np.argmin(error)), error.shape)
    return float(lows[row]), float(highs[column])


def _spread(start: int, stop: int) -> np.ndarray:
    """Up to :data:`SEARCH_POINTS` integers from ``start`` to ``stop`` (both included)."""
    if stop <= start:
        return np.array([start])
    return np.unique(np.round(np.linspace(start, stop, min(SEARCH_POINTS, stop - start + 1))).astype(int))


def _clip_below(bounds: np.ndarray, index: np.ndarray, s0: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Σ n·(c - bound)² over bins left of ``index`` (values clipped up to ``bound``)."""
    return s2[index] - 2 * bounds * s1[index] + bounds**2 * s0[index]


def _clip_above(bounds: np.ndarray, index: np.ndarray, s0: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Σ n·(c - bound)² over bins right of ``index`` (values clipped down to ``bound``)."""
    n, m1, m2 = s0[-1] - s0[index], s1[-1] - s1[index], s2[-1] - s2[index]
    return m2 - 2 * bounds * m1 + bounds**2 * n
