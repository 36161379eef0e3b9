"""Helpers of the QNN tests: quantize a small model the way a target wants, plan it, ask QNN."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mapc.ir import Model, load
from mapc.passes.quantize import resolve
from mapc.targets import get_target, plan_partitions
from mapc.targets.qnn import Agreement, NodeAgreement, check_plan, qnn_available
from tests.conftest import make_model
from tests.passes.quantize.support import quantize

needs_qnn = pytest.mark.skipif(not qnn_available(), reason="needs the qnn extra (onnxruntime-qnn)")
F = TensorProto.FLOAT
RNG = np.random.default_rng(11)


def single_op_model(nodes, inputs, output_shape, initializers=(), opset: int = 21, output="y") -> onnx.ModelProto:
    """A model of ``nodes`` over float ``inputs`` ({name: shape}) with one float output."""
    return make_model(
        nodes,
        [helper.make_tensor_value_info(name, F, shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(output, F, output_shape)],
        initializers,
        opset=opset,
    )


def weight(name: str, shape, scale: float = 0.3, offset: float = 0.0) -> onnx.TensorProto:
    return numpy_helper.from_array((offset + scale * RNG.standard_normal(shape)).astype(np.float32), name)


def quantized_for(proto: onnx.ModelProto, target: str = "qnn-htp", scheme: str = "a8w8", **overrides) -> Model:
    """``proto`` quantized with the placement ``target`` asks for; ``overrides`` win, even a type
    the target does not accept (to build what a rule refuses). The graph outputs keep the
    scheme's activation type unless ``wide_outputs=True``: a rule is about one op at one type."""
    options = {**resolve(scheme, get_target(target).quantization), "wide_outputs": False, **overrides}
    model, _ = quantize(proto, **options)
    return model


def plan_and_ask(model: Model | onnx.ModelProto, target: str = "qnn-htp") -> Agreement:
    """mapc's plan for ``target`` beside QNN's verdict on the same model."""
    working = model if isinstance(model, Model) else load(model)
    plan = plan_partitions(working, get_target(target))
    return check_plan(working, plan)


def the(agreement: Agreement, op: str) -> NodeAgreement:
    """The one node of op type ``op``."""
    [node] = [n for n in agreement.nodes if n.op == op]
    return node
