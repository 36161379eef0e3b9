"""Weight-side numerics: per-channel and block-wise weights, int32 biases, bias correction.

* 8-bit weights, symmetric: per channel on the spec's axis (or per tensor), codes in the
  restricted range ``[-127, 127]`` with zero point 0 (TFLite's rule, so int8×int8 products are
  symmetric). Asymmetric (``uint8``): per-channel min/max with a zero point.
* 4-bit weights: blocks of ``block_size`` along the input dim. Symmetric ``int4`` uses the full
  ``[-8, 7]`` range; an error-minimising search over shrunken scales picks, per block, the
  scale with the least squared reconstruction error (round-to-nearest on the max is one of the
  candidates, so the search is never worse than it).
* Biases: int32, zero point 0, scale ``s_in · s_w[channel] · factor``. A bias that would
  overflow int32 raises that channel's weight scale just enough (onnxruntime does the same);
  the caller re-quantizes the weight and reports it.
* Bias correction (Nagel et al. 2019): ``b -= ΔW · E[x]`` with ΔW the weight's quantization
  error and E[x] the per-channel mean of the layer input over the calibration set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mapc.passes.quantize.placement import BiasSpec, WeightSpec
from mapc.passes.quantize.qtypes import INT32, QuantType
from mapc.passes.windows import explicit_pads, window_reads

INT32_MAX = np.iinfo(np.int32).max
#: Elements processed at once by the 4-bit scale search (bounds its memory).
SEARCH_CHUNK = 1 << 22


@dataclass
class QuantizedWeight:
    """Integer codes with their scale and zero point, shaped for DequantizeLinear."""

    spec: WeightSpec
    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    shape: tuple[int, ...]

    def dequantized(self) -> np.ndarray:
        return _dequantize(self.codes, self.scale, self.zero_point, self.spec, self.shape)


def quantize_weight(values: np.ndarray, spec: WeightSpec, *, search_steps: int = 0) -> QuantizedWeight:
    """Quantize a float weight according to ``spec``. ``search_steps`` > 0 enables the
    error-minimising scale search for block-wise weights."""
    values = np.asarray(values, dtype=np.float32)
    if spec.block_size is not None:
        return _quantize_blocked(values, spec, search_steps)
    scale, zero_point = _channel_params(values, spec)
    return requantize(values, spec, scale, zero_point)


def requantize(values: np.ndarray, spec: WeightSpec, scale: np.ndarray, zero_point: np.ndarray) -> QuantizedWeight:
    """Codes of ``values`` under the given per-channel/per-tensor ``scale`` and ``zero_point``."""
    values = np.asarray(values, dtype=np.float32)
    low, high = _code_range(spec)
    broadcast_scale, broadcast_zero = _broadcast(scale, values.ndim, spec.axis), _broadcast(zero_point, values.ndim, spec.axis)
    codes = np.divide(values, broadcast_scale.astype(np.float32), dtype=np.float32)  # one float32 temporary, not int64
    np.rint(codes, out=codes)
    codes += broadcast_zero.astype(np.float32)
    np.clip(codes, low, high, out=codes)
    return QuantizedWeight(spec, codes.astype(spec.qtype.numpy_dtype), scale.astype(np.float32), zero_point.astype(spec.qtype.numpy_dtype), values.shape)


def _code_range(spec: WeightSpec) -> tuple[int, int]:
    qtype = spec.qtype
    if spec.symmetric and qtype.signed and qtype.bits == 8:
        return -qtype.qmax, qtype.qmax
    return qtype.qmin, qtype.qmax


def _broadcast(array: np.ndarray, rank: int, axis: int | None) -> np.ndarray:
    if axis is None or np.ndim(array) == 0:
        return np.asarray(array)
    shape = [1] * rank
    shape[axis] = -1
    return np.asarray(array).reshape(shape)


def _channel_params(values: np.ndarray, spec: WeightSpec) -> tuple[np.ndarray, np.ndarray]:
    qtype = spec.qtype
    if spec.axis is None:
        rows = values.reshape(1, -1)
    else:
        rows = np.moveaxis(values, spec.axis, 0).reshape(values.shape[spec.axis], -1)
    if rows.shape[1] == 0:
        low = high = np.zeros(rows.shape[0], dtype=np.float64)
    else:
        low = np.minimum(rows.min(axis=1).astype(np.float64), 0.0)
        high = np.maximum(rows.max(axis=1).astype(np.float64), 0.0)
    if spec.symmetric:
        bound = np.maximum(-low, high)
        code_low, code_high = _code_range(spec)
        zero = 0 if qtype.signed else (qtype.qmin + qtype.qmax + 1) // 2
        scale = _positive(bound / (code_high - zero))
        zero_point = np.full(scale.shape, zero, dtype=np.int64)
    else:
        scale = _positive((high - low) / qtype.levels)
        zero_point = np.clip(np.rint(qtype.qmin - low / scale), qtype.qmin, qtype.qmax).astype(np.int64)
    if spec.axis is None:
        return scale.reshape(()), zero_point.reshape(())
    return scale, zero_point


def _positive(scale: np.ndarray) -> np.ndarray:
    """Scales of all-zero channels (0) replaced by the median of the others, or 1."""
    scale = np.asarray(scale, dtype=np.float64)
    zero = scale <= 0
    if zero.any():
        fill = float(np.median(scale[~zero])) if (~zero).any() else 1.0
        scale = np.where(zero, fill, scale)
    return np.maximum(scale.astype(np.float32), np.finfo(np.float32).tiny)


def _dequantize(codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, spec: WeightSpec, shape: tuple[int, ...]) -> np.ndarray:
    codes = codes.astype(np.int64)
    zero_point = zero_point.astype(np.int64)
    if spec.block_size is not None:
        axis = spec.axis or 0
        scale = np.repeat(scale, spec.block_size, axis=axis).take(range(shape[axis]), axis=axis)
        zero_point = np.repeat(zero_point, spec.block_size, axis=axis).take(range(shape[axis]), axis=axis)
        return ((codes - zero_point) * scale).astype(np.float32)
    rank = len(shape)
    return ((codes - _broadcast(zero_point, rank, spec.axis)) * _broadcast(scale, rank, spec.axis)).astype(np.float32)


# -- 4-bit block-wise ---------------------------------------------------------------------------


def _quantize_blocked(values: np.ndarray, spec: WeightSpec, search_steps: int) -> QuantizedWeight:
    axis = spec.axis or 0
    block = int(spec.block_size or 32)
    qtype = spec.qtype
    moved = np.moveaxis(values, axis, 0)
    length = moved.shape[0]
    rest = moved.shape[1:]
    blocks = -(-length // block)
    padded = np.zeros((blocks * block, *rest), dtype=np.float32)
    padded[:length] = moved
    grouped = padded.reshape(blocks, block, -1)  # [blocks, block, columns]
    scale = np.empty((blocks, grouped.shape[2]), dtype=np.float32)
    zero_point = np.zeros((blocks, grouped.shape[2]), dtype=np.int64)
    columns = max(1, SEARCH_CHUNK // max(blocks * block, 1))
    for start in range(0, grouped.shape[2], columns):
        part = grouped[:, :, start : start + columns]
        s, z = _search_block_scales(part, qtype, spec.symmetric, search_steps)
        scale[:, start : start + columns] = s
        zero_point[:, start : start + columns] = z
    codes = np.clip(np.rint(grouped / scale[:, None, :]).astype(np.int64) + zero_point[:, None, :], qtype.qmin, qtype.qmax)
    codes = np.moveaxis(codes.reshape(blocks * block, *rest)[:length], 0, axis)
    scale_shape = (blocks, *rest)
    scale_out = np.moveaxis(scale.reshape(scale_shape), 0, axis)
    zero_out = np.moveaxis(zero_point.reshape(scale_shape), 0, axis)
    return QuantizedWeight(spec, codes.astype(qtype.numpy_dtype), np.ascontiguousarray(scale_out), np.ascontiguousarray(zero_out).astype(qtype.numpy_dtype), values.shape)


def _search_block_scales(part: np.ndarray, qtype: QuantType, symmetric: bool, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block (axis 1 reduced): the scale (and zero point) of least squared error among
    round-to-nearest on the block's extremes and ``steps`` shrunken versions of it."""
    low = np.minimum(part.min(axis=1), 0.0).astype(np.float64)
    high = np.maximum(part.max(axis=1), 0.0).astype(np.float64)
    factors = [1.0] + (list(np.linspace(1.0, 0.5, steps + 1)[1:]) if steps > 0 else [])
    best_scale = best_zero = best_error = None
    for factor in factors:
        if symmetric:
            scale = _floor_scale(np.maximum(high * factor / qtype.qmax, -low * factor / -qtype.qmin))
            zero = np.zeros_like(scale, dtype=np.int64)
        else:
            scale = _floor_scale((high - low) * factor / qtype.levels)
            zero = np.clip(np.rint(qtype.qmin - low * factor / scale), qtype.qmin, qtype.qmax).astype(np.int64)
        codes = np.clip(np.rint(part / scale[:, None, :]) + zero[:, None, :], qtype.qmin, qtype.qmax)
        error = np.square((codes - zero[:, None, :]) * scale[:, None, :] - part).sum(axis=1)
        if best_error is None:
            best_scale, best_zero, best_error = scale, zero, error
            continue
        better = error < best_error
        best_scale = np.where(better, scale, best_scale)
        best_zero = np.where(better, zero, best_zero)
        best_error = np.where(better, error, best_error)
    assert best_scale is not None and best_zero is not None
    return best_scale.astype(np.float32), best_zero


