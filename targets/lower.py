"""Lowering: each partition becomes one node of the target's domain, backed by a local function.

:func:`lower_partitions` replaces the nodes of every partition of a :class:`~.partition.Plan` by
a single node ``<domain>::partition_<k>`` (named ``<target>_partition_<k>``) and adds a
model-local ONNX function of that name holding the partition's nodes. onnxruntime inlines
model-local functions, so the compiled model still runs anywhere, and Netron shows each
partition as one node that opens into its subgraph.

Functions cannot hold initializers. Weights larger than :data:`INLINE_CONSTANT_BYTES` stay
initializers of the main graph and are passed to the function as inputs (never copied, external
data stays external); small constants (shapes, axes, scales) become ``Constant`` nodes inside
the function so shape inference through the call keeps working.

:func:`emit_partitions` writes each partition of a compiled model as a standalone ONNX model
(for a vendor compiler), the host graph without the partition bodies, and a manifest.

The :class:`Lower` pass (``lower``, right after ``partition``) lowers the plan the partition
pass left in ``ctx.facts`` and stamps the model's metadata (:func:`record_metadata`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from mapc.ir import Model, OutputError, UsageError, __version__, constant_nbytes, remove_nodes, save, toposort
from mapc.passes import Pass, PassContext, PassResult, register_pass
from mapc.targets.partition import PARTITION_PLAN, Plan, Segment
from mapc.targets.summary import coverage, estimate

#: Constants up to this size (scalars, shapes, axes, a few scales) are copied into the function
#: body as Constant nodes; anything larger is a weight and is passed in.
INLINE_CONSTANT_BYTES = 256
#: Lowest IR version that allows model-local functions.
FUNCTIONS_IR_VERSION = 8


@dataclass
class LoweredPartition:
    """One partition as lowered: the call node's name and the function it calls."""

    segment: Segment
    node_name: str
    function: str
    inputs: list[str]
    outputs: list[str]


def lower_partitions(model: Model, plan: Plan) -> list[LoweredPartition]:
    """Replace each partition of ``plan`` in ``model`` by a call to a new local function."""
    if plan.model_view.graph is not model.graph or len(model.graph.nodes) != len(plan.model_view.nodes) or any(
        a is not b.node for a, b in zip(model.graph.nodes, plan.model_view.nodes)
    ):
        raise ValueError("the model changed between partitioning and lowering")
    target = plan.target
    nodes = list(model.graph.nodes)
    taken = {(f.domain, f.name) for f in model.functions}
    lowered = []
    calls = []
    for number, segment in enumerate(plan.partitions):
        function_name = _fresh_function_name(target.domain, number, taken)
        members = [nodes[i] for i in segment.nodes]
        call, function, record = _outline(model, plan, segment, members, function_name, number)
        calls.append((members, call))
        model.functions.append(function)
        lowered.append(record)
    remove_nodes(model.graph, [member for members, _ in calls for member in members])
    model.graph.nodes.extend(call for _, call in calls)
    if lowered:
        model.opset_imports[target.domain] = 1
        if model.ir_version < FUNCTIONS_IR_VERSION:
            model.ir_version = FUNCTIONS_IR_VERSION
        toposort(model.graph)
        model.forget_names()
    return lowered


@register_pass
class Lower(Pass):
    """Replace each planned partition by one node backed by a model-local function.

    Needs the ``partition`` pass before it. Each partition becomes ``<domain>::partition_<k>``
    (domain ``mapc.<target>``) whose local function holds the partition's nodes; weights stay
    initializers passed as inputs, small constants move into the function. The model still
    runs in onnxruntime, which inlines the functions. Metadata records the target, the mapc
    version, the partition options and a summary. A target whose ``lowering`` is ``none``
    (``qnn-htp``: onnxruntime's QNN EP forms its partitions from the plain QDQ graph) keeps the
    graph as it is and only gets the metadata.
    """

    name = "lower"
    requires = (PARTITION_PLAN,)

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        plan = ctx.facts[PARTITION_PLAN]
        if plan.model_view.graph is not model.graph:
            raise UsageError("the lower pass must run right after partition, on the same model")
        if plan.target.lowering == "none":
            record_metadata(model, plan)
            return PassResult(changed=False, counters={"partitions_lowered": 0})
        lowered = lower_partitions(model, plan)
        if lowered:
            record_metadata(model, plan)
        return PassResult(changed=bool(lowered), counters={"partitions_lowered": len(lowered)})


