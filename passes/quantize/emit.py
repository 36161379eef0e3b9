"""Writing QuantizeLinear/DequantizeLinear into the graph.

:func:`write_qdq` produces the standard QDQ model onnxruntime and NPU tool chains read:

* an activation gets ``QuantizeLinear → DequantizeLinear`` right after it is computed, and every
  reader reads the DequantizeLinear output (a graph output keeps its name);
* a weight, a bias or another constant is stored as integers and read through a
  DequantizeLinear (per axis, or block-wise with ``block_size``);
* a folded Relu/Clip is removed, its producer writing straight into the quantizer.

:func:`write_probe` builds the instrument behind the accuracy report: the same quantizers, but
every quantized tensor is chosen at run time between its float value, its planned quantized
value and its promoted (wider) one by an integer switch input, so one onnxruntime session can
measure any combination (one tensor at a time, or a promotion candidate).

Q/DQ of 16-bit and 4-bit types use ai.onnx when the model's opset is at least 21; below, 16-bit
Q/DQ come from the ``com.microsoft`` domain (per-axis Q/DQ likewise below opset 13).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, constant_value, is_graph_input, is_graph_output, remove_nodes, toposort
from mapc.passes.quantize.params import ActivationParams
from mapc.passes.quantize.placement import Fold, node_key
from mapc.passes.quantize.qtypes import INT32, QuantType, quantize
from mapc.passes.quantize.weights import QuantizedWeight

CONTRIB = "com.microsoft"
ACTIVATION_SWITCH = "mapc_activation_switch"
WEIGHT_SWITCH = "mapc_weight_switch"


@dataclass
class BiasDecision:
    """An int32 bias for input ``index`` of a node (``tensor`` None: the node had no bias)."""

    tensor: str | None
    codes: np.ndarray
    scale: np.ndarray
    axis: int | None
    original: np.ndarray | None = None


@dataclass
class Decisions:
    """Everything :func:`write_qdq` writes, keyed by tensor name or ``(node key, input index)``."""

    activations: dict[str, ActivationParams] = field(default_factory=dict)
    constant_uses: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    weights: dict[tuple[str, int], QuantizedWeight] = field(default_factory=dict)
    biases: dict[tuple[str, int], BiasDecision] = field(default_factory=dict)
    folds: list[Fold] = field(default_factory=list)


@dataclass
class ProbeChoice:
    """One switchable quantizer of the probe: state 1 is ``main``, state 2 ``alternative``."""

    main: object
    alternative: object | None = None


@dataclass
class ProbeSpec:
    """The probe's quantizers: activation groups (members share a switch) and weights (their
    uses and biases share a switch). An entry whose flag is False is not switchable: it is
    written as in the final model (always its ``main`` quantizer). Tensors not listed stay float.
    """

    groups: list[tuple[list[str], ProbeChoice, bool]] = field(default_factory=list)
    constant_uses: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    weights: list[tuple[list[tuple[str, int]], ProbeChoice, bool]] = field(default_factory=list)
    #: bias use -> (index of its weight in ``weights``, the int32 bias).
    biases: dict[tuple[str, int], tuple[int, BiasDecision]] = field(default_factory=dict)

    @property
    def switches(self) -> tuple[int, int]:
        """Lengths of the activation and weight switch vectors."""
        return sum(1 for g in self.groups if g[2]), sum(1 for w in self.weights if w[2])


class _Writer:
    def __init__(self, model: Model) -> None:
        self.model = model
        self.graph = model.graph
        #: where new nodes go: the main graph, or a branch of the probe's If nodes.
        self.target = model.graph
        self.nodes = {node_key(node): node for node in self.graph.nodes}
        self.count = {"quantize_linear": 0, "dequantize_linear": 0}

    def add(self, node: gs.Node) -> None:
        self.target.nodes.append(node)

    def branch(self, build: Callable[[], gs.Tensor]) -> gs.Graph:
        """A subgraph whose nodes are those ``build`` adds and whose output it returns."""
        graph = gs.Graph(name=self.name("mapc_branch"), opset=self.model.opset)
        outer, self.target = self.target, graph
        try:
            graph.outputs = [build()]
        finally:
            self.target = outer
        return graph

    def name(self, base: str) -> str:
        return self.model.fresh_name(base)

    def domain(self, qtype: QuantType, *, axis: bool = False, block: bool = False) -> str:
        needed = 21 if (qtype.bits in (4, 16) or block) else (13 if axis else 10)
        return "" if self.model.opset >= needed else CONTRIB

    def constant(self, base: str, values: np.ndarray, qtype: QuantType | None = None) -> gs.Constant:
        name = self.name(base)
        array = np.asarray(values)
        if qtype is not None:
            array = array.astype(qtype.numpy_dtype, copy=False)
        return gs.Constant(name, np.asarray(array, order="C"))  # no copy of weights; keeps 0-d scalars 0-d

    def quantize_activation(self, tensor: gs.Tensor, params: ActivationParams) -> gs.Variable:
        """Q → DQ nodes reading ``tensor``; returns the DequantizeLinear output."""
        base = tensor.name
        scale = self.constant(f"{base}_scale", np.asarray(params.scale, dtype=np.float32))
        zero = self.constant(f"{base}_zero_point", np.asarray(params.zero_point), params.qtype)
        domain = self.domain(params.qtype)
        codes = gs.Variable(self.name(f"{base}_quantized"), dtype=params.qtype.numpy_dtype if params.qtype.bits != 4 else None, shape=tensor.shape)
        out = gs.Variable(self.name(f"{base}_dequantized"), dtype=np.float32, shape=tensor.shape)
        self.add(gs.Node("QuantizeLinear", self.name(f"{base}_QuantizeLinear"), inputs=[tensor, scale, zero], outputs=[codes], domain=domain))
        self.add(gs.Node("DequantizeLinear", self.name(f"{base}_DequantizeLinear"), inputs=[codes, scale, zero], outputs=[out], domain=domain))
        self.count["quantize_linear"] += 1
        self.count["dequantize_linear"] += 1
        return out

    def dequantize_constant(
        self,
        base: str,
        codes: np.ndarray,
        scale: np.ndarray,
        zero_point: np.ndarray | None,
        qtype: QuantType,
        *,
        axis: int | None = None,
        block_size: int | None = None,
        shape: Sequence[int] | None = None,
    ) -> gs.Variable:
        """Integer ``codes`` stored as an initializer, read through a DequantizeLinear."""
        stored = self.constant(f"{base}_quantized", codes, qtype)
        inputs: list[gs.Tensor] = [stored, self.constant(f"{base}_scale", np.asarray(scale, dtype=np.float32))]
        if zero_point is not None:
            inputs.append(self.constant(f"{base}_zero_point", zero_point, qtype))
        attrs: dict[str, int] = {}
        per_axis = axis is not None and np.ndim(scale) > 0
        if per_axis or block_size is not None:
            attrs["axis"] = int(axis or 0)
        if block_size is not None:
            attrs["block_size"] = int(block_size)
        out = gs.Variable(self.name(f"{base}_dequantized"), dtype=np.float32, shape=list(shape) if shape is not None else list(np.shape(codes)))
        domain = self.domain(qtype, axis=per_axis, block=block_size is not None)
        self.add(gs.Node("DequantizeLinear", self.name(f"{base}_DequantizeLinear"), inputs=inputs, outputs=[out], attrs=attrs, domain=domain))
        self.count["dequantize_linear"] += 1
        return out

    def weight(self, base: str, weight: QuantizedWeight) -> gs.Variable:
        spec = weight.spec
        zero = weight.zero_point if (not spec.symmetric or not spec.qtype.signed or spec.qtype.bits == 8) else None
        if np.size(weight.scale) == 1:  # one block or one channel: per tensor (onnxruntime refuses a block_size then)
            scalar_zero = None if zero is None else np.asarray(zero).reshape(())
            return self.dequantize_constant(base, weight.codes, np.asarray(weight.scale).reshape(()), scalar_zero, spec.qtype, shape=weight.shape)
        return self.dequantize_constant(base, weight.codes, weight.scale, zero, spec.qtype, axis=spec.axis, block_size=spec.block_size, shape=weight.shape)

    def bias(self, base: str, bias: BiasDecision) -> gs.Variable:
        return self.dequantize_constant(base, bias.codes, bias.scale, np.zeros(np.shape(bias.scale), dtype=np.int32), INT32, axis=bias.axis)

    def set_input(self, key: tuple[str, int], tensor: gs.Tensor) -> None:
        node = self.nodes[key[0]]
        index = key[1]
        while len(node.inputs) < index:
            node.inputs.append(gs.Variable.empty())
        if index == len(node.inputs):
            node.inputs.append(tensor)
        else:
            node.inputs[index] = tensor

    def redirect(self, tensor: gs.Tensor, build: Callable[[], gs.Variable]) -> gs.Variable:
        """Readers of ``tensor`` (as they are now) read what ``build()`` makes from it; a graph
        output keeps its name (the replacement takes it; ``tensor`` is renamed)."""
        readers = [(node, index) for node in list(tensor.outputs) for index, value in enumerate(node.inputs) if value is tensor]
        positions = [index for index, value in enumerate(self.graph.outputs) if value is tensor]
        replacement = build()
        for node, index in readers:
            node.inputs[index] = replacement
        if positions and not is_graph_input(self.graph, tensor):
            name = tensor.name
            tensor.name = self.name(f"{name}_float")
            replacement.name = name
            for index in positions:
                self.graph.outputs[index] = replacement
        return replacement

    def tensor(self, name: str) -> gs.Tensor | None:
        return self._tensors.get(name)

    def index_tensors(self) -> None:
        self._tensors = self.graph.tensors()


def write_qdq(model: Model, decisions: Decisions) -> dict[str, int]:
    """Write ``decisions`` into ``model`` (see module doc); returns node counts."""
    writer = _Writer(model)
    writer.index_tensors()
    removed = _apply_folds(writer, decisions.folds)
    written: dict[int, gs.Variable] = {}
    for key, weight in decisions.weights.items():
        if id(weight) not in written:
            written[id(weight)] = writer.weight(weight.spec.tensor, weight)
        writer.set_input(key, written[id(weight)])
    for key, bias in decisions.biases.items():
        writer.set_input(key, writer.bias(bias.tensor or f"{key[0]}_bias", bias))
    for name, uses in decisions.constant_uses.items():
        params = decisions.activations.get(name)
        tensor = writer.tensor(name)
        if params is None or tensor is None:
            continue
        dequantized = _quantized_constant(writer, tensor, params)
        for key in uses:
            writer.set_input(key, dequantized)
    for name, params in decisions.activations.items():
        if name in decisions.constant_uses:
            continue
        tensor = writer.tensor(name)
        if tensor is None or isinstance(tensor, gs.Constant):
            continue
        writer.redirect(tensor, lambda tensor=tensor, params=params: writer.quantize_activation(tensor, params))
    toposort(model.graph)
    return {**writer.count, "activations_folded": removed}


def dedicate_dequantizers(model: Model) -> int:
    """Give every reader of a shared DequantizeLinear its own copy; returns the copies added.

    Toolchains that group a DQ with the op reading it into one quantized node unit
    (onnxruntime's QNN EP) need one DQ per reader: a DQ shared by several readers lands in
    several units, which makes the QNN EP plugin abort (``Processed N nodes. Expected to process
    M``). The copies read the same integer codes, scale and zero point, so no weight is copied.
    A graph output keeps the original DQ.
    """
    added = 0
    graph = model.graph
    for node in list(graph.nodes):
        if node.op != "DequantizeLinear" or not node.outputs:
            continue
        shared = node.outputs[0]
        readers = list({id(reader): reader for reader in shared.outputs}.values())
        keep_first = not is_graph_output(graph, shared)
        for reader in readers[1:] if keep_first else readers:
            output = gs.Variable(model.fresh_name(f"{shared.name}_dedicated"), dtype=shared.dtype, shape=shared.shape)
            copy = gs.Node("DequantizeLinear", model.fresh_name(f"{node.name}_dedicated"), attrs=dict(node.attrs),
                           inputs=list(node.inputs), outputs=[output], domain=node.domain)
            graph.nodes.append(copy)
            for index, tensor in enumerate(list(reader.inputs)):
                if tensor is shared:
                    reader.inputs[index] = output
            added += 1
    if added:
        toposort(graph)
    return added


def _quantized_constant(writer: _Writer, tensor: gs.Tensor, params: ActivationParams) -> gs.Variable:
    values = np.asarray(constant_value(tensor), dtype=np.float32)
    codes = quantize(values, params.scale, params.zero_point, params.qtype)
    return writer.dequantize_constant(tensor.name, codes, np.asarray(params.scale, dtype=np.float32), np.asarray(params.zero_point), params.qtype, shape=values.shape)


def _apply_folds(writer: _Writer, folds: Sequence[Fold]) -> int:
    doomed = []
    for fold in folds:
        node = writer.nodes.get(fold.node)
        if node is None:
            continue
        source_tensor = node.inputs[0]
        source = source_tensor.inputs[0] if source_tensor.inputs else None
        if source is None:
            continue
        output = node.outputs[0]
        slot = next(i for i, t in enumerate(source.outputs) if t is source_tensor)
        node.outputs.clear()
        node.inputs.clear()
        source.outputs[slot] = output
        doomed.append(node)
    return remove_nodes(writer.graph, doomed)


# -- the probe -------------------------------------------------------------------------------------


def write_probe(model: Model, spec: ProbeSpec) -> dict[str, int]:
    """Write the quantizers of ``spec`` into ``model`` (see module doc). Adds two int64 graph
    inputs, :data:`ACTIVATION_SWITCH` and :data:`WEIGHT_SWITCH`, one entry per switchable
    group/weight in order (0 float, 1 main, 2 alternative). Each switchable quantizer is an
    ``If`` on its entry, so only the quantizers switched on are computed."""
    writer = _Writer(model)
    writer.index_tensors()
    group_count, weight_count = spec.switches
    activation_switch = gs.Variable(ACTIVATION_SWITCH, dtype=np.int64, shape=[max(group_count, 1)])
    weight_switch = gs.Variable(WEIGHT_SWITCH, dtype=np.int64, shape=[max(weight_count, 1)])
    model.graph.inputs.extend([activation_switch, weight_switch])
    states = [writer.constant(f"mapc_state_{state}", np.array(state, dtype=np.int64)) for state in (0, 1, 2)]

    def conditions(switch: gs.Variable, index: int, count: int) -> list[gs.Variable]:
        position = writer.constant(f"{switch.name}_{index}", np.array(index, dtype=np.int64))
        picked = gs.Variable(writer.name(f"{switch.name}_{index}_state"), dtype=np.int64, shape=[])
        writer.add(gs.Node("Gather", writer.name("mapc_gather"), inputs=[switch, position], outputs=[picked], attrs={"axis": 0}))
        flags = []
        for state in states[1 : count + 1]:
            flag = gs.Variable(writer.name(f"{switch.name}_{index}_is_{state.name}"), dtype=np.bool_, shape=[])
            writer.add(gs.Node("Equal", writer.name("mapc_equal"), inputs=[picked, state], outputs=[flag]))
            flags.append(flag)
        return flags

    def select(original: gs.Tensor, variants: list[tuple[gs.Variable, Callable[[], gs.Variable]]], shape) -> gs.Variable:
        out = gs.Variable(writer.name(f"{original.name}_selected"), dtype=np.float32, shape=shape)
        if not variants:
            writer.add(gs.Node("Identity", writer.name("mapc_float"), inputs=[original], outputs=[out]))
            return out
        flag, build = variants[0]
        then_branch = writer.branch(build)
        else_branch = writer.branch(lambda: select(original, variants[1:], shape))
        writer.add(gs.Node("If", writer.name("mapc_switch"), inputs=[flag], outputs=[out], attrs={"then_branch": then_branch, "else_branch": else_branch}))
        return out

    switch_index = 0
    for members, choice, switchable in spec.groups:
        params = [choice.main] + ([choice.alternative] if choice.alternative is not None and switchable else [])
        flags = conditions(activation_switch, switch_index, len(params)) if switchable else []
        switch_index += int(switchable)
        for name in members:
            tensor = writer.tensor(name)
            if tensor is None:
                continue
            if name in spec.constant_uses:
                if switchable:
                    variants = [(flag, lambda tensor=tensor, p=p: _quantized_constant(writer, tensor, p)) for flag, p in zip(flags, params)]
                    replacement = select(tensor, variants, tensor.shape)
                else:
                    replacement = _quantized_constant(writer, tensor, choice.main)
                for key in spec.constant_uses[name]:
                    writer.set_input(key, replacement)
                continue
            if switchable:
                variants = [(flag, lambda tensor=tensor, p=p: writer.quantize_activation(tensor, p)) for flag, p in zip(flags, params)]
                writer.redirect(tensor, lambda tensor=tensor, variants=variants: select(tensor, variants, tensor.shape))
            else:
                writer.redirect(tensor, lambda tensor=tensor: writer.quantize_activation(tensor, choice.main))
    biases_of: dict[int, list[tuple[tuple[str, int], BiasDecision]]] = {}
    for key, (weight_index, bias) in spec.biases.items():
        biases_of.setdefault(weight_index, []).append((key, bias))
    switch_index = 0
    for index, (uses, choice, switchable) in enumerate(spec.weights):
        main: QuantizedWeight = choice.main  # type: ignore[assignment]
        weights = [main] + ([choice.alternative] if choice.alternative is not None and switchable else [])
        flags = conditions(weight_switch, switch_index, len(weights)) if switchable else []
        switch_index += int(switchable)
        if switchable:
            original = writer.tensor(main.spec.tensor)
            assert original is not None
            variants = [(flag, lambda w=w: writer.weight(main.spec.tensor, w)) for flag, w in zip(flags, weights)]
            replacement = select(original, variants, list(main.shape))
        else:
            replacement = writer.weight(main.spec.tensor, main)
        for key in uses:
            writer.set_input(key, replacement)
        for key, bias in biases_of.get(index, []):
            if not switchable:
                writer.set_input(key, writer.bias(bias.tensor or f"{key[0]}_bias", bias))
                continue
            if bias.tensor:
                float_bias = writer.tensor(bias.tensor)
            else:
                float_bias = writer.constant(f"{key[0]}_bias_float", np.zeros(np.shape(bias.codes), dtype=np.float32))
            assert float_bias is not None
            quantized = [(flag, lambda key=key, bias=bias: writer.bias(bias.tensor or f"{key[0]}_bias", bias)) for flag in flags]
            writer.set_input(key, select(float_bias, quantized, list(np.shape(bias.codes))))
    toposort(model.graph)
    return writer.count
