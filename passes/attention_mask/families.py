"""Naming a mask: the exporter mask families, and Intel's causal chains.

The rewrites do not depend on the family (they work on what the graph computes); the name
is for the report, so that a user sees which exporter shape was recognised, and so that an
unfamiliar mask is reported instead of silently passed over. The rules follow the table in
``shared/research/npu-deployment.md`` §1:

====================== ======================================================================================
one-minus-mask         ``Mul(Sub(1, Cast(mask)), fill)`` from an input, no index grids (transformers 4.40)
mask-equals-zero       ``Where(Cast(Equal(mask, 0)...), fill, scores)`` directly on the scores (DistilBERT 4.40)
causal-buffer          ``Where(Slice(bool buffer), scores, fill)``: a constant causal buffer (GPT-2 4.40)
trilu-causal           ``Trilu``/``ScatterND`` causal construction (Llama ``_update_causal_mask``, 4.40)
index-grid             index grids (``Range`` + comparison) with ``Gather`` padding, ``Where(·, 0, fill)``
index-grid-gathernd    as index-grid with ``GatherND`` padding (dynamo, opset 18)
bool-attention-mask    a boolean mask fed to ONNX ``Attention`` (dynamo, opset 23)
nan-guard              the NaN guard ``Where(IsNaN(p), 0, p)`` after the softmax
inverted-mask          ``Where(Cast(bool), fill, Sub(1, ·))``: an inverted mask (optimum BERT)
causal-without-input   a causal mask without a mask input: ``Where(LessOrEqual(Range, Range)..., 0, -inf)``
constant-mask          a mask that is trivially constant (an all-True buffer expanded: dynamo ViT)
====================== ======================================================================================

Components found in any family: ``causal`` (a comparison of two position grids, ``Trilu``, or
a constant boolean buffer), ``sliding-window`` (two grid comparisons combined, one offset by a
window: Phi-3, Gemma; Intel's ``BitwiseAnd``/``BitwiseOr`` chains), ``causal-offset`` (Qwen3's
``LessOrEqual(K, Add(cache_len, Q))`` and KV-cache position offsets), ``padding`` (the mask
reads a graph input's values) and ``constant``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import SHAPE_READERS, producer, small_constant, walk
from mapc.passes.attention_mask.detection import AttentionSite, Contribution, cone
from mapc.passes.attention_mask.fills import MAX_INSPECT_BYTES, is_float_dtype, uniform_value

_COMPARISONS = frozenset({"Less", "LessOrEqual", "Greater", "GreaterOrEqual"})
#: Ops a position grid passes through between its ``Range`` and the comparison.
_GRID_STEPS = frozenset({"Unsqueeze", "Reshape", "Cast", "Expand", "Squeeze", "Add", "Sub", "Slice", "Identity"})
#: Nodes a grid walk looks at before giving up.
_GRID_WALK_LIMIT = 12
#: Ops between an already hoisted float mask input and the attention.
_INPUT_STEPS = frozenset({"Reshape", "Unsqueeze", "Cast", "Expand", "Identity", "Max", "Clip", "Slice"})


@dataclass
class MaskFamily:
    """What was recognised for one attention: family labels and mask components."""

    families: list[str] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    unrecognised: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        record = {"families": self.families, "components": self.components}
        if self.unrecognised:
            record["unrecognised"] = self.unrecognised
        return record


def classify(graph: gs.Graph, site: AttentionSite) -> MaskFamily:
    """Family labels and components of ``site``'s masks (see the module docstring)."""
    result = MaskFamily()
    families: set[str] = set()
    components: set[str] = set()
    if site.guard is not None:
        families.add("nan-guard")
    for contribution in site.contributions:
        labels, parts = _classify_contribution(graph, site, contribution)
        if not labels:
            result.unrecognised.append(contribution.mask.name)
        families |= labels
        components |= parts
    result.families = sorted(families, key=_family_order)
    result.components = sorted(components)
    return result


