"""pad-into-conv: a constant zero Pad before Conv/AveragePool becomes the op's own pads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .common import fuse, misses, ops
from .graphs import Graph


def padded(op_type="Conv", pads=(0, 0, 1, 2, 0, 0, 2, 1), value=None, mode=None, own=None, opset=18, axes=None,
           count_include_pad=None, auto_pad=None):
    g = Graph(opset)
    x = g.input("x", [1, 3, 9, 9])
    pad_inputs = [x, g.ints(list(pads))]
    if value is not None or axes is not None:
        pad_inputs.append(g.const(np.float32(0 if value is None else value)))
    if axes is not None:
        pad_inputs.append(g.ints(list(axes)))
    pad_attrs = {} if mode is None else {"mode": mode}
    padded_x = g.op("Pad", *pad_inputs, **pad_attrs)
    attrs = {} if own is None else {"pads": list(own)}
    if auto_pad is not None:
        attrs["auto_pad"] = auto_pad
    if op_type == "Conv":
        weight = g.const(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32))
        out = g.op("Conv", padded_x, weight, kernel_shape=[3, 3], strides=[2, 2], **attrs)
    else:
        if count_include_pad is not None:
            attrs["count_include_pad"] = count_include_pad
        out = g.op("AveragePool", padded_x, kernel_shape=[3, 3], strides=[2, 2], **attrs)
    g.output(out)
    return g.build()


def test_pad_folds_into_the_conv():
    model, record = fuse(padded())
    assert ops(model) == {"Conv": 1}
    conv = next(n for n in model.graph.nodes if n.op == "Conv")
    assert conv.attrs["pads"] == [1, 2, 2, 1] and conv.inputs[0].name == "x"
    assert record.counters["pad-into-conv"] == 1


def test_pads_add_to_the_convs_own_and_axes_name_the_padded_axes():
    model, _ = fuse(padded(pads=(1, 1, 0, 0), axes=(2, 3), own=(1, 0, 0, 1)))
    assert next(n for n in model.graph.nodes if n.op == "Conv").attrs["pads"] == [2, 1, 0, 1]


def test_average_pool_counts_the_folded_zeros():
    model, _ = fuse(padded("AveragePool", count_include_pad=0))
    pool = next(n for n in model.graph.nodes if n.op == "AveragePool")
    assert "Pad" not in ops(model) and pool.attrs["count_include_pad"] == 1


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"value": 1.0}, "value"),
    ({"mode": "reflect"}, "mode"),
    ({"op_type": "AveragePool", "pads": (0, 1, 1, 1, 0, 0, 1, 1)}, "channels"),
    ({"pads": (0, 0, -1, 0, 0, 0, 1, 1)}, "negative"),
    ({"auto_pad": "SAME_UPPER"}, "auto-pad"),
    ({"op_type": "AveragePool", "own": (1, 1, 1, 1), "count_include_pad": 0}, "count-include-pad"),
])
def test_pads_that_are_not_the_ops_zeros_stay(kwargs, code):
    model, record = fuse(padded(**kwargs))
    assert "Pad" in ops(model)
    assert any(m["code"] == f"fuse.pad-into-conv.{code}" or m["code"].endswith(code) for m in misses(record, "pad-into-conv"))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-1, 2), min_size=8, max_size=8), st.sampled_from([None, 0.0, 0.5]),
       st.sampled_from([None, "constant", "edge"]), st.sampled_from(["Conv", "AveragePool"]), st.sampled_from([None, 0, 1]))
def test_folding_or_not_the_outputs_stay_the_same(pads, value, mode, op_type, count_include_pad):
    """Any Pad in front of a Conv or AveragePool: fuse keeps the function (the differential check
    inside ``fuse``), whatever it decides."""
    pads[0] = pads[4] = 0  # the batch of one stays
    if op_type == "Conv":
        count_include_pad = None
        pads[1] = pads[5] = 0  # a Conv's weights fix its input channels
    fuse(padded(op_type, pads=pads, value=value, mode=mode, count_include_pad=count_include_pad))
