"""``cleanup``: remove what contributes nothing to the outputs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from mapc.ir import (
    ExternalValues,
    Model,
    RewriteContext,
    apply_rules,
    iter_chunks,
    peek_bytes,
    remove_dead_nodes,
    replace_all_uses,
)
from mapc.passes.base import Pass, PassContext, PassResult
from mapc.passes.peephole.identities import NOOP_RULES
from mapc.passes.registry import register_pass
from mapc.passes.shape_ops import ensure_shapes

#: Ops whose result depends on more than their inputs: never merged, never assumed idempotent.
NONDETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


@register_pass
class Cleanup(Pass):
    """Remove dead nodes, no-ops, unused or duplicate initializers and common subexpressions.

    Matches, in every graph and subgraph:
      * nodes none of whose outputs reach a graph output;
      * inference no-ops: ``Identity``; ``Dropout`` when not training (no ``training_mode``, or a
        constant false one) and its mask is unused; ``Cast``/``CastLike`` to the type the input
        already has;
    and in the main graph:
      * initializers no node reads (and value_info of tensors that no longer exist);
      * initializers with identical type, shape and bytes: readers share the first one;
      * common subexpressions: nodes with the same op, domain, attributes and inputs (random ops
        and nodes holding subgraphs excepted) are computed once.
    Produces the same computation with fewer nodes and initializers. Graph inputs, graph outputs
    and their names never change; an Identity that keeps an output's name is kept.
    """

    name = "cleanup"

    @dataclass
    class Options:
        #: Merge nodes that compute the same thing.
        cse: bool = True
        #: Share initializers with identical contents.
        dedupe_initializers: bool = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        counters = {"noops_removed": 0, "dead_nodes_removed": 0, "initializers_removed": 0, "duplicates_merged": 0, "cse_merged": 0}
        initializers_before = _count_initializers(model.graph)
        counters["noops_removed"] = _remove_noops(model, ctx)
        counters["dead_nodes_removed"] = remove_dead_nodes(model.graph)
        if self.options.dedupe_initializers:
            counters["duplicates_merged"] = _merge_duplicate_initializers(model)
        if self.options.cse:
            counters["cse_merged"] = _eliminate_common_subexpressions(model)
        if counters["duplicates_merged"] or counters["cse_merged"]:
            counters["dead_nodes_removed"] += remove_dead_nodes(model.graph)
        counters["initializers_removed"] = initializers_before - _count_initializers(model.graph)
        return PassResult(changed=any(counters.values()), counters=counters)


# -- no-ops --------------------------------------------------------------------------------------


def _remove_noops(model: Model, ctx: PassContext) -> int:
    """Bypass the inference no-ops (:data:`~mapc.passes.peephole.identities.NOOP_RULES`) of every
    graph; shapes are inferred only when a Cast's input dtype is unknown."""
    graphs = [model.graph, *model.graph.subgraphs(recursive=True)]
    if any(node.op in ("Cast", "CastLike") and node.inputs[0].dtype is None for g in graphs for node in g.nodes):
        ensure_shapes(model, ctx)
    removed = 0
    for graph in graphs:
        reports = apply_rules(NOOP_RULES, RewriteContext(model, graph=graph), sweep=True)
        removed += sum(report.fired for report in reports.values())
    return removed


# -- duplicate initializers ----------------------------------------------------------------------


def _count_initializers(graph: gs.Graph) -> int:
    return sum(isinstance(t, gs.Constant) for t in graph.tensors().values())


def _merge_duplicate_initializers(model: Model) -> int:
    graph = model.graph
    interface = {id(t) for t in graph.inputs} | {id(t) for t in graph.outputs}
    groups: dict[tuple[str, tuple[int, ...]], list[gs.Constant]] = {}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and id(tensor) not in interface:
            groups.setdefault((str(tensor.dtype), tuple(tensor.shape)), []).append(tensor)
    merged = 0
    for candidates in groups.values():
        if len(candidates) < 2:
            continue
        by_sample: dict[bytes, list[gs.Constant]] = {}
        for tensor in candidates:  # cheap first look, so distinct weights are never hashed whole
            by_sample.setdefault(_sample(tensor), []).append(tensor)
        merged += _merge_identical(model, [group for group in by_sample.values() if len(group) > 1])
    return merged