#: The exporter families in report order (the module docstring's table).
FAMILY_ORDER = ("one-minus-mask", "mask-equals-zero", "causal-buffer", "trilu-causal", "index-grid", "index-grid-gathernd",
                "bool-attention-mask", "nan-guard", "inverted-mask", "causal-without-input", "constant-mask")


def _family_order(label: str) -> tuple[int, str]:
    return (FAMILY_ORDER.index(label), label) if label in FAMILY_ORDER else (len(FAMILY_ORDER), label)


def _classify_contribution(graph: gs.Graph, site: AttentionSite, contribution: Contribution) -> tuple[set[str], set[str]]:
    nodes = cone([contribution.mask])
    ops = Counter(node.op for node in nodes)
    parts = _components(graph, nodes, contribution.mask)
    if _is_trivial(contribution):
        bool_attention = contribution.kind == "attn-mask" and contribution.is_boolean
        return ({"constant-mask", "bool-attention-mask"} if bool_attention else {"constant-mask"}), parts | {"constant"}
    if contribution.kind == "attn-mask":
        if contribution.is_boolean:
            return {"bool-attention-mask"}, parts
        return ({"input-additive"} if _is_input_mask(graph, contribution.mask) else _additive_tensor_family(graph, contribution.mask)), parts
    if contribution.kind == "keep-where" and _has_bool_buffer(nodes):
        return {"causal-buffer"}, parts | {"causal"}
    if contribution.kind == "mask-where" and ops["Equal"] and "padding" in parts:
        return {"mask-equals-zero"}, parts
    if contribution.kind in ("keep-where", "mask-where"):
        return _grid_family(ops, parts), parts
    if _is_input_mask(graph, contribution.mask):
        return {"input-additive"}, parts | {"padding"}
    return _additive_tensor_family(graph, contribution.mask), parts


def _additive_tensor_family(graph: gs.Graph, tensor: gs.Tensor) -> set[str]:
    """Family of an additive mask, including mapc's own canonical forms (so a second run, or a
    run after decompose-attention, still names what it sees)."""
    if small_constant(tensor, MAX_INSPECT_BYTES) is not None:
        return {"constant"}
    nodes = cone([tensor])
    ops = Counter(node.op for node in nodes)
    if ops["Trilu"] or ops["ScatterND"]:
        return {"trilu-causal"}
    source = producer(tensor)
    if source is None:
        return set()
    if source.op == "Max" and any(uniform_value(t) is not None for t in source.inputs):
        summed = [t for t in source.inputs if uniform_value(t) is None]
        return _additive_tensor_family(graph, summed[0]) if len(summed) == 1 else set()
    if source.op == "Add":
        parts = [_additive_tensor_family(graph, t) for t in source.inputs]
        return set().union(*parts) if all(parts) else set()
    if source.op == "Where" and _is_inverted_select(source):
        return {"inverted-mask"}
    if source.op == "Where":
        return _grid_family(ops, _components(graph, nodes, tensor))
    if source.op == "Mul" and any(_negative(t) for t in source.inputs):
        if not ops["Range"]:
            return {"one-minus-mask"} if any(_sub_from_one(t) or _is_cast(t) for t in source.inputs) else set()
        return _grid_family(ops, _components(graph, nodes, tensor))
    return set()


def _negative(tensor: gs.Tensor) -> bool:
    value = uniform_value(tensor)
    return value is not None and float(value) < 0


def _is_cast(tensor: gs.Tensor) -> bool:
    node = producer(tensor)
    return node is not None and node.op == "Cast"


def _grid_family(ops: Counter, parts: set[str]) -> set[str]:
    if not ops["Range"]:
        # shapes fixed and the index grids folded: a constant causal buffer and/or padding
        return {"folded"} if parts - {"constant"} or ops["And"] else set()
    if ops["GatherND"]:
        return {"index-grid-gathernd"}
    if "padding" in parts:
        return {"index-grid"}
    return {"causal-without-input"}