def record_metadata(model: Model, plan: Plan) -> None:
    """Stamp the compiled model with the target, mapc version, options and a summary."""
    model.set_metadata("mapc.version", __version__)
    model.set_metadata("mapc.target", str(plan.target))
    model.set_metadata("mapc.partition_options", json.dumps(plan.options.as_dict(), sort_keys=True))
    if plan.target.vendor is not None:  # what the vendor's runtime needs to build it as planned
        model.set_metadata(f"mapc.{plan.target.vendor.name}_options", json.dumps(dict(plan.target.vendor.options), sort_keys=True))
    model.set_metadata(
        "mapc.summary",
        json.dumps({"coverage": coverage(plan), "estimate": estimate(plan), "partitions": len(plan.partitions)}, sort_keys=True),
    )


def _fresh_function_name(domain: str, number: int, taken: set[tuple[str, str]]) -> str:
    name = f"partition_{number}"
    suffix = 0
    while (domain, name) in taken:
        suffix += 1
        name = f"partition_{number}_{suffix}"
    taken.add((domain, name))
    return name


def _outline(
    model: Model, plan: Plan, segment: Segment, members: list[gs.Node], function_name: str, number: int
) -> tuple[gs.Node, onnx.FunctionProto, LoweredPartition]:
    target = plan.target
    passed: list[gs.Tensor] = []
    inlined: list[onnx.NodeProto] = []
    for tensor in segment.inputs:
        if isinstance(tensor, gs.Constant) and constant_nbytes(tensor) <= INLINE_CONSTANT_BYTES:
            inlined.append(helper.make_node("Constant", [], [tensor.name], value=numpy_helper.from_array(np.asarray(tensor.values), tensor.name)))
        else:
            passed.append(tensor)
    body = inlined + [OnnxExporter.export_node(node) for node in members]
    _call_overloads_by_name(model, body)
    domains = {node.domain or "" for node in members}
    opsets = {domain: version for domain, version in model.opset_imports.items() if domain in domains | {""}}
    for domain in domains:
        opsets.setdefault(domain, 1)
    macs = sum(plan.work[i].macs for i in segment.nodes)
    summary = (
        f"mapc partition {number} for {target.name}: {len(members)} nodes, {macs:,} MACs, "
        f"estimated {segment.seconds * 1e3:.3g} ms on {target.name} + {segment.transfer_seconds * 1e3:.3g} ms transfers "
        f"(vs {segment.cpu_seconds * 1e3:.3g} ms on the CPU)"
    )
    function = helper.make_function(
        target.domain,
        function_name,
        inputs=[t.name for t in passed],
        outputs=[t.name for t in segment.outputs],
        nodes=body,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in sorted(opsets.items())],
        doc_string=summary,
    )
    node_name = model.fresh_name(f"{target.name}_partition_{number}")
    call = gs.Node(
        op=function_name,
        name=node_name,
        domain=target.domain,
        inputs=list(passed),
        outputs=list(segment.outputs),
    )
    segment.function = f"{target.domain}::{function_name}"
    record = LoweredPartition(segment, node_name, function_name, [t.name for t in passed], [t.name for t in segment.outputs])
    return call, function, record


