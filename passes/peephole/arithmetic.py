"""Arithmetic with a neutral constant, and selects with a constant condition.

* ``Mul`` by 1 (either side), ``Div`` by 1, ``Add`` of 0 (either side), ``Sub`` of 0: the other
  operand, when broadcasting with the constant cannot change its shape (the constant has no more
  dims than it, each 1 or equal to its dim) and the types agree. These are bitwise exact, except
  ``x + 0.0`` and ``x - (-0.0)``, which turn ``-0.0`` into ``+0.0``: they are removed unless the
  pass option ``signed_zeros`` is set (``x + (-0.0)`` and ``x - 0.0`` are always exact).
* ``Where`` whose condition is a constant, all true or all false: the chosen branch (expanded to
  the output shape if broadcasting made it larger).
* ``MatMul`` whose inner dimension is 1 (``A[..., M, 1] @ B[..., 1, N]``, both of rank 2 or more):
  the broadcast product ``Mul(A, B)`` (with a 1-D operand ``[1]``, reshaped to the output's
  static shape, which drops the vector's axis), which computes the same one product per element (batch
  dims broadcast the same way). It drops the sum's ``0 +``, so a ``-0.0`` product stays ``-0.0``
  where MatMul gave ``+0.0``: kept under ``signed_zeros``. NPU compilers handle the outer product
  poorly (QNN never finishes finalizing a ``[1, 1] @ [1, N]`` MatMul or Gemm, and fails to
  finalize a fp16 ``[5, 1] @ [1]`` one).
* ``LogSoftmax`` over an axis of size 1: ``Sub(x, x)``, the 0 (or NaN) it computes. QNN's
  fp16 LogSoftmax over a leading axis of size 1 computes a log-softmax over another axis.
* ``Sum`` of two or more inputs: a chain of ``Add`` (``((x0 + x1) + x2) + ...``, the order
  onnxruntime's Sum kernel adds in, so bitwise exact; broadcasting is the same multidirectional
  rule); ``Sum`` of one input: that input. Every target and fusion pattern knows ``Add``, and
  QNN's quantized Sum is wrong: a Sum reading another Sum's output loses whole channels on HTP
  (uint8 and uint16; ShuffleNet 20.5 dB against 47 dB with Adds), and one alone is less precise
  than the same Add.
* ``Gemm`` whose inner dimension is 1 likewise: ``Mul`` of the operands (a transposed operand of
  inner size 1 is a Reshape), times ``alpha`` unless 1, plus ``beta · C`` when C is given: the
  operations onnxruntime's Gemm rounds, in its order (checked bit for bit).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import constant_value, is_lazy, peek_values, rule, same_dtype, static_shape
from mapc.passes.peephole.context import PeepholeContext

#: Leading elements of a lazy weight checked before the whole weight is read.
PEEK_ELEMENTS = 64
#: For each op: which operand positions may hold the neutral constant, and its value.
NEUTRAL = {"Mul": ((0, 1), 1), "Div": ((1,), 1), "Add": ((0, 1), 0), "Sub": ((1,), 0)}


@rule(*NEUTRAL)
def neutral_operand(rw: PeepholeContext, node: gs.Node) -> bool:
    """Mul/Div by 1, Add/Sub of 0, when broadcasting keeps the other operand's shape: the other operand."""
    if len(node.inputs) < 2:
        return False
    positions, neutral = NEUTRAL[node.op]
    for position in positions:
        operand = node.inputs[position]
        if isinstance(operand, gs.Constant) and is_lazy(operand):
            head = peek_values(operand, PEEK_ELEMENTS)  # a weight is rarely neutral: say so without reading it
            if head is not None and not _is_neutral(head, neutral, node.op, rw.signed_zeros):
                continue
        value = constant_value(operand)
        other = node.inputs[1 - position]
        if value is None or not _is_neutral(np.asarray(value), neutral, node.op, rw.signed_zeros):
            continue
        if _broadcast_keeps_shape(other, np.shape(value)) and same_dtype(other, node.outputs[0]):
            return rw.bypass(node, other)
    return False


