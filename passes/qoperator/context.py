"""What the QOperator rules share: a node's quantization parameters, read and checked, and the
DequantizeLinear / QuantizeLinear nodes built from them.

A parameter pair is a scale and a zero point at two input slots of a QOperator node. It is
*per tensor* when the scale is a scalar (or a constant of one element, which becomes a scalar),
and *per axis* when it is a 1-D tensor of the channel count of the axis it applies to (standard
Q/DQ take per-axis parameters from opset 13). A missing zero point is 0 of the quantized type.
Anything else is a :class:`~mapc.ir.NearMiss` saying which parameter and why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, NearMiss, RewriteContext, constant_value, is_default_domain, optional_input, producer

#: Opset in which QuantizeLinear/DequantizeLinear exist, and in which they take per-axis scales.
QDQ_SINCE, PER_AXIS_SINCE = 10, 13
#: The domain of onnxruntime's contrib ops.
ORT_DOMAIN = "com.microsoft"
#: The 8-bit types QOperator ops compute in.
EIGHT_BIT = (np.dtype(np.uint8), np.dtype(np.int8))
#: Half the largest float32: the float form's values must stay below it (an integer kernel never
#: forms the real values, so absurd scales, such as a mask constant of -3.4e38 quantized with a
#: scale of 2.7e36, work there and overflow to infinity, and 0·inf to NaN, in float).
FLOAT_LIMIT = float(np.finfo(np.float32).max) / 2


@dataclass
class QParams:
    """A scale and zero point ready for Q/DQ: ``axis`` is None per tensor."""

    scale: gs.Tensor
    zero_point: gs.Tensor | None
    axis: int | None = None


def domain_is(node: gs.Node, domain: str) -> bool:
    """True if ``node`` belongs to ``domain`` (``""``: the default ai.onnx domain)."""
    return is_default_domain(node) if not domain else node.domain == domain


def shape_of(tensor: gs.Tensor) -> list | None:
    """The tensor's shape as far as it is known (a constant's always is)."""
    if isinstance(tensor, gs.Constant):
        return list(tensor.shape)
    return None if tensor.shape is None else list(tensor.shape)


def eight_bit(tensor: gs.Tensor, what: str, zero: gs.Tensor | None = None) -> np.dtype:
    """The tensor's dtype, which must be uint8 or int8; when it is unknown (the output of an op
    shape inference does not know, such as a contrib op left in place), its zero point's."""
    dtype = tensor.dtype if tensor.dtype is not None else zero.dtype if zero is not None else None
    dtype = None if dtype is None else np.dtype(dtype)
    if dtype not in EIGHT_BIT:
        raise NearMiss("dtype", f"the {what}'s type is {dtype or 'unknown'}, not uint8 or int8", "run shape inference (fix-shapes)")
    return dtype


