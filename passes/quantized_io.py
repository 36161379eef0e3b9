"""``quantized-io``: graph inputs and outputs that carry integer codes instead of floats.

A quantized model keeps float I/O: each float input is read by ``QuantizeLinear`` and each
output comes out of ``DequantizeLinear``. Device runtimes (Qualcomm's QNN among them) run those
boundary Q/DQ on the host, and the host converts data it could have kept quantized: an LLM's KV
cache goes float -> codes -> float every step.

Matches a float graph input whose every reader is a per-tensor ``QuantizeLinear`` with one
constant scale and zero point, and a float graph output produced by a per-tensor
``DequantizeLinear``. Produces: the input becomes the codes (the Qs go; what read them reads the
input), the output becomes the codes the DQ read (the DQ goes unless something else reads its
result); names stay. With ``ranges``, a tensor's quantizer is derived again from that real range
(and ``bits``: another width of the same signedness, e.g. 8) and every Q/DQ of it is given the new scale
and zero point, so tensors given the same range share one quantizer: an LLM's past keys (inputs)
and new keys (outputs) tied, the host copies bytes into its cache. Graph inputs/outputs that do
not match are left in float with a note. The scale and zero point of every quantized tensor are
published as the ``quantized-io`` fact, for the caller's interface description.

The values a tensor carries change only by the requantization ``ranges`` asks for: with the
same quantizer, codes in = Q(x) is what the removed Q computed, and DQ(codes out) is what the
removed DQ gave.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, constant_value, remove_dead_nodes, standard_op
from mapc.passes.base import Note, Pass, PassContext, PassResult
from mapc.passes.facts import Fact
from mapc.passes.quantize.qtypes import QUANT_TYPES, activation_params
from mapc.passes.registry import register_pass


@dataclass(frozen=True)
class QuantizedTensor:
    """One graph input or output that now carries codes: ``real = (code - zero_point) * scale``."""

    dtype: str
    scale: float
    zero_point: int

    def as_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "scale": self.scale, "zero_point": self.zero_point}


QUANTIZED_IO: Fact[dict[str, QuantizedTensor]] = Fact(
    "quantized-io", "graph inputs and outputs that carry integer codes, by name", provided_by="quantized-io")


@register_pass
class QuantizedIO(Pass):
    """Graph inputs and outputs as integer codes: boundary Q/DQ removed, quantizers optionally tied.

    Matches float graph inputs read only by per-tensor QuantizeLinear nodes and float outputs of
    per-tensor DequantizeLinear nodes (``tensors``: only those names; empty: every one). Produces
    the same graph exchanging codes; ``ranges`` ({name: [low, high]}) re-derives a tensor's
    quantizer (width from ``bits``, else its own), so names given one range share one quantizer.
    Counters: ``inputs_quantized``, ``outputs_quantized``.
    """

    name = "quantized-io"
    provides = (QUANTIZED_IO,)

    @dataclass
    class Options:
        #: Graph inputs/outputs to quantize; empty: every one that matches.
        tensors: list[str] = field(default_factory=list)
        #: Real ranges [low, high] by tensor name; the quantizer is derived from it again.
        ranges: dict[str, list[float]] = field(default_factory=dict)
        #: Integer widths by tensor name (with a range), same signedness: 8 for an 8-bit KV cache.
        bits: dict[str, int] = field(default_factory=dict)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        wanted = set(self.options.tensors)
        published: dict[str, QuantizedTensor] = {}
        notes: list[Note] = []
        for tensor in list(graph.inputs):
            if wanted and tensor.name not in wanted:
                continue
            quantizers = [node for node in tensor.outputs]
            if not quantizers or not all(_per_tensor(node, "QuantizeLinear", tensor) for node in quantizers) \
                    or not _same_params(quantizers):
                if wanted:
                    notes.append(Note("quantized-io.not-quantized", f"input {tensor.name!r} is not read only by one "
                                      "per-tensor QuantizeLinear; it stays float", node=tensor.name))
                continue
            name = tensor.name
            published[name] = self._input(model, tensor, quantizers)
        for index, tensor in enumerate(list(graph.outputs)):
            if wanted and tensor.name not in wanted:
                continue
            dequantizer = tensor.inputs[0] if tensor.inputs else None
            if dequantizer is None or not _per_tensor(dequantizer, "DequantizeLinear", None):
                if wanted:
                    notes.append(Note("quantized-io.not-quantized", f"output {tensor.name!r} does not come out of a "
                                      "per-tensor DequantizeLinear; it stays float", node=tensor.name))
                continue
            name = tensor.name
            published[name] = self._output(model, index, tensor, dequantizer)
        remove_dead_nodes(graph)
        model.forget_names()
        ctx.facts[QUANTIZED_IO] = published
        inputs = sum(1 for t in graph.inputs if t.name in published)
        return PassResult(changed=bool(published), notes=notes,
                          counters={"inputs_quantized": inputs, "outputs_quantized": len(published) - inputs},
                          details={"tensors": {name: q.as_dict() for name, q in sorted(published.items())}})

    def _params(self, name: str, dtype: np.dtype, scale: float, zero_point: int) -> tuple[np.dtype, float, int]:
        """The quantizer ``name`` gets: its own, or one derived from ``ranges[name]``."""
        if name not in self.options.ranges:
            return dtype, scale, zero_point
        own = QUANT_TYPES[np.dtype(dtype).name]
        qtype = QUANT_TYPES[f"{'int' if own.signed else 'uint'}{self.options.bits.get(name, own.bits)}"]
        low, high = self.options.ranges[name]
        new_scale, new_zero = activation_params(low, high, qtype)
        return np.dtype(qtype.name), new_scale, new_zero

    def _input(self, model: Model, tensor: gs.Variable, quantizers: list[gs.Node]) -> QuantizedTensor:
        first = quantizers[0]
        dtype, scale, zero = self._params(tensor.name, _zero_dtype(first), _scalar(first.inputs[1]), _zero(first))
        codes = gs.Variable(tensor.name, dtype=dtype, shape=tensor.shape)
        tensor.name = model.fresh_name(f"{tensor.name}_float")
        for node in quantizers:
            output = node.outputs[0]
            for reader in list(output.outputs):
                if standard_op(reader) == "DequantizeLinear":
                    _set_params(model, reader, scale, zero, dtype)
                for slot, value in enumerate(reader.inputs):
                    if value is output:
                        reader.inputs[slot] = codes
            node.inputs.clear()
            node.outputs.clear()
        model.graph.inputs = [codes if t is tensor else t for t in model.graph.inputs]
        return QuantizedTensor(dtype.name, scale, zero)

    def _output(self, model: Model, index: int, tensor: gs.Variable, dequantizer: gs.Node) -> QuantizedTensor:
        codes = dequantizer.inputs[0]
        dtype, scale, zero = self._params(tensor.name, _zero_dtype(dequantizer), _scalar(dequantizer.inputs[1]), _zero(dequantizer))
        quantizer = codes.inputs[0] if codes.inputs else None
        if tensor.name in self.options.ranges:
            if quantizer is None or standard_op(quantizer) != "QuantizeLinear":
                raise ValueError(f"quantized-io: output {tensor.name!r} is not quantized by a QuantizeLinear; no range can be set")
            _set_params(model, quantizer, scale, zero, dtype)
            codes.dtype = dtype
            for reader in codes.outputs:
                if standard_op(reader) == "DequantizeLinear":
                    _set_params(model, reader, scale, zero, dtype)
        name = tensor.name
        if tensor.outputs:  # something inside reads the float result: it keeps it, under another name
            tensor.name = model.fresh_name(f"{name}_float")
        else:
            dequantizer.inputs.clear()
            dequantizer.outputs.clear()
        if codes in model.graph.inputs or codes in model.graph.outputs or isinstance(codes, gs.Constant):
            copy = gs.Variable(name, dtype=codes.dtype, shape=tensor.shape)
            model.graph.nodes.append(gs.Node("Identity", model.fresh_name(f"{name}_codes"), inputs=[codes], outputs=[copy]))
            codes = copy
        else:
            codes.name = name
            codes.shape = tensor.shape
        outputs = list(model.graph.outputs)
        outputs[index] = codes
        model.graph.outputs = outputs
        return QuantizedTensor(np.dtype(codes.dtype).name, scale, zero)


def _per_tensor(node: gs.Node, op: str, reads: gs.Tensor | None) -> bool:
    if standard_op(node) != op or len(node.inputs) < 3 or (reads is not None and node.inputs[0] is not reads):
        return False
    scale, zero = constant_value(node.inputs[1]), constant_value(node.inputs[2])
    return scale is not None and zero is not None and np.size(scale) == 1 and np.size(zero) == 1 \
        and np.dtype(zero.dtype).name in QUANT_TYPES


def _same_params(nodes: list[gs.Node]) -> bool:
    first = nodes[0]
    return all(_scalar(n.inputs[1]) == _scalar(first.inputs[1]) and _zero(n) == _zero(first)
               and _zero_dtype(n) == _zero_dtype(first) for n in nodes)


def _scalar(tensor: gs.Tensor) -> float:
    return float(np.asarray(constant_value(tensor)).reshape(-1)[0])


def _zero(node: gs.Node) -> int:
    return int(np.asarray(constant_value(node.inputs[2])).reshape(-1)[0])


def _zero_dtype(node: gs.Node) -> np.dtype:
    return np.dtype(constant_value(node.inputs[2]).dtype)


def _set_params(model: Model, node: gs.Node, scale: float, zero: int, dtype: np.dtype) -> None:
    """Give a Q/DQ node its own scale and zero point constants (shared ones are not changed)."""
    shape = np.shape(constant_value(node.inputs[1]))
    node.inputs[1] = gs.Constant(model.fresh_name(f"{node.name}_scale"), np.full(shape, scale, np.float32))
    node.inputs[2] = gs.Constant(model.fresh_name(f"{node.name}_zero_point"), np.full(shape, zero, dtype))
    if standard_op(node) == "QuantizeLinear":
        node.outputs[0].dtype = dtype
