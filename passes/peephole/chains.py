"""Chains of data-movement ops that collapse into one op once shapes are static.

* ``Reshape``/``Squeeze``/``Unsqueeze``/``Flatten`` reading the output of another of these: the
  outer op becomes one ``Reshape`` of the inner op's input to the (static) final shape. A chain
  that restores the original shape (``Unsqueeze`` then ``Squeeze``) then disappears as an
  identity Reshape.
* ``Transpose`` of a ``Transpose``: one ``Transpose`` by the composed permutation (removed if that
  is the identity).
* ``Cast`` back to the type a ``Cast`` started from, when the type in between holds every value
  of it exactly (float32 -> float64 -> float32, int8 -> float16 -> int8, bool -> int64 -> bool...):
  the first Cast's input. onnxruntime removes such pairs itself, even with optimizations off,
  and then leaves a subgraph that reads the pair's output dangling ("Missing Input").

The inner op stays only while something else still reads its output.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

from mapc.ir import RewriteContext, is_default_domain, producer, rule, static_shape

RESHAPE_LIKE = ("Reshape", "Squeeze", "Unsqueeze", "Flatten")


@rule(*RESHAPE_LIKE)
def reshape_chain(rw: RewriteContext, node: gs.Node) -> bool:
    """A Reshape-like op reading another: one Reshape of the inner op's input to the final shape."""
    inner = producer(node.inputs[0])
    if inner is None or inner.op not in RESHAPE_LIKE or not is_default_domain(inner) or not inner.inputs:
        return False
    shape = static_shape(node.outputs[0])
    if shape is None:
        return False
    source = inner.inputs[0]
    if static_shape(source) == shape:
        return rw.bypass(node, source)
    return rw.reshape(node, source, shape)


@rule("Transpose")
def transpose_chain(rw: RewriteContext, node: gs.Node) -> bool:
    """Transpose of a Transpose: one Transpose by the composed permutation (none if the identity)."""
    inner = producer(node.inputs[0])
    if inner is None or inner.op != "Transpose" or not is_default_domain(inner):
        return False
    source = inner.inputs[0]
    rank = None if source.shape is None else len(source.shape)
    if rank is None:
        return False
    first = list(inner.attrs.get("perm", range(rank - 1, -1, -1)))
    second = list(node.attrs.get("perm", range(rank - 1, -1, -1)))
    composed = [first[axis] for axis in second]
    if composed == list(range(rank)):
        return rw.bypass(node, source)
    rw.become(node, "Transpose", [source], {"perm": composed})
    return True


@rule("Cast")
def cast_round_trip(rw: RewriteContext, node: gs.Node) -> bool:
    """Cast back to the type a Cast started from, through a type holding all its values: the input."""
    inner = producer(node.inputs[0])
    if inner is None or inner.op != "Cast" or not is_default_domain(inner) or inner.attrs.get("saturate", 1) != 1:
        return False
    source = inner.inputs[0]
    if source.dtype is None or node.attrs.get("to") is None or inner.attrs.get("to") is None:
        return False
    start = np.dtype(source.dtype)
    if helper.tensor_dtype_to_np_dtype(node.attrs["to"]) != start:
        return False
    return holds_exactly(start, helper.tensor_dtype_to_np_dtype(inner.attrs["to"])) and rw.bypass(node, source)


def holds_exactly(start: np.dtype, middle: np.dtype) -> bool:
    """Whether casting every value of ``start`` to ``middle`` and back gives it back (NaN, ±inf
    and -0.0 included; bool through any number: 0 and 1)."""
    if start == np.bool_:
        return middle.kind in "biuf"
    if start.kind == "f":
        if middle.kind != "f" or start.name not in _FLOATS or middle.name not in _FLOATS:
            return False
        a, b = np.finfo(start), np.finfo(middle)
        return b.nmant >= a.nmant and b.maxexp >= a.maxexp and b.minexp <= a.minexp - a.nmant
    if start.kind in "iu":
        low, high = int(np.iinfo(start).min), int(np.iinfo(start).max)
        if middle.kind in "iu":
            return np.iinfo(middle).min <= low and high <= np.iinfo(middle).max
        return middle.kind == "f" and middle.name in _FLOATS and max(-low, high) <= 2 ** (np.finfo(middle).nmant + 1)
    return False


#: Float types numpy describes with finfo (not ml_dtypes' bfloat16/float8, which this rule leaves alone).
_FLOATS = ("float16", "float32", "float64")

CHAIN_RULES = [reshape_chain, transpose_chain, cast_round_trip]
