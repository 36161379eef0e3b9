"""Chains of data-movement ops that collapse into one op once shapes are static.

* ``Reshape``/``Squeeze``/``Unsqueeze``/``Flatten`` reading the output of another of these: the
  outer op becomes one ``Reshape`` of the inner op's input to the (static) final shape. A chain
  that restores the original shape (``Unsqueeze`` then ``Squeeze``) then disappears as an
  identity Reshape.
* ``Transpose`` of a ``Transpose``: one ``Transpose`` by the composed permutation (removed if that
  is the identity).

The inner op stays only while something else still reads its output.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

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


CHAIN_RULES = [reshape_chain, transpose_chain]
