"""mask-as-input's building blocks: the float graph input that replaces a mask subgraph, and its contract.

The rule itself is :func:`~.rules.mask_as_input`. Every distinct final mask (layers usually
share one) becomes a graph input ``additive_attention_mask`` of shape ``[B, 1, S, T]`` (the mask's own shape where the
attention's scores are not 4-D). The contract, recorded in the report and in
``ctx.facts["attention-mask"]["hoisted_inputs"]``: additive, float, 0 where query ``i`` may
attend key ``j`` and ``NEG`` elsewhere, every value in ``[NEG, 0]``. Graph inputs that only fed
the removed mask subgraph (``attention_mask`` itself, usually) are removed from the interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from mapc.ir import Model
from mapc.passes.attention_mask.detection import AttentionSite, cone, cone_inputs

Dim = int | str | None


@dataclass
class HoistedMask:
    """One new graph input and the host-side contract for it."""

    input: gs.Variable
    #: What the attentions read: the input clamped to ``>= NEG``.
    clamped: gs.Tensor
    source: str
    attentions: list[str]
    components: list[str]
    removed_inputs: list[str] = field(default_factory=list)
    #: The removed subgraph as a standalone model: original inputs in, this input out.
    host_model: onnx.ModelProto | None = None

    def contract(self, neg: float) -> dict[str, Any]:
        dims = ["?" if d is None else d for d in (self.input.shape or [])]
        return {
            "input": self.input.name,
            "dtype": str(self.input.dtype),
            "shape": dims,
            "contract": f"additive: 0 where query i may attend key j, {neg:g} where it may not; every value in [{neg:g}, 0]",
            "fill": neg,
            "replaces": self.source,
            "removed_inputs": self.removed_inputs,
            "attentions": self.attentions,
            "host_recipe": host_recipe(self.components, neg, self.input.name),
            "host_model": "exact: the removed subgraph as a model from the original inputs (mapc compile writes "
            "<output stem>.<input>.host.onnx)" if self.host_model is not None else
            "none: the mask reads the shape of a network activation; fix the input shapes and recompile",
        }


def new_mask_input(model: Model, site: AttentionSite, mask: gs.Tensor, neg: float, clamp: Callable[[gs.Tensor], gs.Tensor]) -> HoistedMask:
    """A new graph input standing for ``mask`` (first read by ``site``), and its host model.

    Attentions read it through ``clamp`` (``Max(., NEG)``: a host passing finfo.min cannot break
    the device graph); the caller rewires them to :attr:`HoistedMask.clamped`.
    """
    new_input = gs.Variable(model.fresh_name("additive_attention_mask"), dtype=mask.dtype, shape=_hoisted_shape(site, mask))
    host = _host_model(model, mask, new_input, neg)
    model.graph.inputs.append(new_input)
    return HoistedMask(new_input, clamp(new_input), mask.name, [], [], host_model=host)


#: Ops of the network itself: a mask cone reaching one reads an activation's shape.
_NETWORK_OPS = frozenset({"MatMul", "Gemm", "Conv", "Softmax", "Attention", "LayerNormalization", "RMSNormalization"})


def _host_model(model: Model, mask: gs.Tensor, hoisted: gs.Variable, neg: float) -> onnx.ModelProto | None:
    """The nodes computing ``mask`` as a model of their own, whose output (named like the new
    input) is clamped to ``>= neg``: a mask that also adds a position bias (ALiBi, T5) could
    otherwise go below it. None when the mask reads the shape of a network activation (dynamic
    shapes: fix them first)."""
    nodes = cone([mask])
    if any(node.op in _NETWORK_OPS for node in nodes):
        return None
    name = hoisted.name
    order = {id(node): index for index, node in enumerate(model.graph.nodes)}
    nodes.sort(key=lambda node: order.get(id(node), len(order)))
    inputs = [gs.Variable(t.name, dtype=t.dtype, shape=t.shape) for t in cone_inputs(model.graph, nodes)]
    proto_nodes = [OnnxExporter.export_node(node) for node in nodes]
    initializers = {}
    for node in nodes:
        for tensor in node.inputs:
            if isinstance(tensor, gs.Constant):
                initializers[tensor.name] = onnx.numpy_helper.from_array(tensor.values, tensor.name)
    floor = f"{name}/floor"
    initializers[floor] = onnx.numpy_helper.from_array(np.array(neg, dtype=mask.dtype), floor)
    proto_nodes.append(onnx.helper.make_node("Max", [mask.name, floor], [name], name=f"{name}/clamp"))
    graph = onnx.helper.make_graph(
        proto_nodes,
        f"{name}_host",
        [onnx.helper.make_tensor_value_info(t.name, onnx.helper.np_dtype_to_tensor_dtype(t.dtype), t.shape) for t in inputs],
        [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(mask.dtype), hoisted.shape)],
        list(initializers.values()),
    )
    opsets = [onnx.helper.make_opsetid(domain, version) for domain, version in model.opset_imports.items()]
    return onnx.helper.make_model(graph, opset_imports=opsets, ir_version=model.ir_version)


def drop_orphaned_inputs(model: Model, hoisted: list[HoistedMask], readers_before: dict[int, bool]) -> None:
    """Remove graph inputs that had readers before hoisting and have none now."""
    graph = model.graph
    orphaned = [t for t in graph.inputs if readers_before.get(id(t)) and not t.outputs]
    if not orphaned:
        return
    names = [t.name for t in orphaned]
    graph.inputs = [t for t in graph.inputs if all(t is not o for o in orphaned)]
    for mask in hoisted:
        mask.removed_inputs = names


def _hoisted_shape(site: AttentionSite, mask: gs.Tensor) -> list[Dim]:
    scores_shape = list(site.scores.shape) if site.scores is not None and site.scores.shape is not None else None
    if site.kind == "attention-op":
        scores_shape = _attention_scores_shape(site)
    mask_shape = list(mask.shape) if mask.shape is not None else None
    if scores_shape is not None and len(scores_shape) == 4:
        batch, _, queries, keys = scores_shape
        heads: Dim = 1
        if mask_shape is not None and len(mask_shape) == 4:
            batch = _better(batch, mask_shape[0])
            queries = _better(queries, mask_shape[2])
            keys = _better(keys, mask_shape[3])
            heads = mask_shape[1] if _good(mask_shape[1]) else 1  # per-head biases (ALiBi) keep their heads
        return [_named(batch, "mask_batch"), heads, _named(queries, "mask_query_length"), _named(keys, "mask_key_length")]
    if mask_shape is not None:
        return [_named(d, f"mask_dim_{axis}") for axis, d in enumerate(mask_shape)]
    return ["mask_batch", 1, "mask_query_length", "mask_key_length"]


def _attention_scores_shape(site: AttentionSite) -> list[Dim] | None:
    query, key = site.node.inputs[0], site.node.inputs[1]
    if query.shape is None or key.shape is None or len(query.shape) != len(key.shape):
        return None
    if len(query.shape) == 4:
        return [query.shape[0], query.shape[1], query.shape[2], key.shape[2] if len(site.node.inputs) <= 4 else None]
    return [query.shape[0], None, query.shape[1], key.shape[1] if len(site.node.inputs) <= 4 else None]


def _good(dim: Dim) -> bool:
    return isinstance(dim, int) or (isinstance(dim, str) and not dim.startswith("unk__"))


def _better(first: Dim, second: Dim) -> Dim:
    return first if _good(first) else second


def _named(dim: Dim, fallback: str) -> int | str:
    return dim if _good(dim) else fallback  # type: ignore[return-value]


def host_recipe(components: list[str], neg: float, name: str) -> str:
    """How to build the hoisted input on the host, in words and numpy."""
    parts = set(components)
    rules = []
    if "causal" in parts:
        rules.append("j <= i + past_length")
    if "sliding-window" in parts:
        rules.append("j > i + past_length - window")
    if "padding" in parts:
        rules.append("attention_mask[b, j] == 1")
    keep = " and ".join(rules) if rules else "True (no position masked)"
    return (
        f"{name}[b, 0, i, j] = 0 if ({keep}) else {neg:g}; in numpy: "
        f"np.where(keep, 0.0, {neg:g}).astype(np.float32)[:, None, :, :]"
    )
