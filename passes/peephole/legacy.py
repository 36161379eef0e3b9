"""Deprecated operators onnxruntime still runs, rewritten into the standard ops they stand for.

* ``ImageScaler`` (experimental until opset 9; WinML and old CoreML-converted models):
  ``y = scale * x + bias[c]`` becomes ``Mul(x, scale)`` then ``Add`` of the bias as a
  ``[1, C, 1, 1]`` constant, in x's type: the same two roundings onnxruntime's kernel does.

onnx has no schema for these ops, so nothing infers shapes through them and no target knows
them; once rewritten, everything after them is ordinary.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import NearMiss, RewriteContext, is_default_domain, rule


@rule("ImageScaler")
def image_scaler(rw: RewriteContext, node: gs.Node) -> bool:
    """ImageScaler(x; scale, bias): Mul(x, scale) then Add(bias per channel), in x's type."""
    if not is_default_domain(node):
        return False
    data = node.inputs[0]
    if data.dtype is None:
        raise NearMiss("unknown-dtype", "the input's element type is not known", fix="run fix-shapes first")
    dtype = np.dtype(data.dtype)
    scale = rw.const(np.asarray(node.attrs.get("scale", 1.0), dtype=dtype), "image_scaler_scale")
    bias = np.asarray(node.attrs.get("bias", []), dtype=dtype)
    if bias.size == 0:
        rw.become(node, "Mul", [data, scale])
        return True
    scaled = gs.Variable(rw.model.fresh_name(f"{node.outputs[0].name}_scaled"), dtype=dtype, shape=data.shape)
    multiply = gs.Node("Mul", name=rw.model.fresh_name(f"{node.name or 'image_scaler'}_mul"), inputs=[data, scale], outputs=[scaled])
    rw.graph.nodes.insert(rw.graph.nodes.index(node), multiply)
    rw.become(node, "Add", [scaled, rw.const(bias.reshape(1, -1, 1, 1), "image_scaler_bias")])
    return True


LEGACY_RULES = [image_scaler]