class QdqContext(RewriteContext):
    """The rewrite context of ``qoperator-to-qdq``: reads parameters, builds Q/DQ."""

    def __init__(self, model: Model, *, float_dynamic: bool = False) -> None:
        super().__init__(model)
        #: The dynamic quantizer's activations stay float (``dynamic_activations="float"``).
        self.float_dynamic = float_dynamic

    # -- parameters -------------------------------------------------------------------------------
    def per_tensor(self, node: gs.Node, scale_slot: int, zero_slot: int, dtype: np.dtype, what: str) -> QParams:
        """The per-tensor scale and zero point of ``what`` (zero point absent: 0 of ``dtype``)."""
        self._require_qdq()
        scale = self._scalar(node, scale_slot, f"{what} scale")
        zero = optional_input(node, zero_slot)
        zero = self._scalar(node, zero_slot, f"{what} zero point") if zero is not None else self.const(np.zeros((), dtype), "zero_point")
        self._check_zero(zero, dtype, what)
        return QParams(scale, zero)

    def per_axis(self, node: gs.Node, scale_slot: int, zero_slot: int, dtype: np.dtype, axis: int, channels: int | None,
                 what: str) -> QParams:
        """Per-tensor parameters (a scale of one value), or per-axis ones along ``axis`` of
        ``channels`` entries (see :meth:`aligned`)."""
        shape = shape_of(node.inputs[scale_slot])
        if shape is not None and int(np.prod(shape, dtype=np.int64)) == 1:
            return self.per_tensor(node, scale_slot, zero_slot, dtype, what)
        return self.aligned(node.inputs[scale_slot], optional_input(node, zero_slot), dtype, axis, channels, what)

    def aligned(self, scale: gs.Tensor, zero: gs.Tensor | None, dtype: np.dtype, axis: int, channels: int | None, what: str) -> QParams:
        """``scale`` and ``zero`` (None: 0) shaped alike for Q/DQ: both scalars, or both one per
        channel along ``axis`` (a constant scalar is repeated to match the other)."""
        self._require_qdq()
        pair: list[gs.Tensor | None] = [scale, zero if zero is not None else self.const(np.zeros((), dtype), "zero_point")]
        sizes = []
        for tensor in pair:
            shape = shape_of(tensor)
            if shape is None:
                raise NearMiss("parameters", f"the {what} scale or zero point has an unknown shape", "run shape inference (fix-shapes)")
            size = int(np.prod(shape, dtype=np.int64))
            if size != 1 and (len(shape) != 1 or (channels is not None and size != channels)):
                raise NearMiss("parameters", f"the {what} scale or zero point has shape {shape}, neither one value nor one per channel")
            sizes.append(size)
        per_channel = max(sizes) > 1
        if per_channel and self.model.opset < PER_AXIS_SINCE:
            raise NearMiss("opset", f"per-channel {what} needs DequantizeLinear of opset {PER_AXIS_SINCE}", f"--target-opset {PER_AXIS_SINCE}")
        target = (max(sizes),) if per_channel else ()
        for index, tensor in enumerate(pair):
            if list(shape_of(tensor) or []) == list(target):
                continue
            value = constant_value(tensor)
            if value is None:
                raise NearMiss("parameters", f"the {what} scale or zero point would need reshaping but is computed at run time")
            pair[index] = self.const(np.full(target, np.asarray(value).reshape(()), dtype=value.dtype), "quant_param")
        if pair[1].dtype is not None and np.dtype(pair[1].dtype) != dtype:
            raise NearMiss("dtype", f"the {what} zero point is {np.dtype(pair[1].dtype)}, the data {dtype}")
        return QParams(pair[0], pair[1], axis if per_channel else None)

    def _require_qdq(self) -> None:
        if self.model.opset < QDQ_SINCE:
            raise NearMiss("opset", f"QuantizeLinear/DequantizeLinear need opset {QDQ_SINCE} (the model has {self.model.opset})",
                           f"--target-opset {QDQ_SINCE}")

    def _scalar(self, node: gs.Node, slot: int, what: str) -> gs.Tensor:
        tensor = node.inputs[slot]
        shape = shape_of(tensor)
        if shape == []:
            return tensor
        value = constant_value(tensor)
        if value is not None and value.size == 1:
            return self.const(np.asarray(value).reshape(()), tensor.name or "scalar")
        raise NearMiss("parameters", f"the {what} is not one value (shape {shape}); only per-tensor is rewritten here")

    @staticmethod
    def _check_zero(zero: gs.Tensor, dtype: np.dtype, what: str) -> None:
        if zero.dtype is not None and np.dtype(zero.dtype) != dtype:
            raise NearMiss("dtype", f"the {what} zero point is {np.dtype(zero.dtype)}, the data {dtype}")

    # -- ranges -----------------------------------------------------------------------------------
    @staticmethod
    def magnitude(params: QParams, dtype: np.dtype) -> float | None:
        """The largest ``|DQ(q)|`` over q's type: ``max|q - zero| · scale`` (None when the scale
        or zero point is computed at run time)."""
        scale = constant_value(params.scale)
        zero = constant_value(params.zero_point) if params.zero_point is not None else np.zeros(())
        if scale is None or zero is None:
            return None
        info = np.iinfo(dtype)
        zero = np.asarray(zero, np.float64)
        return float(np.max(np.maximum(zero - info.min, info.max - zero) * np.abs(np.asarray(scale, np.float64))))

    @staticmethod
    def require_finite(bound: float | None, what: str) -> None:
        """Raise :class:`NearMiss` unless ``bound`` (the largest value ``what`` reaches in the
        float form, None: unknown) stays well inside float32."""
        if bound is not None and not bound < FLOAT_LIMIT:
            raise NearMiss("range", f"{what} reach {bound:.3g} in float, beyond float32's range (the integer kernel never forms them)")

    # -- building ---------------------------------------------------------------------------------
    def dequantize(self, data: gs.Tensor, params: QParams, name: str) -> gs.Tensor:
        """``DequantizeLinear(data, scale, zero point)``: float32."""
        inputs = [data, params.scale] + ([params.zero_point] if params.zero_point is not None else [])
        attrs = {"axis": params.axis} if params.axis is not None else {}
        return self.node("DequantizeLinear", inputs, attrs=attrs, name=name, dtype=np.float32, shape=shape_of(data))

    def quantize_into(self, node: gs.Node, value: gs.Tensor, params: QParams) -> None:
        """Turn ``node`` into ``QuantizeLinear(value, scale, zero point)``, keeping its output."""
        self.become(node, "QuantizeLinear", [value, params.scale, params.zero_point])

    def float_op(self, op: str, inputs: list[gs.Tensor], attrs: dict | None, node: gs.Node) -> gs.Tensor:
        """The float op computing what ``node`` did, named after it."""
        return self.node(op, inputs, attrs=attrs, name=f"{node.name or op.lower()}_float", dtype=np.float32)


def dynamic_source(data: gs.Tensor, scale: gs.Tensor, zero: gs.Tensor | None) -> gs.Tensor | None:
    """``x`` when ``data``, its scale and its zero point are ``DynamicQuantizeLinear(x)``'s outputs."""
    source = producer(data)
    if source is None or source.op != "DynamicQuantizeLinear" or not domain_is(source, "") or len(source.outputs) < 3:
        return None
    own = data is source.outputs[0] and scale is source.outputs[1] and zero is source.outputs[2]
    return source.inputs[0] if own else None


def product(*factors: float | None) -> float | None:
    """The product of bounds (None if one is unknown)."""
    result = 1.0
    for factor in factors:
        if factor is None:
            return None
        result *= factor
    return result