def _floor_scale(scale: np.ndarray) -> np.ndarray:
    scale = np.asarray(scale, dtype=np.float32)
    return np.where(scale > 0, scale, np.float32(1.0))


# -- biases ----------------------------------------------------------------------------------------


@dataclass
class QuantizedBias:
    codes: np.ndarray
    scale: np.ndarray
    #: Indices of the weight scales that had to grow so the bias fits in int32.
    raised: list[int]
    new_weight_scale: np.ndarray | None


def output_channel_scales(weight_scale: np.ndarray, spec: BiasSpec, channels: int) -> np.ndarray:
    """The weight scale that applies to each of the bias's ``channels`` outputs."""
    scale = np.asarray(weight_scale, dtype=np.float64)
    if spec.channel_map == "scalar" or scale.ndim == 0:
        return np.full(channels, float(scale.reshape(-1)[0]) if scale.size else 1.0)
    if spec.channel_map == "tile":
        return np.tile(scale, spec.repeats)[:channels]
    if spec.channel_map == "repeat":
        return np.repeat(scale, spec.repeats)[:channels]
    return scale[:channels]


def quantize_bias(values: np.ndarray, input_scale: float, weight_scale: np.ndarray, spec: BiasSpec) -> QuantizedBias:
    """int32 codes of a bias with scale ``s_in · s_w · factor``; raises weight scales whose
    bias would overflow int32 (``new_weight_scale`` then holds the adjusted weight scales)."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    channels = flat.size
    per_channel = output_channel_scales(weight_scale, spec, channels)
    factor = abs(spec.factor) or 1.0
    bias_scale = input_scale * per_channel * factor
    needed = np.abs(flat) / (INT32_MAX * 0.999)
    overflow = needed > bias_scale
    raised: list[int] = []
    new_weight_scale = None
    if overflow.any():
        required_weight = needed / (input_scale * factor)
        new_weight_scale = np.array(weight_scale, dtype=np.float64, copy=True)
        for channel in np.flatnonzero(overflow):
            index = _weight_index(int(channel), spec, new_weight_scale)
            flat_scale = new_weight_scale.reshape(-1)
            if required_weight[channel] > flat_scale[index]:
                flat_scale[index] = required_weight[channel]
                raised.append(index)
        per_channel = output_channel_scales(new_weight_scale, spec, channels)
        bias_scale = input_scale * per_channel * factor
        new_weight_scale = new_weight_scale.astype(np.float32)
    bias_scale = bias_scale.astype(np.float32)
    codes = np.clip(np.rint(flat / bias_scale), -INT32_MAX, INT32_MAX).astype(INT32.numpy_dtype)
    shape = np.shape(values)
    if spec.channel_map == "scalar":
        return QuantizedBias(codes.reshape(shape), np.asarray(bias_scale.reshape(-1)[0], dtype=np.float32), sorted(set(raised)), new_weight_scale)
    return QuantizedBias(codes.reshape(shape), bias_scale, sorted(set(raised)), new_weight_scale)


def _weight_index(channel: int, spec: BiasSpec, weight_scale: np.ndarray) -> int:
    size = max(weight_scale.size, 1)
    if spec.channel_map == "scalar" or weight_scale.ndim == 0:
        return 0
    if spec.channel_map == "tile":
        return channel % size
    if spec.channel_map == "repeat":
        return channel // max(spec.repeats, 1)
    return channel


# -- bias correction -------------------------------------------------------------------------------


def conv_bias_correction(delta: np.ndarray, mean: np.ndarray, group: int, coverage: np.ndarray | None = None) -> np.ndarray | None:
    """Expected output shift of a Conv from weight error ``delta`` [M, C/g, k...] given the
    per-input-channel mean ``mean`` [C], averaged over the output positions: a tap reading the
    zero padding sees 0, not the mean, so each tap counts with its ``coverage`` (see
    :func:`tap_coverage`; None: every tap always inside, the border ignored)."""
    out_channels, per_group = delta.shape[0], delta.shape[1]
    if mean.shape != (per_group * group,) or out_channels % group:
        return None
    taps = delta.reshape(out_channels, per_group, -1).astype(np.float64)
    if coverage is not None:
        taps = taps * coverage.reshape(1, 1, -1)
    summed = taps.sum(axis=2)
    means = mean.reshape(group, per_group)
    group_of = np.arange(out_channels) // (out_channels // group)
    return np.einsum("mc,mc->m", summed, means[group_of])


def tap_coverage(spatial: tuple[int, ...], kernel: tuple[int, ...], attrs: dict) -> np.ndarray | None:
    """For a Conv over an input of ``spatial`` size with ``kernel`` and the Conv's ``attrs``
    (pads or auto_pad, strides, dilations), the fraction of output positions at which each kernel
    tap reads the input rather than the zero padding, shaped like the kernel (None when the
    attributes do not fit the shapes)."""
    rank = len(kernel)
    if len(spatial) != rank:
        return None
    strides = [int(v) for v in attrs.get("strides", [1] * rank)]
    dilations = [int(v) for v in attrs.get("dilations", [1] * rank)]
    if len(strides) != rank or len(dilations) != rank:
        return None
    pads = explicit_pads(attrs, list(spatial), list(kernel), strides, dilations)
    if pads is None:
        return None
    coverage = np.ones((), dtype=np.float64)
    for size, k, stride, dilation, begin, end in zip(spatial, kernel, strides, dilations, *pads):
        # a SAME crop pads nothing
        reads = window_reads(size, k, stride, dilation, max(begin, 0), max(end, 0))  # [output position, tap]
        if not len(reads):
            return None
        coverage = np.multiply.outer(coverage, reads.mean(axis=0))
    return coverage


def gemm_bias_correction(delta: np.ndarray, mean: np.ndarray, trans_b: bool) -> np.ndarray | None:
    """Expected output shift of ``A·B`` from weight error ``delta`` given E[A] per K."""
    k_axis = 1 if trans_b else 0
    if mean.shape != (delta.shape[k_axis],):
        return None
    return (delta.astype(np.float64) @ mean) if trans_b else (mean @ delta.astype(np.float64))
