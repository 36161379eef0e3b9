"""Fused ops for models whose opset predates them: model-local functions in the ``mapc`` domain.

When a rule fuses into an op the model's opset does not have yet (``Attention`` needs 23), the
fused node is ``mapc.<Op>`` with the standard op's inputs and attributes, calling a model-local
function of that name whose body is the decomposition the rule matched, written in canonical
form with the model's own opset. Runtimes that know nothing of ``mapc`` inline the body, so the
model runs anywhere; a backend that knows the op maps the node directly.

Each distinct body is one function. When a model needs two bodies for the same op (a masked
and an unmasked attention), the second and later are ONNX function *overloads* (IR >= 10): the
function keeps the op's name and the call selects it with ``NodeProto.overload``, a short
digest of the body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from mapc.ir import MAPC_DOMAIN, Model, set_overload

#: IR version that introduced function overloads.
OVERLOAD_IR_VERSION = 10
#: IR version that introduced model-local functions (older models, e.g. opset 11 at IR 6, are raised).
FUNCTIONS_IR_VERSION = 8

#: The opset from which each op takes its axes as an input instead of an attribute.
AXES_AS_INPUT_SINCE = {"Unsqueeze": 13, "Squeeze": 13, "ReduceSum": 13, "ReduceMean": 18}


class Body:
    """Builds a function body: ``add`` appends a node and returns its output name."""

    def __init__(self, inputs: Sequence[str], opset: int) -> None:
        self.inputs = list(inputs)
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []

    def add(self, op_type: str, inputs: Sequence[str], **attrs: Any) -> str:
        output = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def const(self, value: Any, dtype: Any = None) -> str:
        array = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
        output = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node("Constant", [], [output], value=numpy_helper.from_array(array, output)))
        return output

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(values, dtype=np.int64))

    def unsqueeze(self, tensor: str, axes: Sequence[int]) -> str:
        if self.opset >= AXES_AS_INPUT_SINCE["Unsqueeze"]:
            return self.add("Unsqueeze", [tensor, self.ints(axes)])
        return self.add("Unsqueeze", [tensor], axes=list(axes))

    def reduce_mean(self, tensor: str, axes: Sequence[int]) -> str:
        if self.opset >= AXES_AS_INPUT_SINCE["ReduceMean"]:
            return self.add("ReduceMean", [tensor, self.ints(axes)], keepdims=1)
        return self.add("ReduceMean", [tensor], axes=list(axes), keepdims=1)

    def slice_last(self, tensor: str, start: int, end: int) -> str:
        return self.add("Slice", [tensor, self.ints([start]), self.ints([end]), self.ints([-1])])


Decomposition = Callable[[Body], str]


class FunctionLibrary:
    """The ``mapc`` functions of one model: finds or adds the function a fused call needs."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def call(
        self,
        op_type: str,
        inputs: Sequence[gs.Tensor],
        formal_inputs: Sequence[str],
        attrs: dict[str, Any],
        decomposition: Decomposition,
        output: gs.Variable,
        node_name: str,
    ) -> gs.Node:
        """Append ``mapc.<op_type>(inputs)`` computing ``output``, its function added if needed."""
        opset = self.model.opset
        body = Body(formal_inputs, opset)
        result = decomposition(body)
        body.nodes.append(helper.make_node("Identity", [result], ["Y"]))
        function = helper.make_function(
            MAPC_DOMAIN,
            op_type,
            list(formal_inputs),
            ["Y"],
            body.nodes,
            opset_imports=[helper.make_opsetid("", opset)],
            attributes=sorted(attrs),
        )
        overload = self._register(function)
        node = gs.Node(op_type, name=node_name, attrs=dict(attrs), inputs=list(inputs), outputs=[output], domain=MAPC_DOMAIN)
        set_overload(node, overload)
        self.model.graph.nodes.append(node)
        self.model.opset_imports.setdefault(MAPC_DOMAIN, 1)
        return node

    def _register(self, function: onnx.FunctionProto) -> str:
        """Add ``function`` unless an identical one exists; return the overload to call ("" for none)."""
        digest = _body_digest(function)
        same_name = [f for f in self.model.functions if f.domain == MAPC_DOMAIN and f.name == function.name]
        for existing in same_name:
            if _body_digest(existing) == digest:
                return existing.overload
        if same_name:
            function.overload = digest[:12]
            if self.model.ir_version < OVERLOAD_IR_VERSION:
                self.model.ir_version = OVERLOAD_IR_VERSION
        self.model.functions.append(function)
        self.model.ir_version = max(self.model.ir_version, FUNCTIONS_IR_VERSION)
        return function.overload


def _body_digest(function: onnx.FunctionProto) -> str:
    """A digest of what a function computes: inputs, attributes and body (not its name)."""
    plain = onnx.FunctionProto()
    plain.CopyFrom(function)
    plain.ClearField("name")
    plain.ClearField("overload")
    plain.ClearField("doc_string")
    return hashlib.sha256(plain.SerializeToString(deterministic=True)).hexdigest()