def _merge_identical(model: Model, groups: list[list[gs.Constant]]) -> int:
    merged = 0
    for members in groups:
        first_by_digest: dict[bytes, gs.Constant] = {}
        for tensor in members:
            digest = _digest(tensor)
            kept = first_by_digest.setdefault(digest, tensor)
            if kept is not tensor:
                replace_all_uses(model, tensor, kept)
                merged += 1
    return merged


#: Bytes from each end of a constant compared before all of it is hashed.
SAMPLE_BYTES = 4096


def _sample(tensor: gs.Constant) -> bytes:
    """The first and last :data:`SAMPLE_BYTES` of a constant's data, read without loading a lazy
    weight; b"" (always hashed) where there is no raw form."""
    peeked = peek_bytes(tensor, SAMPLE_BYTES)
    return b"" if peeked is None else peeked[0] + peeked[1]


def _digest(tensor: gs.Constant) -> bytes:
    """A 256-bit BLAKE2 digest of a constant's bytes, read without loading lazy weights."""
    hasher = hashlib.blake2b(digest_size=32)
    values = tensor._values
    if isinstance(values, ExternalValues):
        for chunk in iter_chunks(values.ref):
            hasher.update(chunk)
    elif isinstance(values, LazyValues) and values.tensor.HasField("raw_data"):
        hasher.update(values.tensor.raw_data)
    elif isinstance(values, LazyValues):
        unnamed = onnx.TensorProto()
        unnamed.CopyFrom(values.tensor)
        unnamed.ClearField("name")
        hasher.update(unnamed.SerializeToString(deterministic=True))
    else:
        array = np.ascontiguousarray(tensor.values)
        if array.dtype == object:
            hasher.update(repr(array.tolist()).encode())
        else:
            hasher.update(memoryview(array.reshape(-1).view(np.uint8)))
    return hasher.digest()


# -- common subexpressions ------------------------------------------------------------------------


def _eliminate_common_subexpressions(model: Model) -> int:
    graph = model.graph
    seen: dict[tuple[Any, ...], gs.Node] = {}
    merged = 0
    for node in list(graph.nodes):
        key = _cse_key(node)
        if key is None:
            continue
        kept = seen.setdefault(key, node)
        if kept is node:
            continue
        for duplicate_output, kept_output in zip(node.outputs, kept.outputs):
            if not duplicate_output.is_empty():
                replace_all_uses(model, duplicate_output, kept_output)
        merged += 1
    return merged


def _cse_key(node: gs.Node) -> tuple[Any, ...] | None:
    if node.op in NONDETERMINISTIC_OPS or node.op == "Dropout" or any(True for _ in node.subgraphs()):
        return None
    attributes = []
    for name in sorted(node.attrs):
        value = _attribute_key(node.attrs[name])
        if value is None:
            return None
        attributes.append((name, value))
    inputs = tuple("" if t.is_empty() else id(t) for t in node.inputs)
    return (node.op, node.domain or "", inputs, len(node.outputs), tuple(attributes))


def _attribute_key(value: Any) -> Any:
    if isinstance(value, gs.Constant):
        return ("tensor", str(value.dtype), tuple(value.shape), _digest(value))
    if isinstance(value, (gs.Graph, gs.Node.AttributeRef)):
        return None
    if isinstance(value, (list, tuple)):
        items = [_attribute_key(v) for v in value]
        return None if any(i is None for i in items) else ("list", tuple(items))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:
        return ("nan",)
    if isinstance(value, (type, np.dtype)):
        return ("dtype", str(np.dtype(value)))
    return value
