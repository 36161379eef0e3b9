"""``mapc inspect``: what a model is made of and which of its dims are still dynamic."""

from __future__ import annotations

import shlex
from collections import Counter
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import ExternalValues, Model, constant_nbytes, count_nodes, is_default_domain, is_static_dim, symbols_of


def summarize(model: Model) -> dict[str, Any]:
    """A JSON-able summary: opsets, inputs/outputs with dims, op histogram, parameters,
    external data, and which input dims are dynamic (the inputs that need a fixed shape)."""
    graphs = [model.graph, *model.graph.subgraphs(recursive=True)]
    histogram = Counter(_op_name(node) for graph in graphs for node in graph.nodes)
    unique = _constants(model)
    external = [c for c in unique if isinstance(c._values, ExternalValues)]
    inputs = [_describe_io(t) for t in model.graph.inputs if not isinstance(t, gs.Constant)]
    dynamic = [
        {"input": entry["name"], "axis": axis, "dim": dim}
        for entry in inputs
        for axis, dim in enumerate(entry["shape"] or [])
        if not is_static_dim(dim)
    ]
    return {
        "file": str(model.source_path) if model.source_path else None,
        "ir_version": model.ir_version,
        "producer": model.producer,
        "opsets": {domain or "ai.onnx": version for domain, version in model.opset_imports.items()},
        "inputs": inputs,
        "outputs": [_describe_io(t) for t in model.graph.outputs],
        "nodes": count_nodes(model.graph),
        "op_types": dict(sorted(histogram.items(), key=lambda item: (-item[1], item[0]))),
        "functions": [f"{f.domain}::{f.name}" for f in model.functions],
        "parameters": {
            "tensors": len(unique),
            "elements": int(sum(int(np.prod(c.shape, dtype=np.int64)) for c in unique)),
            "bytes": parameter_bytes(model),
        },
        "external_data": {
            "files": [str(path.name) for path in model.external_sources],
            "tensors": len(external),
            "bytes": int(sum(value._values.ref.length for value in external)),
        },
        "dynamic_dims": dynamic,
        "inputs_needing_shapes": sorted({d["input"] for d in dynamic}),
        "suggested_flags": suggested_flags(inputs),
        "metadata": model.metadata,
    }


def parameter_bytes(model: Model) -> int:
    """Bytes of every weight of ``model`` (initializers and constants, subgraphs included, each
    counted once), without loading external or lazy weights."""
    return int(sum(constant_nbytes(c) for c in _constants(model)))


def _constants(model: Model) -> list[gs.Constant]:
    graphs = [model.graph, *model.graph.subgraphs(recursive=True)]
    constants = [t for graph in graphs for t in graph.tensors().values() if isinstance(t, gs.Constant)]
    return list({id(c): c for c in constants}.values())


def suggested_flags(inputs: list[dict[str, Any]]) -> str:
    """The ``mapc compile`` flags that would fix every dynamic input dim, with placeholders.

    Named dims (or the names in an expression dim) get one ``--dim NAME=<value>`` each; an input
    with an unnamed dim gets ``--input-shape NAME:...`` with its static dims filled in.
    """
    names: list[str] = []
    flags: list[str] = []
    for entry in inputs:
        shape = entry["shape"] or []
        if any(dim is None for dim in shape):
            dims = ",".join(str(d) if isinstance(d, int) else f"<{d or '?'}>" for d in shape)
            flags.append(f"--input-shape {entry['name']}:{dims}")
            continue
        for dim in shape:
            for name in sorted(symbols_of(dim)) if isinstance(dim, str) else []:
                if name not in names:
                    names.append(name)
    return " ".join([f"--dim {shlex.quote(name)}=<value>" for name in names] + flags)


def _op_name(node: gs.Node) -> str:
    return node.op if is_default_domain(node) else f"{node.domain}::{node.op}"


def _describe_io(tensor: gs.Tensor) -> dict[str, Any]:
    shape = None if tensor.shape is None else [_dim(d) for d in tensor.shape]
    return {"name": tensor.name, "dtype": str(np.dtype(tensor.dtype)) if tensor.dtype is not None else None, "shape": shape}


def _dim(dim: Any) -> int | str | None:
    if is_static_dim(dim):
        return int(dim)
    return str(dim) if dim not in (None, -1) else None