def _is_trivial(contribution: Contribution) -> bool:
    value = uniform_value(contribution.mask)
    if value is None:
        return False
    if contribution.kind == "keep-where" or (contribution.kind == "attn-mask" and contribution.is_boolean):
        return bool(value)
    if contribution.kind == "mask-where":
        return not bool(value)
    return bool(np.isfinite(value))


def _is_inverted_select(where: gs.Node) -> bool:
    """``Where(c, fill, Sub(1, x))``: optimum's inverted mask (inverted-mask)."""
    fill = uniform_value(where.inputs[1])
    return fill is not None and float(fill) < 0 and _sub_from_one(where.inputs[2])


def _sub_from_one(tensor: gs.Tensor) -> bool:
    node = producer(tensor)
    if node is None or node.op != "Sub":
        return False
    one = uniform_value(node.inputs[0])
    return one is not None and float(one) == 1.0


def _is_input_mask(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    """A float mask that is a graph input, possibly reshaped or cast (already hoisted)."""
    walked = walk(tensor, _INPUT_STEPS)
    return walked.stop is None and any(t is walked.tensor for t in graph.inputs) and is_float_dtype(walked.tensor.dtype)


def _has_bool_buffer(nodes: list[gs.Node]) -> bool:
    for node in nodes:
        for tensor in node.inputs:
            value = small_constant(tensor, MAX_INSPECT_BYTES)
            if value is not None and value.dtype == np.bool_ and value.size > 1 and not np.all(value == value.flat[0]):
                return True
    return False


def _components(graph: gs.Graph, nodes: list[gs.Node], mask: gs.Tensor) -> set[str]:
    parts: set[str] = set()
    inputs = {id(t) for t in graph.inputs}
    if id(mask) in inputs or any(
        id(t) in inputs for node in nodes if node.op not in SHAPE_READERS for t in node.inputs
    ):
        parts.add("padding")
    if any(node.op == "Trilu" for node in nodes):
        parts.add("causal")
    grids = [node for node in nodes if node.op in _COMPARISONS and all(_grid_offset(t) is not None for t in node.inputs)]
    if grids:
        parts.add("causal")
        offsets = {_grid_offset(t) for node in grids for t in node.inputs}
        if "dynamic" in offsets:
            parts.add("causal-offset")
        if len(grids) >= 2 and "constant" in offsets:
            parts.add("sliding-window")
    if not parts:
        parts.add("constant")
    return parts


def _grid_offset(tensor: gs.Tensor) -> str | None:
    """How a position grid (a ``Range`` through reshapes and casts) is shifted: ``"none"``,
    ``"constant"`` (a window), ``"dynamic"`` (a cache length); None if it is not a grid."""
    shifts: list[gs.Tensor] = []  # the other operand of each Add/Sub on the way

    def through(node: gs.Node) -> gs.Tensor | None:
        if node.op not in _GRID_STEPS:
            return None
        if node.op not in ("Add", "Sub"):
            return node.inputs[0]
        grid_side = [t for t in node.inputs if _leads_to_range(t)]
        if len(grid_side) != 1:
            return None
        shifts.append(next(t for t in node.inputs if t is not grid_side[0]))
        return grid_side[0]

    if not walk(tensor, through, _GRID_WALK_LIMIT).stopped_at("Range"):
        return None
    if not shifts:
        return "none"
    return "constant" if all(small_constant(t, MAX_INSPECT_BYTES) is not None for t in shifts) else "dynamic"


def _leads_to_range(tensor: gs.Tensor) -> bool:
    def through(node: gs.Node) -> gs.Tensor | None:
        if node.op not in _GRID_STEPS:
            return None
        candidates = [t for t in node.inputs if producer(t) is not None] if node.op in ("Add", "Sub") else [node.inputs[0]]
        return candidates[0] if candidates else None

    return walk(tensor, through, _GRID_WALK_LIMIT).stopped_at("Range")
