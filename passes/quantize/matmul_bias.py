"""A MatMul and the constant bias Add after it, as one Gemm, so the bias is quantized in it.

Matches ``Add(MatMul(A, W), b)`` (either Add operand order) where ``W`` is a constant float32
``[K, N]`` matrix, ``A`` a float32 activation of static shape ``[d0, ..., K]`` (rank >= 2), ``b``
a constant float32 that is a bias of the last axis (``N`` values, or one, with only leading 1
dims, e.g. ``[N]`` or ``[1, 1, N]``), and the MatMul's output is read by that Add alone and is no
graph output. Produces::

    Reshape(A, [d0·...·dk, K]) -> Gemm(·, W, b') -> Reshape(·, [d0, ..., dk, N])

(without the Reshapes when ``A`` is 2-D; the MatMuls reading one ``A``, such as the query, key
and value projections, share its first Reshape), with ``b'`` the bias broadcast to ``[N]``. Every
output element is the same dot product plus the same bias, so the rewrite holds for every input
(up to float summation order).

Why: quantized, ``MatMul -> Add`` is two node units, and the MatMul's output gets an activation
quantizer of its own before the bias is added: one more rounding and, where a held-out input
leaves the calibrated range, one more clip, on the tensor that feeds the residual sum.
A Gemm takes the bias inside the unit, as an int32 at ``s_in · s_w`` (exact to the
accumulator), like a Conv's. onnxruntime's QNN recipe does the same (``qnn_preprocess_model``
turns MatMul + Add into Reshape/Gemm/Reshape); Qualcomm HTP builds the Gemm as FullyConnected
with its int32 bias. On the example transformer (a16w8) the requantization cost 0.8 dB on the
HTP emulator. A target asks for it with ``quantization.matmul_bias_as_gemm``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, constant_value, consumers, is_default_domain, is_graph_output, producer, remove_nodes, static_shape, toposort
from mapc.passes.base import Note


def fold_matmul_biases(model: Model, keep: Callable[[gs.Node], bool] = lambda node: False) -> tuple[int, list[Note]]:
    """Rewrite every matching ``MatMul + bias Add`` of ``model``'s main graph into a Gemm
    (module doc); nodes for which ``keep`` is true (excluded from quantization, 4-bit weights)
    stay. Returns how many were rewritten, and a ``quantize.matmul-bias-kept`` note for each
    MatMul with a constant weight and a constant Add after it that had to stay (why, and what
    would let it go)."""
    graph = model.graph
    replaced: list[gs.Node] = []
    notes: list[Note] = []
    flattened: dict[str, gs.Tensor] = {}
    for add in list(graph.nodes):
        found = _match(graph, add)
        if found is None:
            continue
        if isinstance(found, Note):
            notes.append(found)
            continue
        matmul, data, weight, bias = found
        if keep(matmul) or keep(add):
            continue
        _write_gemm(model, matmul, add, data, weight, bias, flattened)
        replaced += [matmul, add]
    if replaced:
        remove_nodes(graph, replaced)
        toposort(graph)
    return len(replaced) // 2, notes


def _match(graph: gs.Graph, add: gs.Node) -> tuple[gs.Node, gs.Tensor, gs.Tensor, np.ndarray] | Note | None:
    """(MatMul, A, W, bias as [N]) if ``add`` adds a bias to a MatMul the module doc allows; a
    note if it adds a float32 constant to a MatMul of a constant 2-D float32 weight but a
    condition fails; None otherwise."""
    if add.op != "Add" or not is_default_domain(add) or len(add.inputs) != 2:
        return None
    for index in (0, 1):
        matmul = producer(add.inputs[index])
        if matmul is None or matmul.op != "MatMul" or not is_default_domain(matmul):
            continue
        product = matmul.outputs[0]
        data, weight = matmul.inputs
        weights, addend = constant_value(weight), constant_value(add.inputs[1 - index])
        if weights is None or np.ndim(weights) != 2 or addend is None or not _float32(data, weight, product, add.inputs[1 - index]):
            continue
        channels = int(np.shape(weights)[1])
        shape = static_shape(data)

        def kept(why: str, fix: str | None = None) -> Note:
            return Note("quantize.matmul-bias-kept", f"MatMul {matmul.name!r} and the bias Add after it stay two ops ({why}): the MatMul's output is requantized before the bias", node=matmul.name, fix=fix)

        if len(consumers(product)) != 1 or is_graph_output(graph, product):
            return kept("the MatMul's output is also read elsewhere")
        if shape is None or len(shape) < 2:
            return kept("its input's shape is not static, or is 1-D", "give static input shapes (--input-shape)")
        bias = _bias(np.asarray(addend), channels, len(shape))
        if bias is None or static_shape(add.outputs[0]) != (*shape[:-1], channels):
            return kept(f"the added constant {list(np.shape(addend))} is not a bias of the last axis ({channels} values)")
        return matmul, data, weight, bias
    return None


def _bias(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """``value`` broadcast to ``[channels]`` if it is a bias of the last axis of a rank-``rank`` output."""
    if value.ndim > rank or any(d != 1 for d in value.shape[:-1]) or (value.ndim and value.shape[-1] not in (1, channels)):
        return None
    return np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float32)


def _float32(*tensors: gs.Tensor) -> bool:
    return all(t.dtype is not None and np.dtype(t.dtype) == np.float32 for t in tensors)


def _write_gemm(model: Model, matmul: gs.Node, add: gs.Node, data: gs.Tensor, weight: gs.Tensor, bias: np.ndarray, flattened: dict[str, gs.Tensor]) -> None:
    """Append ``[Reshape ->] Gemm [-> Reshape]`` writing ``add``'s output (the caller removes the
    pair); ``flattened`` holds the 2-D views of the inputs already reshaped, by input name."""
    shape = static_shape(data)
    channels = bias.shape[0]
    base = matmul.name or matmul.outputs[0].name
    result = add.outputs[0]
    rows = int(np.prod(shape[:-1]))
    nodes = []
    if len(shape) > 2:
        flat = flattened.get(data.name)
        if flat is None:
            flat = flattened[data.name] = gs.Variable(model.fresh_name(f"{base}_2d"), dtype=np.float32, shape=[rows, shape[-1]])
            nodes.append(_reshape(model, base, data, flat))
        product = gs.Variable(model.fresh_name(f"{base}_gemm_out"), dtype=np.float32, shape=[rows, channels])
    else:
        flat, product = data, result
    bias_constant = gs.Constant(model.fresh_name(f"{base}_bias"), bias)
    nodes.append(gs.Node("Gemm", model.fresh_name(f"{base}_gemm"), inputs=[flat, weight, bias_constant], outputs=[product]))
    if product is not result:
        nodes.append(_reshape(model, f"{base}_unflatten", product, result))
    add.outputs.clear()  # the last new node writes the Add's output (a graph output keeps its name)
    model.graph.nodes.extend(nodes)


def _reshape(model: Model, base: str, source: gs.Tensor, target: gs.Tensor) -> gs.Node:
    shape = gs.Constant(model.fresh_name(f"{base}_shape"), np.asarray(target.shape, dtype=np.int64))
    return gs.Node("Reshape", model.fresh_name(f"{base}_reshape"), inputs=[source, shape], outputs=[target])