def _call_overloads_by_name(model: Model, body: list[onnx.NodeProto]) -> None:
    """Make each call of a function overload in ``body`` call a copy of it under a name of its own.

    onnxruntime honours ``NodeProto.overload`` in the graph but not inside a function body: a
    partition calling two overloads of ``mapc.Attention`` (masked and unmasked) ran the first for
    both and the model did not load. The copy (``NAME__OVERLOAD``) is the same function.
    """
    functions = {(f.domain, f.name, f.overload): f for f in model.functions}
    names = {(f.domain, f.name) for f in model.functions}
    for node in body:
        if not node.overload:
            continue
        alias = f"{node.op_type}__{node.overload}"
        if (node.domain, alias) not in names:
            copy = onnx.FunctionProto()
            copy.CopyFrom(functions[(node.domain, node.op_type, node.overload)])
            copy.name = alias
            copy.ClearField("overload")
            model.functions.append(copy)
            names.add((node.domain, alias))
        node.op_type = alias
        node.ClearField("overload")


# -- standalone partitions ----------------------------------------------------------------------------------


def emit_partitions(model: Model, domain: str, directory: str | Path) -> list[Path]:
    """Write each ``domain`` partition of a lowered ``model`` as ``partition_<k>.onnx`` in
    ``directory``, the host graph (partition bodies left out) as ``host.onnx``, and
    ``partitions.json`` describing them. Returns the files written."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {folder}: {error.strerror or error}") from None
    functions = {(f.domain, f.name): f for f in model.functions}
    written: list[Path] = []
    manifest: list[dict[str, Any]] = []
    for node in model.graph.nodes:
        function = functions.get((node.domain, node.op))
        if node.domain != domain or function is None:
            continue
        standalone = _standalone(model, node, function)
        path = save(standalone, folder / f"{node.op}.onnx")
        written.append(path)
        manifest.append(
            {
                "partition": node.name,
                "function": f"{node.domain}::{node.op}",
                "file": path.name,
                "nodes": len(function.node),
                "inputs": [_describe(t) for t in node.inputs],
                "outputs": [_describe(t) for t in node.outputs],
            }
        )
    host = model.copy()
    host.functions = [f for f in host.functions if f.domain != domain]
    written.append(save(host, folder / "host.onnx"))
    listing = folder / "partitions.json"
    try:
        listing.write_text(json.dumps({"domain": domain, "host": "host.onnx", "partitions": manifest}, indent=2) + "\n")
    except OSError as error:
        raise OutputError(f"cannot write {listing}: {error.strerror or error}") from None
    written.append(listing)
    return written


def _describe(tensor: gs.Tensor) -> dict[str, Any]:
    shape = None if tensor.shape is None else [d if isinstance(d, (int, np.integer)) else str(d) for d in tensor.shape]
    dtype = None if tensor.dtype is None else np.dtype(tensor.dtype).name
    return {"name": tensor.name, "dtype": dtype, "shape": shape, "constant": isinstance(tensor, gs.Constant)}


def _standalone(model: Model, call: gs.Node, function: onnx.FunctionProto) -> Model:
    """A model whose graph is ``function``'s body, fed by ``call``'s tensors; weights shared."""
    variables = [t for t in call.inputs if not isinstance(t, gs.Constant)]
    graph = helper.make_graph(
        list(function.node),
        f"{call.name}",
        inputs=[OnnxExporter.export_value_info_proto(t, do_type_check=False) for t in variables],
        outputs=[OnnxExporter.export_value_info_proto(t, do_type_check=False) for t in call.outputs],
    )
    proto = helper.make_model(graph, opset_imports=list(function.opset_import), ir_version=model.ir_version)
    proto.functions.extend(f for f in model.functions if (f.domain, f.name) != (function.domain, function.name))
    imported = gs.import_onnx(proto)
    tensors = imported.tensors()
    for weight in (t for t in call.inputs if isinstance(t, gs.Constant)):
        placeholder = tensors.get(weight.name)
        if placeholder is None:
            continue
        for reader in list(placeholder.outputs):
            for position, tensor in enumerate(reader.inputs):
                if tensor is placeholder:
                    reader.inputs[position] = weight
    standalone = model.copy()
    standalone.graph = imported
    standalone.functions = [f for f in model.functions if f.domain != function.domain]
    standalone.opset_imports = {("" if e.domain == "ai.onnx" else e.domain): e.version for e in function.opset_import}
    return standalone
