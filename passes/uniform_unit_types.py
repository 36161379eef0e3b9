"""``uniform-unit-types``: every quantized op reads and writes one activation type, converting at its edges.

Matches a default-domain op whose activation inputs come from ``DequantizeLinear`` nodes and whose
outputs are read only by ``QuantizeLinear`` nodes (a QDQ node unit), where those inputs and
outputs do not all carry the same integer type: an 8-bit and a 16-bit one of the same signedness
(``uint8``/``uint16`` or ``int8``/``int16``). The mix comes from mixed precision: a tensor the
accuracy target promoted to 16 bits, a 16-bit attention-mask path, a 16-bit graph output.
Weights and biases (the inputs of :data:`WEIGHT_SLOTS`) are not activations and keep their types.

Produces the same op computing in the wide type:

* a narrow **activation input** is converted up: ``DQ8(x) -> QuantizeLinear -> DequantizeLinear``
  at the 16-bit grid that holds every 8-bit code exactly (scale ``s / f``, zero point ``z * f``,
  ``f`` = 257 unsigned, 256 signed; code ``q`` becomes ``f * q``), so the value is unchanged;
  a narrow constant input (an Add's quantized operand) gets its 16-bit codes directly, and a
  graph input is quantized at 16 bits directly (a second boundary QuantizeLinear, which the EP
  keeps on the host as it does the first: a convert after the boundary pair is refused); a
  Reshape, Flatten, Squeeze, Unsqueeze or Transpose that alone feeds the input is re-typed and
  the convert moves before it (the same values, and QNN fails to finalize one shape with it after);
* a narrow **output** is written wide at the matching grid and converted down after it:
  ``op -> Q16 -> DQ16 -> Q8`` (the Q8 and its readers unchanged). Rounding twice differs from
  rounding once only where a value lies within half a 16-bit step of an 8-bit rounding boundary,
  by one 8-bit step.

Why: onnxruntime groups a QDQ node unit only when its activation input and output types agree
(``qdq_selectors.cc``: Conv, Gemm, MatMul, unary, binary, variadic, normalization selectors);
otherwise each DequantizeLinear, the op and each QuantizeLinear become separate units. Qualcomm's
QNN EP then runs the op in fp16 (or fails on an architecture without fp16) and rejects a
standalone per-channel DequantizeLinear, so a Conv or Gemm whose output was promoted lost its
weights to the CPU (Inception-v1 a8w8 with ``--accuracy-target``: the classifier Gemm's weight
and bias). A ``DequantizeLinear -> QuantizeLinear`` pair is what the QNN EP builds as one HTP
``Convert``. The qnn-htp target runs this pass after quantization (its ``finish`` list).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, is_default_domain, is_graph_input, is_graph_output, producer, toposort
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.quantize.qtypes import QUANT_TYPES
from mapc.passes.registry import register_pass

#: Inputs that hold weights, biases or normalization parameters (when constant), not
#: activations: their types are free of the unit's activation type (onnxruntime's Conv, Gemm,
#: MatMul and normalization selectors compare only the data input with the output; HTP refuses
#: a MatMul of a uint8 and a uint16 activation, error 3110).
WEIGHT_SLOTS = {
    "Conv": frozenset({1, 2}),
    "ConvTranspose": frozenset({1, 2}),
    "Gemm": frozenset({1, 2}),
    "MatMul": frozenset({1}),
    "LayerNormalization": frozenset({1, 2}),
    "RMSNormalization": frozenset({1}),
    "InstanceNormalization": frozenset({1, 2}),
    "BatchNormalization": frozenset({1, 2, 3, 4}),
}



def _widening(narrow: np.dtype) -> tuple[np.dtype, int] | None:
    """The 16-bit type an 8-bit one widens to and the factor that maps its codes exactly
    (:attr:`~mapc.passes.quantize.qtypes.QuantType.widening_factor`), or None for another type."""
    qtype = QUANT_TYPES.get(narrow.name)
    if qtype is None or qtype.bits != 8:
        return None
    return np.dtype(qtype.wider().numpy_dtype), qtype.widening_factor


def _dequantizer(tensor: gs.Tensor) -> gs.Node | None:
    source = producer(tensor)
    return source if source is not None and source.op == "DequantizeLinear" and is_default_domain(source) else None


def _code_type(tensor: gs.Tensor) -> np.dtype | None:
    dtype = tensor.values.dtype if isinstance(tensor, gs.Constant) else tensor.dtype
    return np.dtype(dtype) if dtype is not None else None


def _activation_slots(node: gs.Node) -> list[tuple[int, gs.Node]]:
    """``node``'s dequantized inputs that carry activations: all but the weight slots whose codes
    are constants (a MatMul of two activations, attention's P·V, has two)."""
    weights = WEIGHT_SLOTS.get(node.op, frozenset())
    found = []
    for slot, tensor in enumerate(node.inputs):
        dq = _dequantizer(tensor)
        if dq is not None and not (slot in weights and isinstance(dq.inputs[0], gs.Constant)):
            found.append((slot, dq))
    return found


def unit_types(graph: gs.Graph, node: gs.Node) -> tuple[list[tuple[int, gs.Node]], list[gs.Node]] | None:
    """``node``'s activation dequantizers (input slot, DQ) and output quantizers, or None when
    ``node`` is no QDQ node unit (a Q/DQ itself, another domain, an output read by other nodes)."""
    if node.op in ("QuantizeLinear", "DequantizeLinear") or not is_default_domain(node):
        return None
    inputs = _activation_slots(node)
    outputs = []
    for tensor in node.outputs:
        readers = list(tensor.outputs)
        if not readers or is_graph_output(graph, tensor) or any(r.op != "QuantizeLinear" or not is_default_domain(r) for r in readers):
            return None
        outputs.extend(readers)
    return (inputs, outputs) if inputs and outputs else None


def activation_types(node: gs.Node) -> set[np.dtype]:
    """The integer types of ``node``'s dequantized activation inputs and of the quantizers of its
    outputs (after a sole Relu/Clip reader, which a Conv unit takes in): one type in a unit
    onnxruntime forms, two in a mixed one."""
    types = {_code_type(dq.inputs[2]) for _, dq in _activation_slots(node) if len(dq.inputs) > 2}
    readers = [r for t in node.outputs for r in t.outputs]
    if len(readers) == 1 and readers[0].op in ("Relu", "Clip") and readers[0].outputs:
        readers = list(readers[0].outputs[0].outputs)
    types |= {_code_type(r.inputs[2]) for r in readers if r.op == "QuantizeLinear" and len(r.inputs) > 2}
    return types


def _wide_params(scale: gs.Tensor, zero: gs.Tensor, wide: np.dtype, factor: int, model: Model, base: str) -> tuple[gs.Constant, gs.Constant] | None:
    if not isinstance(scale, gs.Constant) or not isinstance(zero, gs.Constant):
        return None
    wide_scale = np.asarray(np.asarray(scale.values, np.float64) / factor, dtype=scale.values.dtype)
    wide_zero = np.asarray(np.asarray(zero.values, np.int64) * factor, dtype=wide)
    return gs.Constant(model.fresh_name(f"{base}_wide_scale"), wide_scale), gs.Constant(model.fresh_name(f"{base}_wide_zero_point"), wide_zero)


@register_pass
class UniformUnitTypes(Pass):
    """Make each QDQ node unit's activation types one (see the module doc).

    Counters: ``units_widened``, ``inputs_converted``, ``outputs_converted``, ``units_left_mixed``
    (an int32 bias that would overflow at the widened input's scale).
    """

    name = "uniform-unit-types"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        graph = model.graph
        widened = converted_in = converted_out = left_mixed = 0
        for node in list(graph.nodes):
            found = unit_types(graph, node)
            if found is None:
                continue
            inputs, outputs = found
            if any(len(dq.inputs) < 3 for _, dq in inputs) or any(len(q.inputs) < 3 for q in outputs):
                continue  # a zero point is what carries the type
            types = activation_types(node)
            if len(types) != 2:
                continue
            narrow = next((t for t in types if t is not None and _widening(t) is not None), None)
            if narrow is None or _widening(narrow)[0] not in types:
                continue
            wide, factor = _widening(narrow)
            data = next((dq for slot, dq in inputs if slot == 0 and _code_type(dq.inputs[2]) == narrow), None)
            if data is not None and not self._rescale_biases(model, node, factor, data.inputs[1]):
                left_mixed += 1
                continue
            done_in = sum(self._widen_input(model, node, slot, dq, wide, factor) for slot, dq in inputs if _code_type(dq.inputs[2]) == narrow)
            done_out = sum(self._widen_output(model, node, q, wide, factor) for q in outputs if _code_type(q.inputs[2]) == narrow)
            if done_in or done_out:
                widened += 1
                converted_in += done_in
                converted_out += done_out
        if widened:
            graph.cleanup()
            toposort(graph)
        return PassResult(changed=bool(widened), counters={"units_widened": widened, "inputs_converted": converted_in, "outputs_converted": converted_out, "units_left_mixed": left_mixed})

    def _rescale_biases(self, model: Model, node: gs.Node, factor: int, input_scale: gs.Tensor) -> bool:
        """Give ``node``'s int32 biases the scale of its widened data input (``s_in · s_w / f``):
        the same values at ``f`` times the codes, unless the quantizer already computed them at
        that scale (its bias-to-weight scale ratio then is ``s_in / f``, not ``s_in``). False
        (nothing changed) if a code would overflow."""
        weight = _dequantizer(node.inputs[1]) if len(node.inputs) > 1 else None
        rescaled = []
        for slot in sorted(WEIGHT_SLOTS.get(node.op, frozenset())):
            dq = _dequantizer(node.inputs[slot]) if slot < len(node.inputs) else None
            if dq is None or len(dq.inputs) < 2 or _code_type(dq.inputs[0]) != np.dtype(np.int32):
                continue
            codes, scale = dq.inputs[0], dq.inputs[1]
            if not isinstance(codes, gs.Constant) or not isinstance(scale, gs.Constant):
                return False
            if _at_widened_scale(scale, weight, input_scale):
                continue
            wide = np.asarray(codes.values, np.int64) * factor
            if wide.size and np.abs(wide).max() > np.iinfo(np.int32).max:
                return False
            rescaled.append((slot, dq, wide, np.asarray(np.asarray(scale.values, np.float64) / factor, dtype=scale.values.dtype)))
        for slot, dq, wide, wide_scale in rescaled:
            tensor = node.inputs[slot]
            inputs = [gs.Constant(model.fresh_name(f"{tensor.name}_wide_codes"), wide.astype(np.int32)), gs.Constant(model.fresh_name(f"{tensor.name}_wide_scale"), wide_scale), *dq.inputs[2:]]
            out = gs.Variable(model.fresh_name(f"{tensor.name}_wide"), dtype=tensor.dtype, shape=tensor.shape)
            model.graph.nodes.append(gs.Node("DequantizeLinear", model.fresh_name(f"{tensor.name}_wide_DequantizeLinear"), attrs=dict(dq.attrs), inputs=inputs, outputs=[out]))
            node.inputs[slot] = out
        return True

    def _widen_input(self, model: Model, node: gs.Node, slot: int, dq: gs.Node, wide: np.dtype, factor: int) -> bool:
        tensor = node.inputs[slot]
        params = _wide_params(dq.inputs[1], dq.inputs[2], wide, factor, model, tensor.name)
        if params is None:
            return False
        codes, quantizer = dq.inputs[0], producer(dq.inputs[0])
        mover = _exclusive_mover(quantizer, dq)
        if mover is not None:  # re-type the data movement before it and convert its input instead
            for node_ in (quantizer, dq):
                node_.inputs[1], node_.inputs[2] = params
            codes.dtype = wide
            return self._widen_input(model, mover, 0, _dequantizer(mover.inputs[0]), wide, factor)
        if quantizer is not None and quantizer.op == "QuantizeLinear" and is_graph_input(model.graph, quantizer.inputs[0]):
            wide_codes = _quantize(model, quantizer.inputs[0], params, wide, dq.attrs, tensor.name)  # a second boundary Q
        elif isinstance(codes, gs.Constant):
            wide_codes = gs.Constant(model.fresh_name(f"{codes.name}_wide"), np.asarray(np.asarray(codes.values, np.int64) * factor, dtype=wide))
        else:
            wide_codes = _quantize(model, tensor, params, wide, dq.attrs, tensor.name)
        node.inputs[slot] = _dequantize(model, wide_codes, params, dq.attrs, gs.Variable(model.fresh_name(f"{tensor.name}_wide"), dtype=tensor.dtype, shape=tensor.shape))
        return True

    def _widen_output(self, model: Model, node: gs.Node, q: gs.Node, wide: np.dtype, factor: int) -> bool:
        tensor = q.inputs[0]
        if tensor not in node.outputs:
            return True  # another quantizer of this output already converted it
        params = _wide_params(q.inputs[1], q.inputs[2], wide, factor, model, tensor.name)
        if params is None:
            return False
        written = gs.Variable(model.fresh_name(f"{tensor.name}_wide_source"), dtype=tensor.dtype, shape=tensor.shape)
        node.outputs[node.outputs.index(tensor)] = written
        _dequantize(model, _quantize(model, written, params, wide, q.attrs, tensor.name), params, q.attrs, tensor)
        return True


#: Ops that move data without changing it, quantized with their input's parameters.
MOVERS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"})


def _exclusive_mover(quantizer: gs.Node | None, dq: gs.Node) -> gs.Node | None:
    """The data-movement op whose output ``quantizer`` alone reads, for ``dq`` alone, when that
    op reads a DequantizeLinear of the same parameters: converting before it instead of after it
    is the same values, one Convert fewer, and it reaches a graph input's boundary pair (QNN
    fails to finalize ``Q(input) -> DQ -> Reshape -> Q -> DQ -> Convert -> FullyConnected`` at
    ``[1, 8, 16] -> [8, 16]`` with MEM_ALLOC, and builds it with the Convert before the Reshape)."""
    if quantizer is None or quantizer.op != "QuantizeLinear" or list(quantizer.outputs[0].outputs) != [dq]:
        return None
    mover = producer(quantizer.inputs[0])
    if mover is None or mover.op not in MOVERS or not is_default_domain(mover) or list(mover.outputs[0].outputs) != [quantizer]:
        return None
    source = _dequantizer(mover.inputs[0])
    if source is None or len(source.inputs) < 3 or len(quantizer.inputs) < 3:
        return None
    same = all(isinstance(a, gs.Constant) and isinstance(b, gs.Constant) and np.array_equal(a.values, b.values) and a.values.dtype == b.values.dtype
               for a, b in zip(source.inputs[1:3], quantizer.inputs[1:3]))
    return mover if same else None


def _at_widened_scale(bias_scale: gs.Constant, weight: gs.Node | None, input_scale: gs.Tensor) -> bool:
    """The bias's scale over the weight's (first channel) is the narrow input's scale divided by
    the widening factor (257 or 256) rather than the input's scale itself: far below it."""
    if weight is None or len(weight.inputs) < 2 or not isinstance(weight.inputs[1], gs.Constant) or not isinstance(input_scale, gs.Constant):
        return False
    ratio = float(np.ravel(bias_scale.values)[0]) / float(np.ravel(weight.inputs[1].values)[0])
    return ratio < float(np.ravel(input_scale.values)[0]) / 16


def _quantize(model: Model, source: gs.Tensor, params: tuple[gs.Constant, gs.Constant], wide: np.dtype, attrs: dict, base: str) -> gs.Variable:
    """Append ``QuantizeLinear(source)`` at ``params``; its 16-bit codes."""
    codes = gs.Variable(model.fresh_name(f"{base}_wide_quantized"), dtype=wide, shape=source.shape)
    model.graph.nodes.append(gs.Node("QuantizeLinear", model.fresh_name(f"{base}_wide_QuantizeLinear"), attrs=dict(attrs), inputs=[source, *params], outputs=[codes]))
    return codes


def _dequantize(model: Model, codes: gs.Tensor, params: tuple[gs.Constant, gs.Constant], attrs: dict, out: gs.Variable) -> gs.Variable:
    """Append ``DequantizeLinear(codes)`` at ``params`` writing ``out``; ``out``."""
    model.graph.nodes.append(gs.Node("DequantizeLinear", model.fresh_name(f"{out.name}_wide_DequantizeLinear"), attrs=dict(attrs), inputs=[codes, *params], outputs=[out]))
    return out
