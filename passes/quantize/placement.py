"""Where Q/DQ goes: the quantized nodes, their tensors, and which tensors share parameters.

:func:`plan_placement` reads the graph (never the weights' values) and returns a :class:`Placement`:

* **quantized nodes**: ops an integer NPU runs (:data:`QUANTIZED_INPUTS`), in the main graph,
  not excluded by the user; in weight-only schemes only the weighted ops;
* **activations**: non-constant float32 tensors read (at a data input) or written by a quantized
  node; each gets one QuantizeLinear/DequantizeLinear pair that all its readers share;
* **weights** (:class:`WeightSpec`): Conv 0, ConvTranspose 1 (or 0 for depthwise ones with more
  groups than outputs per group), Gemm 0 if ``transB`` else 1, MatMul with a constant B its last
  axis; 4-bit MatMul/Gemm weights block-wise along the input dim; LayerNorm/InstanceNorm scales
  per tensor;
* **biases** (:class:`BiasSpec`): int32 with scale ``s_in · s_w`` mapped to output channels;
* **constants**: other float constants of quantized ops, quantized per tensor like activations;
* **ties**: data-movement ops reuse their input's parameters; Concat inputs and output share one,
  except an input with a fixed range (below), which keeps it;
* **bounded ranges**: Softmax, Sigmoid and HardSigmoid outputs lie in [0, 1], Tanh outputs in
  [-1, 1]; the ops in ``fixed_range_ops`` (default: Softmax) get exactly that range, the others
  their calibrated range capped to it;
* **folds**: Relu/Clip whose range can be folded into the quantizer of its output, so its input
  is not quantized separately (asymmetric activations only; also after a float producer, where
  a separate input quantizer would add a second rounding, and after a tied Concat whose inputs
  feed only it, where the whole tie group takes the Relu's range; whether the fold is exact is
  decided once parameters are known).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, clip_bounds, constant_value, is_default_domain, is_graph_output, producer, static_shape
from mapc.passes.base import Note
from mapc.passes.quantize.qtypes import QUANT_TYPES, QuantType

ALL = None
#: Quantized ops -> indices of the inputs that carry data (None: every input).
QUANTIZED_INPUTS: dict[str, tuple[int, ...] | None] = {
    **dict.fromkeys(("Conv", "ConvTranspose", "MatMul"), (0, 1)),
    "Gemm": (0, 1, 2),
    **dict.fromkeys(("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu", "Concat"), ALL),
    "Where": (1, 2),
    **dict.fromkeys(
        (
            "Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Gelu", "Erf", "Elu",
            "Neg", "Abs", "Softmax", "LayerNormalization", "InstanceNormalization", "BatchNormalization",
            "GlobalAveragePool", "AveragePool", "ReduceMean", "ReduceSum", "ArgMax",
        ),
        (0,),
    ),
}
#: Ops whose outputs reuse input 0's parameters: their values are picks of it (or, for Resize,
#: mixes of neighbours). Averages are not: a 7×7 average spans a fraction of its input's range,
#: so AveragePool gets its own parameters.
DATA_MOVEMENT = frozenset(
    {
        "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Gather", "GatherElements",
        "GatherND", "MaxPool", "GlobalMaxPool", "Resize", "DepthToSpace", "SpaceToDepth", "Expand",
        "Tile", "Pad", "ReduceMax", "ReduceMin", "TopK", "Identity",
    }
)
QUANTIZED_INPUTS.update(dict.fromkeys(DATA_MOVEMENT, (0,)))
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: Ops whose outputs cannot leave an interval, whatever their inputs.
NATURAL_RANGES: dict[str, tuple[float, float]] = {"Softmax": (0.0, 1.0), "Sigmoid": (0.0, 1.0), "HardSigmoid": (0.0, 1.0), "Tanh": (-1.0, 1.0)}
FOLDABLE = frozenset({"Relu", "Clip"})


@dataclass(frozen=True)
class PlacementConfig:
    """The choices placement depends on (derived from the scheme and the pass options)."""

    activation_type: QuantType | None
    conv_weight_type: QuantType
    matmul_weight_type: QuantType
    block_size: int | None
    #: Ops whose weights take ``matmul_weight_type`` when it is 4-bit; the others' take
    #: ``conv_weight_type`` (int8 per channel).
    int4_ops: frozenset[str] = frozenset({"MatMul", "Gemm"})
    per_channel: bool = True
    per_channel_matmul: bool = True
    weight_symmetric: bool = True
    #: LayerNorm/InstanceNorm scales: int8 symmetric, or uint8 asymmetric (what Qualcomm HTP takes).
    norm_scale_type: QuantType = QUANT_TYPES["int8"]
    #: LayerNorm/InstanceNorm biases: None for int32 at ``s_in · s_scale``, else this type
    #: (asymmetric, per tensor over the bias's own range).
    norm_bias_type: QuantType | None = None
    symmetric_activations: bool = False
    fold_activations: bool = True
    tie_concat: bool = True
    exclude_nodes: frozenset[str] = frozenset()
    exclude_op_types: frozenset[str] = frozenset()
    #: Ops of :data:`NATURAL_RANGES` whose outputs get that whole range instead of a calibrated one.
    fixed_range_ops: frozenset[str] = frozenset({"Softmax"})

    def weight_type_of(self, op: str) -> QuantType:
        """The weight type of a MatMul or Gemm: the 4-bit type only for the ``int4_ops``."""
        if self.matmul_weight_type.bits == 4 and op not in self.int4_ops:
            return self.conv_weight_type
        return self.matmul_weight_type


@dataclass(frozen=True)
class WeightSpec:
    """How one constant weight is quantized: per channel on ``axis``, per tensor (axis None),
    or block-wise along ``axis`` when ``block_size`` is set."""

    tensor: str
    qtype: QuantType
    axis: int | None
    block_size: int | None = None
    symmetric: bool = True
    #: For block-wise weights: the output-channel axis (what promotion to 8 bits uses).
    output_axis: int | None = None

    @property
    def key(self) -> tuple:
        return (self.tensor, self.qtype.name, self.axis, self.block_size, self.symmetric)

    def widened(self) -> WeightSpec | None:
        """The 8-bit per-channel spec a 4-bit weight is promoted to (None if not 4-bit)."""
        if self.qtype.bits != 4:
            return None
        return WeightSpec(self.tensor, QUANT_TYPES["int8"], self.output_axis, None, True)


@dataclass(frozen=True)
class BiasSpec:
    """An int32 bias: scale ``s_in · s_w[channel] · factor``, zero point 0.

    ``channel_map`` says how the weight's scales line up with the bias's channels: ``identity``
    (one each), ``tile`` (grouped ConvTranspose on axis 1: the scales repeat per group),
    ``repeat`` (ConvTranspose on axis 0: each scale covers ``repeats`` outputs) or ``scalar``.
    """

    tensor: str
    activation: str
    weight: tuple[str, int] | None
    channel_map: Literal["identity", "tile", "repeat", "scalar"] = "identity"
    repeats: int = 1
    factor: float = 1.0


@dataclass(frozen=True)
class Fold:
    """A Relu/Clip whose input comes straight from its producer's only output (quantized or
    float): its output quantizer can do its job, so the node can go (exact when the quantizer
    clamps at its bounds) and the input needs no quantizer of its own. When that input is tied
    (a Concat's output), the Relu's output joins the tie group and the group is clamped to the
    Relu's range, which is exact when the group's other tensors feed only the tying node.

    A fold that the chosen parameters make inexact (the output's tie group reaches below the
    Relu's bound, e.g. a Relu -> MaxPool -> Concat with signed inputs) keeps the node, and
    ``source`` is then quantized with the output's parameters: that adds no error (the grid
    holds the clamp's image exactly: Q(Relu(DQ(Q(x)))) = Q(Relu(x))) and leaves no float
    tensor between the producer and the Relu, which tool chains that form quantized node units
    need (QNN builds a Conv whose output is not quantized in float, with its per-channel weight
    DequantizeLinear refused)."""

    node: str
    output: str
    low: float | None
    high: float | None
    source: str


@dataclass
class Placement:
    """Everything placement decided; tensors and nodes by name (node key: its first output)."""

    nodes: list[str] = field(default_factory=list)
    activations: list[str] = field(default_factory=list)
    constants: list[str] = field(default_factory=list)
    #: constant -> the (node key, input index) reads that use its quantized version.
    constant_uses: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    weights: dict[tuple[str, int], WeightSpec] = field(default_factory=dict)
    biases: dict[tuple[str, int], BiasSpec] = field(default_factory=dict)
    groups: list[list[str]] = field(default_factory=list)
    #: tensor -> op, for outputs of :data:`NATURAL_RANGES` ops; ``fixed`` those of fixed-range ops.
    bounded: dict[str, str] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    folds: dict[str, Fold] = field(default_factory=dict)
    #: tensor -> (low, high) its whole tie group is clamped to (a Relu/Clip folded into a tie group).
    clamps: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    #: Conv/Gemm node -> (input tensor, axis of its channels) for bias correction statistics (a
    #: MatMul has no bias to correct).
    channel_inputs: dict[str, tuple[str, int]] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)

    def group_of(self) -> dict[str, int]:
        return {name: index for index, members in enumerate(self.groups) for name in members}


def node_key(node: gs.Node) -> str:
    """A stable name for ``node``: its first output's name (node names may be empty)."""
    return node.outputs[0].name if node.outputs else node.name


def is_constant(tensor: gs.Tensor) -> bool:
    if isinstance(tensor, gs.Constant):
        return True
    source = producer(tensor)
    return source is not None and source.op == "Constant" and not source.domain and "value" in source.attrs


def _is_float32(tensor: gs.Tensor) -> bool:
    dtype = tensor.dtype
    return dtype is not None and np.dtype(dtype) == np.float32


def _is_other_float(tensor: gs.Tensor) -> bool:
    """A float tensor that is not float32 (float16, float64, bfloat16, float8)."""
    if tensor.dtype is None or _is_float32(tensor):
        return False
    dtype = np.dtype(tensor.dtype)
    return dtype.kind == "f" or dtype.name.startswith(("bfloat16", "float8"))


def plan_placement(model: Model, config: PlacementConfig) -> Placement:
    """Decide placement for ``model`` (shapes and dtypes must be inferred)."""
    placement = Placement()
    graph = model.graph
    if any(True for node in graph.nodes for _ in node.subgraphs()):
        placement.notes.append(Note("quantize.subgraphs", "nodes inside If/Loop/Scan bodies are left in float", fix="split control flow before quantizing"))
    activations: dict[str, None] = {}
    constants: dict[str, None] = {}
    ties = _UnionFind()
    other_floats: list[tuple[str, str]] = []
    for node in graph.nodes:
        if not is_default_domain(node) or node.op not in QUANTIZED_INPUTS:
            continue
        if node.name in config.exclude_nodes or node.op in config.exclude_op_types:
            continue
        key = node_key(node)
        weighted = _plan_weights(node, key, config, placement)
        if config.activation_type is None:
            if weighted:
                placement.nodes.append(key)
            continue
        data_inputs = _data_inputs(node)
        if not any(_is_float32(node.inputs[i]) for i in data_inputs) and not any(_is_float32(t) for t in node.outputs):
            other = [np.dtype(node.inputs[i].dtype).name for i in data_inputs if _is_other_float(node.inputs[i])]
            if other:
                other_floats.append((node.name or node.op, other[0]))
            continue
        placement.nodes.append(key)
        quantized_inputs = []
        for index in data_inputs:
            tensor = node.inputs[index]
            if not tensor.name or not _is_float32(tensor) or (key, index) in placement.weights or (key, index) in placement.biases:
                continue
            if is_constant(tensor):
                constants[tensor.name] = None
                placement.constant_uses.setdefault(tensor.name, []).append((key, index))
            else:
                activations[tensor.name] = None
            quantized_inputs.append(tensor)
        outputs = [t for t in node.outputs if t.name and _is_float32(t)]
        for tensor in outputs:
            activations[tensor.name] = None
        if node.op in NATURAL_RANGES and outputs:
            placement.bounded[outputs[0].name] = node.op
            if node.op in config.fixed_range_ops:
                placement.fixed[outputs[0].name] = node.op
        if node.op in DATA_MOVEMENT and _ties_output(node) and quantized_inputs and quantized_inputs[0] is node.inputs[0]:
            for tensor in outputs:
                ties.union(node.inputs[0].name, tensor.name)
        if node.op == "Concat" and config.tie_concat and outputs:  # no tie to an output of unknown type
            for tensor in [*quantized_inputs, *outputs]:
                if tensor.name not in placement.fixed:  # a fixed range stays exact (QNN's Softmax needs it)
                    ties.union(outputs[0].name, tensor.name)
    if other_floats:
        placement.notes.append(Note(
            "quantize.not-float32",
            f"{len(other_floats)} node(s) compute in {', '.join(sorted({t for _, t in other_floats}))} "
            f"({', '.join(name for name, _ in other_floats[:3])}{', ...' if len(other_floats) > 3 else ''}) "
            "and are left unquantized; only float32 tensors are quantized",
            fix="export the model in float32 to quantize them",
            severity="warning",
        ))
    _plan_folds(model, config, placement, activations, ties)
    placement.activations = list(activations)
    placement.constants = list(constants)
    placement.groups = ties.groups([*placement.activations, *placement.constants])
    _note_runtime_weights(model, placement)
    return placement


def _data_inputs(node: gs.Node) -> list[int]:
    indices = QUANTIZED_INPUTS[node.op]
    count = len(node.inputs)
    return list(range(count)) if indices is None else [i for i in indices if i < count]


def _ties_output(node: gs.Node) -> bool:
    if node.op == "Resize":
        return node.attrs.get("mode", "nearest") in ("nearest", "linear")
    if node.op == "Pad":
        mode = node.attrs.get("mode", "constant")
        if mode != "constant" or len(node.inputs) < 3 or not node.inputs[2].name:
            return True
        value = constant_value(node.inputs[2])
        return value is not None and not np.any(value)
    return True


# -- tensors whose range must not be clipped -------------------------------------------------------

#: Ops whose input decides a choice: clipping it changes which class or token wins.
DECISION_OPS = frozenset({"Softmax", "LogSoftmax", "ArgMax", "ArgMin", "TopK"})
#: Ops whose outputs are bounded whatever their inputs.
BOUNDED_OPS = frozenset({"Erf", "Tanh", "Sigmoid", "HardSigmoid", "Softmax", "Sin", "Cos"})
#: Ops that keep a bounded input bounded when their other inputs are constants.
BOUND_PRESERVING = frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Relu", "Clip"}) | DATA_MOVEMENT


def decision_tensors(model: Model, placement: Placement) -> set[str]:
    """Graph outputs and inputs of decision ops, with every tensor tied to them."""
    seeds = {t.name for t in model.graph.outputs}
    seeds |= {node.inputs[0].name for node in model.graph.nodes if node.op in DECISION_OPS and node.inputs}
    return {name for group in placement.groups if seeds.intersection(group) for name in group} | seeds


def bounded_tensors(model: Model) -> set[str]:
    """Tensors bounded by construction: outputs of :data:`BOUNDED_OPS`, of Clip with constant
    bounds, and of affine maps and data movement of bounded tensors (GELU's ``1 + erf(x/√2)``).
    Their calibrated range has no outliers; clipping it only cuts real values."""
    bounded: set[str] = set()
    for node in model.graph.nodes:  # topological order
        outputs = [t.name for t in node.outputs if t.name]
        if node.op in BOUNDED_OPS:
            bounded.update(outputs)
        elif node.op == "Clip" and len(node.inputs) >= 3 and all(is_constant(t) for t in node.inputs[1:3] if t.name):
            bounded.update(outputs)
        elif node.op in BOUND_PRESERVING and node.inputs:
            data = [t for t in node.inputs if t.name and not is_constant(t)]
            if node.op in DATA_MOVEMENT:
                data = data[:1]
            if data and all(t.name in bounded for t in data):
                bounded.update(outputs)
    return bounded


# -- weights and biases ----------------------------------------------------------------------------


def _plan_weights(node: gs.Node, key: str, config: PlacementConfig, placement: Placement) -> bool:
    """Record the weight/bias specs of a weighted node; True if it has a quantized weight."""
    weight_only = config.activation_type is None
    if node.op in ("Conv", "ConvTranspose"):
        return _plan_conv(node, key, config, placement)
    if node.op == "Gemm":
        return _plan_gemm(node, key, config, placement)
    if node.op == "MatMul":
        return _plan_matmul(node, key, config, placement)
    if node.op in ("LayerNormalization", "InstanceNormalization") and not weight_only:
        scale = node.inputs[1] if len(node.inputs) > 1 else None
        if scale is not None and is_constant(scale) and _is_float32(scale):
            qtype = config.norm_scale_type
            placement.weights[(key, 1)] = WeightSpec(scale.name, qtype, None, None, qtype.signed)
            bias = _weight(node, 2)
            if bias is not None and config.norm_bias_type is not None:
                placement.weights[(key, 2)] = WeightSpec(bias.name, config.norm_bias_type, None, None, config.norm_bias_type.signed)
            elif bias is not None:
                placement.biases[(key, 2)] = BiasSpec(bias.name, node.inputs[0].name, (key, 1), "scalar")
            return True
    return False


def _weight(node: gs.Node, index: int) -> gs.Tensor | None:
    if len(node.inputs) <= index:
        return None
    tensor = node.inputs[index]
    return tensor if tensor.name and is_constant(tensor) and _is_float32(tensor) else None


def _plan_conv(node: gs.Node, key: str, config: PlacementConfig, placement: Placement) -> bool:
    weight = _weight(node, 1)
    shape = static_shape(weight) if weight is not None else None
    if weight is None or shape is None or len(shape) < 3:
        return False
    group = int(node.attrs.get("group", 1))
    channel_map, repeats, axis = "identity", 1, 0
    if node.op == "ConvTranspose":
        per_group_out = shape[1]
        if group > 1 and shape[0] == group and group > per_group_out:
            axis, channel_map, repeats = 0, "repeat", per_group_out
        else:
            axis, channel_map, repeats = 1, ("tile" if group > 1 else "identity"), group
    qtype = config.conv_weight_type
    placement.weights[(key, 1)] = WeightSpec(weight.name, qtype, axis if config.per_channel else None, None, config.weight_symmetric or qtype.signed)
    if not config.per_channel:
        channel_map = "scalar"
    bias = _weight(node, 2)
    if bias is not None and config.activation_type is not None:
        placement.biases[(key, 2)] = BiasSpec(bias.name, node.inputs[0].name, (key, 1), channel_map, repeats)
    if node.op == "Conv":
        placement.channel_inputs[key] = (node.inputs[0].name, 1)
    return True


def _plan_gemm(node: gs.Node, key: str, config: PlacementConfig, placement: Placement) -> bool:
    weight = _weight(node, 1)
    shape = static_shape(weight) if weight is not None else None
    if weight is None or shape is None or len(shape) != 2:
        return False
    trans_b = bool(node.attrs.get("transB", 0))
    output_axis, input_axis = (0, 1) if trans_b else (1, 0)
    qtype = config.weight_type_of("Gemm")
    if qtype.bits == 4:
        placement.weights[(key, 1)] = WeightSpec(weight.name, qtype, input_axis, config.block_size, config.weight_symmetric, output_axis)
    else:
        placement.weights[(key, 1)] = WeightSpec(weight.name, qtype, output_axis if config.per_channel else None, None, config.weight_symmetric or qtype.signed)
    bias = _weight(node, 2)
    beta = float(node.attrs.get("beta", 1.0))
    channels = shape[output_axis]
    if bias is not None and qtype.bits != 4 and config.activation_type is not None and beta != 0.0:
        bias_shape = static_shape(bias)
        if bias_shape in ((channels,), (1, channels)):
            factor = float(node.attrs.get("alpha", 1.0)) / beta
            placement.biases[(key, 2)] = BiasSpec(bias.name, node.inputs[0].name, (key, 1), "identity" if config.per_channel else "scalar", 1, factor)
    trans_a = bool(node.attrs.get("transA", 0))
    placement.channel_inputs[key] = (node.inputs[0].name, 0 if trans_a else 1)
    return True


def _plan_matmul(node: gs.Node, key: str, config: PlacementConfig, placement: Placement) -> bool:
    weight = _weight(node, 1)
    shape = static_shape(weight) if weight is not None else None
    if weight is None or shape is None or len(shape) == 0:
        return False
    qtype = config.weight_type_of("MatMul")
    rank = len(shape)
    if qtype.bits == 4:
        placement.weights[(key, 1)] = WeightSpec(weight.name, qtype, max(rank - 2, 0), config.block_size, config.weight_symmetric, rank - 1 if rank >= 2 else None)
    else:
        per_channel = config.per_channel and config.per_channel_matmul and rank >= 2
        placement.weights[(key, 1)] = WeightSpec(weight.name, qtype, rank - 1 if per_channel else None, None, config.weight_symmetric or qtype.signed)
    return True


def _note_runtime_weights(model: Model, placement: Placement) -> None:
    """MatMul/Gemm/Conv weights computed from constants at run time cannot be per-channel."""
    for node in model.graph.nodes:
        if node.op in WEIGHTED_OPS and len(node.inputs) > 1 and (node_key(node), 1) not in placement.weights and node_key(node) in placement.nodes:
            source = producer(node.inputs[1])
            if source is not None and source.inputs and all(is_constant(t) for t in source.inputs if t.name):
                placement.notes.append(Note(
                    "quantize.runtime-weight",
                    f"the weight of {node.op} is computed from constants at run time ({source.op}), so it is quantized per tensor like an activation",
                    node=node.name or node_key(node),
                    fix="run constant folding before quantize",
                ))


# -- activation folding ----------------------------------------------------------------------------


def _plan_folds(model: Model, config: PlacementConfig, placement: Placement, activations: dict[str, None], ties: _UnionFind) -> None:
    if not config.fold_activations or config.symmetric_activations or config.activation_type is None:
        return
    quantized = set(placement.nodes)
    graph = model.graph
    tensors = graph.tensors()
    for node in graph.nodes:
        if node.op not in FOLDABLE or node_key(node) not in quantized:
            continue
        source_tensor = node.inputs[0]
        source = producer(source_tensor)
        if source is None:
            continue
        if len(source_tensor.outputs) != 1 or is_graph_output(graph, source_tensor):
            continue
        bounds = clip_bounds(node) if node.op == "Clip" else (0.0, None)
        if bounds is None:
            continue
        output = node.outputs[0]
        if ties.tied(source_tensor.name):
            if not _group_feeds_only(graph, tensors, ties.members(source_tensor.name), source_tensor, source):
                continue
            ties.union(source_tensor.name, output.name)
            placement.clamps[output.name] = bounds
        placement.folds[output.name] = Fold(node_key(node), output.name, *bounds, source=source_tensor.name)
        activations.pop(source_tensor.name, None)


def _group_feeds_only(graph: gs.Graph, tensors: dict[str, gs.Tensor], members: list[str], result: gs.Tensor, node: gs.Node) -> bool:
    """True if every member of a tie group but ``result`` (``node``'s output, e.g. a Concat's) is
    read by ``node`` alone and is no graph output: then clamping the whole group to the range
    of the Relu/Clip after ``result`` changes nothing else (Relu(Concat(a, b)) =
    Concat(Relu(a), Relu(b)))."""
    for name in members:
        if name == result.name:
            continue
        tensor = tensors.get(name)
        if tensor is None or is_graph_output(graph, tensor) or [reader for reader in tensor.outputs] != [node]:
            return False
    return True


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}

    def find(self, item: str) -> str:
        if item not in self.parent:
            self.parent[item] = item
            self.size[item] = 1
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            self.size[ra] += self.size.pop(rb)

    def tied(self, item: str) -> bool:
        return self.size[self.find(item)] > 1

    def members(self, item: str) -> list[str]:
        """Every item tied to ``item`` (``item`` included)."""
        root = self.find(item)
        return [other for other in list(self.parent) if self.find(other) == root]

    def groups(self, items: Iterable[str]) -> list[list[str]]:
        """Groups of ``items`` in first-appearance order (items never tied stand alone)."""
        order: dict[str, list[str]] = {}
        for item in items:
            order.setdefault(self.find(item), []).append(item)
        return list(order.values())