@rule("Where")
def where_constant_condition(rw: PeepholeContext, node: gs.Node) -> bool:
    """Where with an all-true or all-false constant condition: the chosen branch (expanded if broadcasting grew it)."""
    if len(node.inputs) < 2:
        return False
    condition = constant_value(node.inputs[0])
    if condition is None or np.asarray(condition).size == 0:
        return False
    condition = np.asarray(condition, dtype=bool)
    if condition.all():
        chosen = node.inputs[1]
    elif not condition.any():
        chosen = node.inputs[2]
    else:
        return False
    result = node.outputs[0]
    shape = static_shape(result)
    if shape is not None and static_shape(chosen) == shape:
        return rw.bypass(node, chosen)
    if shape is None or 0 in shape:
        return False
    target = gs.Constant(rw.model.fresh_name(f"{result.name}_shape"), np.asarray(shape, dtype=np.int64))
    rw.become(node, "Expand", [chosen, target])
    return True


def _move_in_front(rw: PeepholeContext, node: gs.Node, appended: int) -> None:
    """Move the nodes a rule appended (from index ``appended`` on) in front of ``node``, which
    it turned into their last step, keeping their order."""
    created = rw.graph.nodes[appended:]
    del rw.graph.nodes[appended:]
    position = rw.graph.nodes.index(node)
    rw.graph.nodes[position:position] = created


@rule("MatMul")
def matmul_of_inner_size_one(rw: PeepholeContext, node: gs.Node) -> bool:
    """MatMul of A[..., M, 1] and B[..., 1, N]: Mul(A, B), the same products without the sum; with
    a 1-D operand (``[1]``), the Mul reshaped to the MatMul's output (the vector's axis dropped)."""
    if rw.signed_zeros or len(node.inputs) != 2:
        return False
    left, right = (static_shape(t) for t in node.inputs)
    if left is None or right is None or not left or not right or left[-1] != 1 or right[-2 if len(right) > 1 else 0] != 1:
        return False
    if len(left) >= 2 and len(right) >= 2:
        rw.become(node, "Mul", list(node.inputs))
        return True
    result = node.outputs[0]
    shape = static_shape(result)
    if shape is None:
        return False
    appended = len(rw.graph.nodes)
    product = rw.node("Mul", list(node.inputs), dtype=result.dtype, shape=np.broadcast_shapes(left, right))
    rw.become(node, "Reshape", [product, rw.const(list(shape), "matmul_shape", np.int64)])
    _move_in_front(rw, node, appended)
    return True


@rule("LogSoftmax")
def log_softmax_of_one(rw: PeepholeContext, node: gs.Node) -> bool:
    """LogSoftmax over an axis of size 1: ``x - x`` (0, or NaN where x is infinite or NaN, as
    ``x - max - log(sum(exp(x - max)))`` is)."""
    shape = static_shape(node.inputs[0])
    if shape is None or not shape:
        return False
    axis = int(node.attrs.get("axis", -1 if rw.model.opset >= 13 else 1)) % len(shape)
    # below opset 13 the input is coerced to 2-D at ``axis`` and normalized over the second part
    normalized = shape[axis] if rw.model.opset >= 13 else int(np.prod(shape[axis:]))
    if normalized != 1:
        return False
    rw.become(node, "Sub", [node.inputs[0], node.inputs[0]])
    return True


@rule("Sum")
def sum_as_adds(rw: PeepholeContext, node: gs.Node) -> bool:
    """Sum(x0, ..., xn): Add(...Add(Add(x0, x1), x2)..., xn), left to right; Sum(x): x."""
    operands = [t for t in node.inputs if t.name]
    if len(operands) != len(node.inputs) or not operands:
        return False
    if len(operands) == 1:
        return rw.bypass(node, operands[0])
    appended = len(rw.graph.nodes)
    partial = operands[0]
    for operand in operands[1:-1]:
        partial = rw.node("Add", [partial, operand], name="sum", dtype=node.outputs[0].dtype, shape=_broadcast_shape(partial, operand))
    rw.become(node, "Add", [partial, operands[-1]])
    _move_in_front(rw, node, appended)
    return True


