"""A constant zero ``Pad`` in front of a ``Conv`` or ``AveragePool`` folded into the op's own ``pads``.

TensorFlow's "same" padding reaches ONNX as an explicit ``Pad`` before every strided Conv
(tf2onnx, keras2onnx: a MobileNet-V2 keeps 52 of them; onnxsim folds them). An NPU runs the
padding inside the Conv for free, while a separate Pad is one more op, one more tensor in memory
and often a fallback.

Matches ``Conv(Pad(x, pads[, 0][, axes]), W[, b])`` and ``AveragePool(Pad(x, pads[, 0]))`` where
the Pad is in ``constant`` mode with the value 0 (or none), its pads are constant and
non-negative, the batch and channel axes are not padded, and the op's ``auto_pad`` is explicit
(``NOTSET`` or ``VALID``). Produces the op reading ``x`` with the Pad's spatial pads added to its
own. An ``AveragePool`` counts the padded zeros in its average, as it did when they were data:
it gets ``count_include_pad=1``, so it must have no pads of its own unless it already counted
them. Exact for every input (the padded values are the same zeros either way).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Match, NearMiss, NoMatch, constant_value, op, var
from mapc.passes.fusion.context import FusionContext, FusionRule


def _pads_per_axis(pad: gs.Node, rank: int) -> tuple[list[int], list[int]]:
    """(begins, ends) of a constant Pad for each of ``rank`` axes; NoMatch if not constant."""
    if len(pad.inputs) > 1:
        pads = constant_value(pad.inputs[1])
    else:  # Pad-2..10: an attribute
        pads = np.asarray(pad.attrs.get("pads")) if "pads" in pad.attrs else None
    if pads is None:
        raise NearMiss("pads", "the Pad's pads are computed at run time", "fold constants first (fold-constants)")
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    axes = list(range(rank))
    if len(pad.inputs) > 3 and not pad.inputs[3].is_empty():
        given = constant_value(pad.inputs[3])
        if given is None:
            raise NoMatch
        axes = [int(a) % rank for a in np.asarray(given).reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise NoMatch
    begins, ends = [0] * rank, [0] * rank
    for index, axis in enumerate(axes):
        begins[axis], ends[axis] = pads[index], pads[index + len(axes)]
    return begins, ends


def _pad_value_is_zero(pad: gs.Node) -> bool:
    if len(pad.inputs) > 2 and not pad.inputs[2].is_empty():
        value = constant_value(pad.inputs[2])
        return value is not None and np.size(value) == 1 and float(np.asarray(value).reshape(-1)[0]) == 0.0
    return float(pad.attrs.get("value", 0.0)) == 0.0


class PadIntoConv(FusionRule):
    """Constant zero Pad + Conv/AveragePool -> the op with the pads added to its own."""

    name = "pad-into-conv"
    pattern = op["Conv", "AveragePool"](op.Pad(var("x"), ..., name="pad"), ..., name="op")

    def check(self, match: Match, ctx: FusionContext) -> list[int]:
        pad, node = match.nodes["pad"], match.nodes["op"]
        if str(pad.attrs.get("mode", "constant")) != "constant":
            raise NearMiss("mode", f"the Pad pads in {pad.attrs['mode']!r} mode, not with zeros", None)
        if not _pad_value_is_zero(pad):
            raise NearMiss("value", "the Pad pads with a value other than 0", None)
        rank = ctx.rank(match.tensors["x"])
        if rank is None or rank < 3:
            raise NearMiss("rank", "the padded tensor's rank is unknown", ctx.shapes_fix("run shape inference (fix-shapes)"))
        begins, ends = _pads_per_axis(pad, rank)
        if min(begins + ends) < 0:
            raise NearMiss("negative", "the Pad crops (negative pads)", None)
        if any((begins[a], ends[a]) != (0, 0) for a in (0, 1)):
            raise NearMiss("channels", "the Pad pads the batch or channel axis", None)
        auto_pad = str(node.attrs.get("auto_pad", "NOTSET"))
        if auto_pad not in ("NOTSET", "VALID"):
            raise NearMiss("auto-pad", f"the {node.op} pads itself with auto_pad={auto_pad}", None)
        spatial = rank - 2
        own = [int(p) for p in node.attrs.get("pads", [0] * 2 * spatial)] if auto_pad == "NOTSET" else [0] * 2 * spatial
        if node.op == "AveragePool" and any(own) and not int(node.attrs.get("count_include_pad", 0)):
            raise NearMiss("count-include-pad", "the AveragePool leaves its own padding out of the average", None)
        return [own[i] + begins[2 + i] for i in range(spatial)] + [own[spatial + i] + ends[2 + i] for i in range(spatial)]

    def rewrite(self, match: Match, pads: list[int], ctx: FusionContext) -> gs.Tensor:
        node = match.nodes["op"]
        out = match.root.outputs[0]
        attrs = {key: value for key, value in node.attrs.items() if key != "auto_pad"}
        attrs["pads"] = pads
        if node.op == "AveragePool":
            attrs["count_include_pad"] = 1
        inputs = [match.tensors["x"], *node.inputs[1:]]
        return ctx.node(node.op, inputs, attrs=attrs, dtype=out.dtype, shape=ctx.shape(out), name=node.name or node.op.lower())
