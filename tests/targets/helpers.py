"""Small builders shared by the target tests: toy targets, one-node models, QDQ pieces."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import load
from mapc.ir.model import _from_proto
from mapc.targets import get_target
from mapc.targets.constraints import constraints_for
from mapc.targets.rules import evaluate
from mapc.targets.spec import OpSet, Performance, Target, TensorLimits
from mapc.targets.views import view_model
from tests.conftest import make_model

F = TensorProto.FLOAT
NPU = get_target("npu")
ETHOS = get_target("ethos-u55")
CPU = get_target("cpu")

FAST = Performance(clock_mhz=1000, macs_per_cycle={"float32": 1024}, vector_ops_per_cycle=256, memory_gbps=100, transfer_gbps=100)
SLOW = Performance(clock_mhz=1000, macs_per_cycle={"float32": 1}, vector_ops_per_cycle=1, memory_gbps=1)


def toy_target(ops: Iterable[str], *, name: str = "toy", static_shapes: bool = False, **changes: object) -> Target:
    """An accelerator that runs ``ops`` on any dtype and shape, much faster than its host."""
    return Target(
        name=name,
        description="test target",
        tensors=TensorLimits(
            dtypes=frozenset({"float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool", "float64"}),
            static_shapes=static_shapes,
        ),
        ops=OpSet(supported=frozenset(ops)),
        performance=FAST,
        host=SLOW,
        **changes,  # type: ignore[arg-type]
    )


def info(name: str, shape: Sequence[int | str] | int, dtype: int = F) -> onnx.ValueInfoProto:
    """A typed value; an int ``shape`` is a rank whose dims shape inference fills in."""
    dims = [f"{name}_d{axis}" for axis in range(shape)] if isinstance(shape, int) else shape
    return helper.make_tensor_value_info(name, dtype, dims)


def const(name: str, value: np.ndarray | Sequence[float] | Sequence[int], dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def reasons_for(
    node: onnx.NodeProto,
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    *,
    target: Target = NPU,
    extra_nodes: Sequence[onnx.NodeProto] = (),
    after_nodes: Sequence[onnx.NodeProto] = (),
    opset: int = 18,
    validated: bool = True,
) -> list[Note]:
    """Every reason ``target`` refuses ``node`` (between ``extra_nodes`` and ``after_nodes``).

    ``validated=False`` skips load-time validation, for a node whose types no valid model has
    (an int8 MatMul standing for the effective type of a quantized one, an op onnxruntime lacks).
    """
    proto = make_model([*extra_nodes, node, *after_nodes], inputs, outputs, initializers, opset=opset)
    model = load(proto) if validated else _from_proto(proto, None, None)
    model_view = view_model(model)
    subject = next(n for n in model_view.nodes if n.node.name == node.name)
    return evaluate(subject, target, constraints_for(target))


def codes(reasons: Sequence[Note]) -> list[str]:
    return [reason.code for reason in reasons]


def qdq_pair(tensor: str, scale: float = 0.05, dtype: type = np.int8) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """QuantizeLinear -> DequantizeLinear on ``tensor``; returns nodes, their constants, the output."""
    s, z = f"{tensor}_scale", f"{tensor}_zero"
    nodes = [
        helper.make_node("QuantizeLinear", [tensor, s, z], [f"{tensor}_q"], name=f"{tensor}_Q"),
        helper.make_node("DequantizeLinear", [f"{tensor}_q", s, z], [f"{tensor}_dq"], name=f"{tensor}_DQ"),
    ]
    return nodes, [const(s, scale), numpy_helper.from_array(np.array(0, dtype=dtype), z)], f"{tensor}_dq"

#: Ops every toy target in the tests runs.
TOY_OPS = ("Relu", "Neg", "Add", "Mul", "Abs", "Conv", "MatMul", "QuantizeLinear", "DequantizeLinear", "Identity")
