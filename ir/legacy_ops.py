"""Operators onnxruntime runs outside the opsets onnx defines them in, made standard at load.

onnxruntime registers ``LayerNormalization`` in the default domain for every opset (its kernel
predates the op's adoption in opset 17), so older torch exports and onnxruntime-optimized
graphs at opsets 11-16 use it, although onnx knows no such op there: the onnx checker and
shape inference refuse or stop at it. :func:`standardize_legacy_ops` turns each such node into
the form mapc's fusions give a fused op below its opset: a ``mapc.LayerNormalization`` node with
the standard op's inputs and attributes (a missing bias becomes zeros), calling a model-local
function whose body is the decomposition written in the model's opset, so onnx infers shapes
through it, every pass and target treats it as LayerNormalization, and any runtime runs it.
Each normalized-axes count has its own body (``ReduceMean`` takes static axes below opset 18):
axis -1 the plain function, others an overload (IR 10).
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from onnx import helper

from mapc.ir.graph import MAPC_DOMAIN
from mapc.ir.notes import Note

#: The opset that made LayerNormalization a standard op.
LAYER_NORM_OPSET = 17
#: The oldest opset the decomposition is written in (Constant takes `value_float` from 12 on).
MIN_OPSET = 12
#: IR version that introduced function overloads (one body per normalized axis count).
OVERLOAD_IR_VERSION = 10


def standardize_legacy_ops(proto: onnx.ModelProto, opsets: dict[str, int]) -> list[Note]:
    """Rewrite default-domain LayerNormalization nodes of a model at opsets 12-16, in place (and
    ``opsets``); return a note when there were some. A node is left as onnxruntime's op (which
    validation accepts, but onnx cannot infer through) when its Mean/InvStdDev outputs are read,
    or its ``axis`` is positive and the rank of its input is not declared."""
    opset = opsets.get("", 0)
    if not MIN_OPSET <= opset < LAYER_NORM_OPSET:
        return []
    nodes = [n for n in _all_nodes(proto.graph) if n.op_type == "LayerNormalization" and n.domain in ("", "ai.onnx")]
    read = {name for n in _all_nodes(proto.graph) for name in n.input} | {v.name for v in proto.graph.output}
    ranks = _declared_ranks(proto.graph)
    existing = {f.overload for f in proto.functions if f.domain == MAPC_DOMAIN and f.name == "LayerNormalization"}
    bodies: dict[str, onnx.FunctionProto] = {}
    zeros: list[onnx.NodeProto] = []
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis = int(attrs.get("axis", -1))
        if axis >= 0 and node.input[0] in ranks:
            axis -= ranks[node.input[0]]
        if axis >= 0 or any(name and name in read for name in node.output[1:]):
            continue
        overload = "" if axis == -1 and "" not in existing else f"legacy_axis{-axis}"
        bodies.setdefault(overload, _layer_norm_function(opset, axis, overload))
        if len(node.input) < 3 or not node.input[2]:
            zeros.append(_zero_bias(proto, node))
        node.domain = MAPC_DOMAIN
        node.overload = overload
        del node.output[1:]
        del node.attribute[:]
        node.attribute.extend([helper.make_attribute("axis", axis), helper.make_attribute("epsilon", float(attrs.get("epsilon", 1e-5)))])
    if not bodies:
        return []
    proto.graph.node.extend(zeros)  # validation puts them in order
    proto.functions.extend(body for overload, body in sorted(bodies.items()) if overload not in existing)
    if any(bodies) and proto.ir_version < OVERLOAD_IR_VERSION:
        proto.ir_version = OVERLOAD_IR_VERSION
    if MAPC_DOMAIN not in opsets:
        proto.opset_import.add(domain=MAPC_DOMAIN, version=1)
        opsets[MAPC_DOMAIN] = 1
    return [Note(
        "load.legacy-layer-norm",
        f"LayerNormalization below opset {LAYER_NORM_OPSET} (onnxruntime's, not onnx's) became "
        "mapc.LayerNormalization with its decomposition as a local function",
    )]


def _declared_ranks(graph: onnx.GraphProto) -> dict[str, int]:
    """Rank of every tensor of the main graph whose shape the file declares."""
    ranks = {t.name: len(t.dims) for t in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    return ranks


def _layer_norm_function(opset: int, axis: int, overload: str) -> onnx.FunctionProto:
    """LayerNormalization(X, Scale, B; axis, epsilon) over the last ``-axis`` axes, normalized in
    float32 from opset 15 (which has CastLike to return to X's type), in X's type below."""
    axes = list(range(axis, 0))
    stash = opset >= 15
    eps = helper.make_attribute_ref("value_float", onnx.AttributeProto.FLOAT, ref_attr_name="epsilon")
    nodes = [
        helper.make_node("Cast", ["X"], ["x"], to=onnx.TensorProto.FLOAT) if stash else helper.make_node("Identity", ["X"], ["x"]),
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=axes, keepdims=1),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["d2"]),
        helper.make_node("ReduceMean", ["d2"], ["var"], axes=axes, keepdims=1),
        _with_ref(helper.make_node("Constant", [], ["eps"]), eps),
        helper.make_node("CastLike", ["eps", "var"], ["eps_x"]) if stash else helper.make_node("Identity", ["eps"], ["eps_x"]),
        helper.make_node("Add", ["var", "eps_x"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["d", "std"], ["n"]),
        helper.make_node("CastLike", ["n", "X"], ["nx"]) if stash else helper.make_node("Identity", ["n"], ["nx"]),
        helper.make_node("Mul", ["nx", "Scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "B"], ["Y"]),
    ]
    function = helper.make_function(
        MAPC_DOMAIN, "LayerNormalization", ["X", "Scale", "B"], ["Y"], nodes,
        opset_imports=[helper.make_opsetid("", opset)], attributes=["axis", "epsilon"],
    )
    function.overload = overload
    return function


def _zero_bias(proto: onnx.ModelProto, node: onnx.NodeProto) -> onnx.NodeProto:
    """A node computing zeros of Scale's type and shape, made ``node``'s bias (B is optional in
    the op, not in the function)."""
    used = {name for n in _all_nodes(proto.graph) for name in [*n.input, *n.output]}
    used |= {t.name for t in proto.graph.initializer} | {v.name for v in proto.graph.input}
    base = f"{node.output[0]}_zero_bias"
    name, suffix = base, 0
    while name in used:
        suffix += 1
        name = f"{base}_{suffix}"
    del node.input[2:]
    node.input.append(name)
    return helper.make_node("Sub", [node.input[1], node.input[1]], [name])


def _with_ref(node: onnx.NodeProto, attribute: onnx.AttributeProto) -> onnx.NodeProto:
    node.attribute.append(attribute)
    return node


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
            for subgraph in graphs:
                yield from _all_nodes(subgraph)
