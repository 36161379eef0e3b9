"""Elementwise work between a Reshape and the Reshape that undoes it runs on the original shape.

Exporters flatten a tensor for a Gemm and unflatten it for the activation that follows
(``Reshape[8,64] -> Gemm -> Reshape[1,8,64] -> GELU ops -> Reshape[8,64] -> Gemm``). When every
op between the two Reshapes is elementwise, reads only the first Reshape's output, each other's
outputs and single-element constants, and nothing outside reads their results, the ops compute
the same elements in the same order on the un-reshaped tensor: both Reshapes go.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import RewriteContext, can_take_name, constant_value, is_default_domain, is_graph_output, producer, rule, static_shape

#: Ops that compute each output element from the same-position elements of their inputs.
ELEMENTWISE = frozenset(
    {
        "Abs", "Acos", "Acosh", "Add", "And", "Asin", "Asinh", "Atan", "Atanh", "BitwiseAnd", "BitwiseNot",
        "BitwiseOr", "BitwiseXor", "Cast", "Ceil", "Celu", "Clip", "Cos", "Cosh", "Div", "Elu", "Equal", "Erf",
        "Exp", "Floor", "Gelu", "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "IsInf", "IsNaN",
        "LeakyRelu", "Less", "LessOrEqual", "Log", "Max", "Min", "Mish", "Mod", "Mul", "Neg", "Not", "Or",
        "Pow", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus", "Softsign",
        "Sqrt", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Where", "Xor",
    }
)

#: Regions larger than this are left alone (the search is local by design).
MAX_REGION = 64


@rule("Reshape")
def reshape_sandwich(rw: RewriteContext, node: gs.Node) -> bool:
    """Elementwise ops between a Reshape and a Reshape back run on the original shape; both Reshapes go.

    ``node`` is the closing Reshape; it and the opening one go if the region qualifies.
    """
    closing_shape = static_shape(node.outputs[0])
    end = node.inputs[0]
    if closing_shape is None or end.outputs != [node] or producer(end) is None:
        return False
    if is_graph_output(rw.graph, node.outputs[0]) and not can_take_name(rw.graph, end):
        return False
    found = _region(end, closing_shape)
    if found is None:
        return False
    region, opening = found
    if any(is_graph_output(rw.graph, member.outputs[0]) for member in region):
        return False  # a graph output of the region would change shape
    middle, source = opening.outputs[0], opening.inputs[0]
    for member in region:
        for index, tensor in enumerate(member.inputs):
            if tensor is middle:
                member.inputs[index] = source
        member.outputs[0].shape = list(closing_shape)
    rw.bypass(node, end)
    if not middle.outputs and not is_graph_output(rw.graph, middle):
        rw.remove(opening)
    return True


def _region(end: gs.Tensor, closing_shape: tuple[int, ...]) -> tuple[list[gs.Node], gs.Node] | None:
    """The elementwise nodes computing ``end`` from one opening Reshape of a ``closing_shape``
    tensor, and that Reshape; None if the ops between do not qualify."""
    region: dict[int, gs.Node] = {}
    opening: gs.Node | None = None
    pending = [producer(end)]
    middle: tuple[int, ...] | None = static_shape(end)
    while pending:
        node = pending.pop()
        if node is None or id(node) in region:
            continue
        if not is_default_domain(node) or node.op not in ELEMENTWISE or len(node.outputs) != 1 or len(region) >= MAX_REGION:
            return None
        if static_shape(node.outputs[0]) != middle:
            return None
        region[id(node)] = node
        for tensor in node.inputs:
            if tensor.is_empty() or _single_element(tensor, len(closing_shape)):
                continue
            source = producer(tensor)
            if source is not None and source.op == "Reshape" and is_default_domain(source) and static_shape(source.inputs[0]) == closing_shape:
                if opening is not None and source is not opening:
                    return None
                opening = source
            elif source is not None and static_shape(tensor) == middle:
                pending.append(source)
            else:
                return None
    if opening is None or middle is None or middle == closing_shape:
        return None
    members = set(region)
    for node in region.values():
        readers = node.outputs[0].outputs
        if node.outputs[0] is not end and any(id(reader) not in members for reader in readers):
            return None
    return list(region.values()), opening


def _single_element(tensor: gs.Tensor, rank: int) -> bool:
    """A constant with one element and at most ``rank`` dims: broadcasting it cannot change a
    shape of that rank."""
    value = constant_value(tensor)
    return value is not None and np.size(value) == 1 and np.ndim(value) <= rank


SANDWICH_RULES = [reshape_sandwich]