def _broadcast_shape(left: gs.Tensor, right: gs.Tensor) -> tuple[int, ...] | None:
    """The multidirectional broadcast of two static shapes (None if either is not static)."""
    shapes = static_shape(left), static_shape(right)
    if shapes[0] is None or shapes[1] is None:
        return None
    return tuple(np.broadcast_shapes(*shapes))


@rule("Gemm")
def gemm_of_inner_size_one(rw: PeepholeContext, node: gs.Node) -> bool:
    """Gemm of inner size 1: Mul of the operands (Reshape for a transposed one), times alpha, plus beta·C."""
    if rw.signed_zeros or len(node.inputs) < 2:
        return False
    left, right = (static_shape(t) for t in node.inputs[:2])
    trans_a, trans_b = bool(node.attrs.get("transA", 0)), bool(node.attrs.get("transB", 0))
    if left is None or right is None or len(left) != 2 or len(right) != 2 or left[0 if trans_a else 1] != 1 or right[1 if trans_b else 0] != 1:
        return False
    dtype = node.outputs[0].dtype
    if dtype is None or np.dtype(dtype).kind != "f":
        return False
    a, b = node.inputs[0], node.inputs[1]
    appended = len(rw.graph.nodes)
    if trans_a:
        a = rw.node("Reshape", [a, rw.const([left[1], 1], "gemm_a_shape", np.int64)], dtype=dtype, shape=[left[1], 1])
    if trans_b:
        b = rw.node("Reshape", [b, rw.const([1, right[0]], "gemm_b_shape", np.int64)], dtype=dtype, shape=[1, right[0]])
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    steps: list[tuple[str, list[gs.Tensor]]] = [("Mul", [a, b])]
    if alpha != 1.0:
        steps.append(("Mul", [rw.const(alpha, "gemm_alpha", dtype)]))
    if bias is not None:
        scaled = bias if beta == 1.0 else rw.node("Mul", [rw.const(beta, "gemm_beta", dtype), bias], dtype=dtype)
        steps.append(("Add", [scaled]))
    current: gs.Tensor | None = None
    for index, (op, operands) in enumerate(steps):
        inputs = operands if current is None else [current, *operands]
        if index == len(steps) - 1:
            rw.become(node, op, inputs)
        else:
            current = rw.node(op, inputs, dtype=dtype)
    _move_in_front(rw, node, appended)
    return True


def _is_neutral(value: np.ndarray, neutral: int, op: str, signed_zeros: bool) -> bool:
    if value.dtype.kind not in "iufc" or value.size == 0 or not np.all(value == neutral):
        return False
    if neutral != 0 or value.dtype.kind not in "fc":
        return True
    negative = np.signbit(value.real)
    exact = negative.all() if op == "Add" else not negative.any()  # x + (-0.0) and x - (+0.0)
    return bool(exact) or not signed_zeros


def _broadcast_keeps_shape(tensor: gs.Tensor, constant_shape: tuple[int, ...]) -> bool:
    """Broadcasting ``tensor`` with a constant of ``constant_shape`` leaves its shape as is."""
    if isinstance(tensor, gs.Constant):
        dims = list(tensor.shape)
    elif tensor.shape is None:
        return False
    else:
        dims = list(tensor.shape)
    if len(constant_shape) > len(dims):
        return False
    trailing = dims[len(dims) - len(constant_shape) :]
    return all(size == 1 or (isinstance(dim, (int, np.integer)) and dim == size) for dim, size in zip(trailing, constant_shape))


ARITHMETIC_RULES = [neutral_operand, where_constant_condition]
