"""Hypothesis strategies that generate random, valid ONNX models.

:func:`onnx_models` draws a DAG of 1..``max_ops`` operations over one or two graph inputs
(optionally with a symbolic batch dim), choosing among op families:

==================  ============================================================================
``elementwise``     Add/Sub/Mul/Div/Max/Min with broadcasting, operands commuted at random; Sum of 1-3
``unary``           Relu, Tanh, Sigmoid, Neg, Abs, Erf, Sin, Identity, LeakyRelu, Clip
``matmul``          MatMul with a 2-D or 1-D constant, batched over leading axes
``gemm``            Gemm with transA/transB, alpha/beta, optional bias of several shapes
``conv``            Conv 1-D/2-D: groups (depthwise included), strides, pads, dilations, bias
``conv_transpose``  ConvTranspose: groups, strides, pads, output_padding, bias
``pool``            MaxPool/AveragePool with strides and pads, GlobalAverage/MaxPool
``reshape``         Reshape to a random factorisation (``0`` and ``-1`` included)
``transpose``       Transpose by a random permutation
``concat``          Concat with itself, another tensor or a constant
``split``           Split into 2-3 parts along a static axis
``slice``           Slice with positive and negative steps, clamped and negative bounds
``squeeze``         Unsqueeze / Squeeze with explicit axes
``flatten``         Flatten at any axis
``softmax``         Softmax / LogSoftmax along any axis
``reduce``          ReduceSum/Mean/Max/Min/L2 over random axes, keepdims either way
``cast``            Cast through float16/float64 and back; to integers (``discontinuous``)
``where``           Where on a comparison (``discontinuous``) or on a constant condition
``constant``        constant subgraphs: ConstantOfShape, Range, Constant nodes, ops on initializers
``shape_chain``     Shape -> Gather (or tf2onnx's Cast -> Slice -> Cast -> Squeeze) -> Unsqueeze -> Concat
                    -> Reshape, Size, ConstantOfShape(Shape); chains nest (Shape of a Reshape output)
==================  ============================================================================

Several tensors (float and integer) become graph outputs. Every generated model passes the onnx
checker and runs in onnxruntime for every value of its symbolic dims; inputs for a test come
from :func:`mapc.ir.seeded_inputs`, whose default symbolic dim value is the one used here.

``discontinuous=False`` leaves out ops whose output jumps under tiny input changes (casts to
integers, comparisons of computed floats), for passes that change float rounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import onnx
from hypothesis import strategies as st

from mapc.ir import DEFAULT_DIM
from mapc.testing.builder import Dynamic, ModelBuilder, TensorInfo

Draw = Callable[[st.SearchStrategy], object]
F32 = np.dtype(np.float32)
I64 = np.dtype(np.int64)

ALL_FAMILIES = (
    "elementwise",
    "unary",
    "matmul",
    "gemm",
    "conv",
    "conv_transpose",
    "pool",
    "reshape",
    "transpose",
    "concat",
    "split",
    "slice",
    "squeeze",
    "flatten",
    "softmax",
    "reduce",
    "cast",
    "where",
    "constant",
    "shape_chain",
)


@st.composite
def onnx_models(
    draw: Draw,
    *,
    families: Sequence[str] = ALL_FAMILIES,
    max_ops: int = 8,
    symbolic: bool = True,
    opset: int = 18,
    max_outputs: int = 3,
    discontinuous: bool = True,
) -> onnx.ModelProto:
    """A random valid ONNX model (see the module docstring for what it contains)."""
    unknown = set(families) - set(ALL_FAMILIES)
    if unknown:
        raise ValueError(f"unknown op families: {sorted(unknown)}")
    gen = _Generator(draw, ModelBuilder(opset=opset), discontinuous)
    gen.make_inputs(symbolic=symbolic, wants_images=bool({"conv", "conv_transpose", "pool"} & set(families)))
    produced: list[TensorInfo] = []
    for _ in range(draw(st.integers(1, max_ops))):
        for _attempt in range(6):
            family = draw(st.sampled_from(list(families)))
            outputs = getattr(gen, family)()
            if outputs:
                produced.extend(outputs)
                break
    if not produced:
        produced = gen.builder.node("Identity", [gen.builder.tensors[0].name], [_like(gen.builder.tensors[0])])
    gen.builder.mark_output(produced[-1])
    extra = draw(st.lists(st.sampled_from(produced), max_size=max_outputs - 1, unique_by=lambda t: t.name))
    for info in extra:
        gen.builder.mark_output(info)
    return gen.builder.build()


def _like(info: TensorInfo) -> tuple[np.dtype, tuple[int, ...], Dynamic]:
    return (info.dtype, info.shape, info.dynamic)


def _broadcast_dynamic(out_rank: int, *infos: TensorInfo) -> Dynamic:
    return {out_rank - info.rank + axis: label for info in infos for axis, label in info.dynamic.items()}


NONE: Dynamic = {}


class _Generator:
    """One method per op family; each returns the new tensors, or [] if it found no operand."""

    def __init__(self, draw: Draw, builder: ModelBuilder, discontinuous: bool) -> None:
        self.draw = draw
        self.builder = builder
        self.discontinuous = discontinuous

    # -- helpers ----------------------------------------------------------------------------------
    def pick(self, predicate: Callable[[TensorInfo], bool]) -> TensorInfo | None:
        candidates = [t for t in self.builder.tensors if predicate(t)]
        return self.draw(st.sampled_from(candidates)) if candidates else None

    def floats(self, shape: Sequence[int], low: float | None = None, high: float | None = None) -> np.ndarray:
        seed = self.draw(st.integers(0, 2**16))
        rng = np.random.default_rng(seed)
        if low is not None and high is not None:
            return rng.uniform(low, high, size=tuple(shape)).astype(np.float32)
        return (rng.standard_normal(tuple(shape)) * 0.5).astype(np.float32)

    def ints(self, values: Sequence[int]) -> TensorInfo:
        return self.builder.constant(np.asarray(values, dtype=np.int64), "shape")

    def broadcast_shape_for(self, info: TensorInfo) -> tuple[int, ...]:
        """A constant shape that broadcasts against ``info`` (size 1 on its dynamic axes)."""
        length = self.draw(st.integers(0, info.rank))
        shape = []
        for axis in range(info.rank - length, info.rank):
            keep = axis not in info.dynamic and self.draw(st.booleans())
            shape.append(info.shape[axis] if keep else 1)
        return tuple(shape)

    def make_inputs(self, *, symbolic: bool, wants_images: bool) -> None:
        rank = self.draw(st.sampled_from([4, 4, 2, 3] if wants_images else [2, 3, 4]))
        if rank == 4:
            shape = [self.draw(st.integers(1, 2)), self.draw(st.integers(1, 4)), self.draw(st.integers(3, 6)), self.draw(st.integers(3, 6))]
        else:
            shape = [self.draw(st.integers(1, 4)) for _ in range(rank)]
        names = {}
        if symbolic and self.draw(st.booleans()):
            shape[0] = DEFAULT_DIM
            names = {0: "N"}
        first = self.builder.add_input(tuple(shape), symbolic=names)
        if self.draw(st.booleans()):
            second = list(first.shape)
            if second and self.draw(st.booleans()):
                static = [a for a in range(len(second)) if a not in names]
                if static:
                    axis = self.draw(st.sampled_from(static))
                    second[axis] = 1
            self.builder.add_input(tuple(second), symbolic=names)

    def float_tensor(self, min_rank: int = 0, static_from: int | None = None) -> TensorInfo | None:
        def ok(t: TensorInfo) -> bool:
            if t.dtype != F32 or t.rank < min_rank:
                return False
            return static_from is None or all(a < static_from for a in t.dynamic)

        return self.pick(ok)

    # -- families -----------------------------------------------------------------------------------
    def elementwise(self) -> list[TensorInfo]:
        a = self.float_tensor()
        if a is None:
            return []
        op = self.draw(st.sampled_from(["Add", "Sub", "Mul", "Max", "Min", "Div", "Sum"]))
        if op == "Sum":
            return self.variadic_sum(a)
        if op == "Div":
            shape = self.broadcast_shape_for(a)
            magnitude = self.floats(shape, 0.5, 2.0)
            sign = np.where(self.floats(shape) >= 0, 1.0, -1.0).astype(np.float32)
            b = self.builder.constant(magnitude * sign)
            operands = [a, b]
        else:
            b = self.pick(lambda t: t.dtype == F32 and _broadcasts(a, t)) if self.draw(st.booleans()) else None
            if b is None:
                b = self.builder.constant(self.floats(self.broadcast_shape_for(a)))
            operands = [a, b]
            if self.draw(st.booleans()):
                operands.reverse()
        out_shape = tuple(np.broadcast_shapes(a.shape, b.shape))
        return self.builder.node(op, [t.name for t in operands], [(F32, out_shape, _broadcast_dynamic(len(out_shape), a, b))])

    def variadic_sum(self, a: TensorInfo) -> list[TensorInfo]:
        """Sum of ``a`` and 0-2 more operands (tensors of the graph or constants), all of them
        broadcasting together, in random order."""
        operands = [a]
        for _ in range(self.draw(st.integers(0, 2))):
            fits = lambda t: t.dtype == F32 and all(_broadcasts(o, t) for o in operands)  # noqa: E731
            b = self.pick(fits) if self.draw(st.booleans()) else None
            if b is None:
                b = self.builder.constant(self.floats(self.broadcast_shape_for(a)))
            if fits(b):
                operands.append(b)
        operands = self.draw(st.permutations(operands))
        out_shape = tuple(np.broadcast_shapes(*(t.shape for t in operands)))
        return self.builder.node("Sum", [t.name for t in operands], [(F32, out_shape, _broadcast_dynamic(len(out_shape), *operands))])

    def unary(self) -> list[TensorInfo]:
        a = self.float_tensor()
        if a is None:
            return []
        op = self.draw(st.sampled_from(["Relu", "Tanh", "Sigmoid", "Neg", "Abs", "Erf", "Sin", "Identity", "LeakyRelu", "Clip"]))
        if op == "LeakyRelu":
            return self.builder.node(op, [a.name], [_like(a)], alpha=self.draw(st.sampled_from([0.01, 0.1, 0.2])))
        if op == "Clip":
            low = self.builder.constant(np.array(-self.draw(st.sampled_from([0.5, 1.0])), dtype=np.float32))
            high = self.builder.constant(np.array(self.draw(st.sampled_from([0.5, 6.0])), dtype=np.float32))
            return self.builder.node(op, [a.name, low.name, high.name], [_like(a)])
        return self.builder.node(op, [a.name], [_like(a)])

    def matmul(self) -> list[TensorInfo]:
        a = self.pick(lambda t: t.dtype == F32 and t.rank >= 1 and (t.rank - 1) not in t.dynamic)
        if a is None:
            return []
        k = a.shape[-1]
        if self.draw(st.booleans()) or a.rank == 1:
            n = self.draw(st.integers(1, 5))
            b = self.builder.constant(self.floats((k, n)))
            out = a.shape[:-1] + (n,)
        else:
            b = self.builder.constant(self.floats((k,)))
            out = a.shape[:-1]
        dynamic = {axis: label for axis, label in a.dynamic.items() if axis < len(out)}
        return self.builder.node("MatMul", [a.name, b.name], [(F32, out, dynamic)])

    def gemm(self) -> list[TensorInfo]:
        a = self.pick(lambda t: t.dtype == F32 and t.rank == 2 and 1 not in t.dynamic)
        if a is None:
            return []
        trans_a = int(not a.dynamic and self.draw(st.booleans()))
        m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
        n = self.draw(st.integers(1, 5))
        trans_b = int(self.draw(st.booleans()))
        b = self.builder.constant(self.floats((n, k) if trans_b else (k, n)))
        inputs = [a.name, b.name]
        bias_shapes = [(n,), (1, n), ()] + ([] if a.dynamic else [(m, n), (m, 1)])
        if self.draw(st.booleans()):
            inputs.append(self.builder.constant(self.floats(self.draw(st.sampled_from(bias_shapes)))).name)
        attributes = {"transA": trans_a, "transB": trans_b}
        if self.draw(st.booleans()):
            attributes["alpha"] = self.draw(st.sampled_from([0.5, 2.0]))
            attributes["beta"] = self.draw(st.sampled_from([0.5, 2.0]))
        return self.builder.node("Gemm", inputs, [(F32, (m, n), dict(a.dynamic))], **attributes)

    def _image(self, ranks: tuple[int, ...] = (4,)) -> TensorInfo | None:
        """A float tensor laid out [N, C, spatial...] whose only dynamic axis, if any, is N."""
        return self.pick(lambda t: t.dtype == F32 and t.rank in ranks and set(t.dynamic) <= {0})

    def conv(self) -> list[TensorInfo]:
        x = self._image(ranks=(3, 4))
        if x is None:
            return []
        channels, spatial = x.shape[1], x.shape[2:]
        group = self.draw(st.sampled_from([g for g in range(1, channels + 1) if channels % g == 0]))
        out_channels = group * self.draw(st.integers(1, 3))
        kernel, strides, dilations, pads_begin, pads_end, out_spatial = [], [], [], [], [], []
        for size in spatial:
            k = self.draw(st.integers(1, min(3, size + 1)))
            d = self.draw(st.sampled_from([1, 2])) if (k - 1) * 2 + 1 <= size else 1
            s = self.draw(st.integers(1, 2))
            pb, pe = self.draw(st.integers(0, 1)), self.draw(st.integers(0, 1))
            extent = d * (k - 1) + 1
            if size + pb + pe < extent:
                pb = pe = 0
                k, d, extent = 1, 1, 1
            kernel.append(k), strides.append(s), dilations.append(d), pads_begin.append(pb), pads_end.append(pe)
            out_spatial.append((size + pb + pe - extent) // s + 1)
        weight = self.builder.constant(self.floats((out_channels, channels // group, *kernel)))
        inputs = [x.name, weight.name]
        if self.draw(st.booleans()):
            inputs.append(self.builder.constant(self.floats((out_channels,))).name)
        out = (x.shape[0], out_channels, *out_spatial)
        return self.builder.node(
            "Conv", inputs, [(F32, out, x.dynamic)],
            group=group, kernel_shape=kernel, strides=strides, dilations=dilations, pads=pads_begin + pads_end,
        )

    def conv_transpose(self) -> list[TensorInfo]:
        x = self._image()
        if x is None:
            return []
        channels = x.shape[1]
        group = self.draw(st.sampled_from([g for g in range(1, channels + 1) if channels % g == 0]))
        per_group = self.draw(st.integers(1, 2))
        kernel, strides, pads, output_padding, out_spatial = [], [], [[], []], [], []
        for size in x.shape[2:]:
            k, s = self.draw(st.integers(1, 3)), self.draw(st.integers(1, 2))
            pb, pe = self.draw(st.integers(0, k - 1)), self.draw(st.integers(0, k - 1))
            op = self.draw(st.integers(0, s - 1))
            length = (size - 1) * s - pb - pe + (k - 1) + 1 + op
            if length < 1:
                pb = pe = 0
                length = (size - 1) * s + k + op
            kernel.append(k), strides.append(s), pads[0].append(pb), pads[1].append(pe), output_padding.append(op)
            out_spatial.append(length)
        weight = self.builder.constant(self.floats((channels, per_group, *kernel)))
        inputs = [x.name, weight.name]
        if self.draw(st.booleans()):
            inputs.append(self.builder.constant(self.floats((group * per_group,))).name)
        out = (x.shape[0], group * per_group, *out_spatial)
        return self.builder.node(
            "ConvTranspose", inputs, [(F32, out, x.dynamic)],
            group=group, kernel_shape=kernel, strides=strides, pads=pads[0] + pads[1], output_padding=output_padding,
        )

    def pool(self) -> list[TensorInfo]:
        x = self._image()
        if x is None:
            return []
        op = self.draw(st.sampled_from(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"]))
        if op.startswith("Global"):
            return self.builder.node(op, [x.name], [(F32, x.shape[:2] + (1, 1), x.dynamic)])
        kernel, strides, pads_begin, pads_end, out_spatial = [], [], [], [], []
        for size in x.shape[2:]:
            k = self.draw(st.integers(1, min(3, size)))
            s = self.draw(st.integers(1, 2))
            pb, pe = self.draw(st.integers(0, k - 1)), self.draw(st.integers(0, k - 1))
            kernel.append(k), strides.append(s), pads_begin.append(pb), pads_end.append(pe)
            out_spatial.append((size + pb + pe - k) // s + 1)
        attributes: dict[str, object] = {"kernel_shape": kernel, "strides": strides, "pads": pads_begin + pads_end}
        if op == "AveragePool":
            attributes["count_include_pad"] = int(self.draw(st.booleans()))
        return self.builder.node(op, [x.name], [(F32, x.shape[:2] + tuple(out_spatial), x.dynamic)], **attributes)

    def reshape(self) -> list[TensorInfo]:
        a = self.pick(lambda t: t.rank >= 1 and set(t.dynamic) <= {0} and t.dtype == F32)
        if a is None:
            return []
        keep_first = bool(a.dynamic)
        rest = int(np.prod(a.shape[1:] if keep_first else a.shape, dtype=np.int64))
        dims = _factorize(self.draw, rest, max_parts=3)
        target = list(dims)
        if self.draw(st.booleans()):
            target[self.draw(st.integers(0, len(dims) - 1))] = -1
        prefix = [a.shape[0]] if keep_first else []
        shape = self.ints(([0] if keep_first else []) + target)
        out = tuple(prefix + dims)
        return self.builder.node("Reshape", [a.name, shape.name], [(F32, out, dict(a.dynamic))])

    def transpose(self) -> list[TensorInfo]:
        a = self.pick(lambda t: t.rank >= 2)
        if a is None:
            return []
        perm = list(self.draw(st.permutations(range(a.rank))))
        out = tuple(a.shape[p] for p in perm)
        dynamic = {perm.index(axis): label for axis, label in a.dynamic.items()}
        return self.builder.node("Transpose", [a.name], [(a.dtype, out, dynamic)], perm=perm)

    def concat(self) -> list[TensorInfo]:
        a = self.pick(lambda t: t.rank >= 1 and t.dtype == F32)
        if a is None:
            return []
        axis = self.draw(st.integers(0, a.rank - 1))
        mode = self.draw(st.sampled_from(["self", "tensor", "const"]))
        other = None
        if mode == "tensor":
            other = self.pick(
                lambda t: t.name != a.name and t.dtype == a.dtype and t.rank == a.rank and t.dynamic == a.dynamic
                and axis not in a.dynamic and all(t.shape[i] == a.shape[i] for i in range(a.rank) if i != axis)
            )
        if mode == "const" and not a.dynamic:
            shape = list(a.shape)
            shape[axis] = self.draw(st.integers(1, 3))
            other = self.builder.constant(self.floats(shape))
        other = other or a
        out = list(a.shape)
        out[axis] += other.shape[axis]
        dynamic = dict(a.dynamic)
        if axis in dynamic:
            dynamic[axis] = f"2*{dynamic[axis]}"
        operands = [a, other] if self.draw(st.booleans()) else [other, a]
        signed_axis = axis - a.rank if self.draw(st.booleans()) else axis
        return self.builder.node("Concat", [t.name for t in operands], [(F32, tuple(out), dynamic)], axis=signed_axis)

    def split(self) -> list[TensorInfo]:
        a = self.pick(lambda t: any(t.shape[i] >= 2 for i in t.static_axes()) and t.dtype == F32)
        if a is None:
            return []
        axis = self.draw(st.sampled_from([i for i in a.static_axes() if a.shape[i] >= 2]))
        parts = _compose(self.draw, a.shape[axis], self.draw(st.integers(2, min(3, a.shape[axis]))))
        sizes = self.ints(parts)
        outputs = []
        for size in parts:
            shape = list(a.shape)
            shape[axis] = size
            outputs.append((F32, tuple(shape), a.dynamic))
        return self.builder.node("Split", [a.name, sizes.name], outputs, axis=axis)

    def slice(self) -> list[TensorInfo]:
        a = self.pick(lambda t: bool(t.static_axes()) and t.dtype == F32)
        if a is None:
            return []
        axes = self.draw(st.lists(st.sampled_from(a.static_axes()), min_size=1, max_size=2, unique=True))
        starts, ends, steps, out = [], [], [], list(a.shape)
        for axis in axes:
            size = a.shape[axis]
            step = self.draw(st.sampled_from([1, 1, 2, -1]))
            if step > 0:
                start = self.draw(st.integers(0, size - 1))
                end = self.draw(st.integers(start + 1, size))
                length = len(range(start, end, step))
                encoded_end = self.draw(st.sampled_from([end, end - size if end < size else 2**63 - 1]))
                encoded_start = self.draw(st.sampled_from([start, start - size]))
            else:
                start = self.draw(st.integers(0, size - 1))
                end = self.draw(st.integers(-1, start - 1))
                length = len(range(start, end, step))
                encoded_start = start
                encoded_end = -(size + 1) if end == -1 else end
            starts.append(encoded_start), ends.append(encoded_end), steps.append(step)
            out[axis] = length
        inputs = [a.name, self.ints(starts).name, self.ints(ends).name, self.ints(axes).name, self.ints(steps).name]
        return self.builder.node("Slice", inputs, [(F32, tuple(out), a.dynamic)])

    def squeeze(self) -> list[TensorInfo]:
        a = self.pick(lambda t: t.dtype == F32)
        if a is None:
            return []
        ones = [axis for axis in a.static_axes() if a.shape[axis] == 1]
        if ones and self.draw(st.booleans()):
            axes = self.draw(st.lists(st.sampled_from(ones), min_size=1, unique=True))
            out = tuple(s for i, s in enumerate(a.shape) if i not in axes)
            dynamic = {d - sum(1 for x in axes if x < d): label for d, label in a.dynamic.items()}
            return self.builder.node("Squeeze", [a.name, self.ints(axes).name], [(F32, out, dynamic)])
        count = self.draw(st.integers(1, 2))
        axes = sorted(self.draw(st.lists(st.integers(0, a.rank + count - 1), min_size=count, max_size=count, unique=True)))
        out_list, dims = [], iter(range(a.rank))
        for position in range(a.rank + count):
            out_list.append(1 if position in axes else a.shape[next(dims)])
        remaining = [p for p in range(a.rank + count) if p not in axes]
        dynamic = {remaining[d]: label for d, label in a.dynamic.items()}
        return self.builder.node("Unsqueeze", [a.name, self.ints(axes).name], [(F32, tuple(out_list), dynamic)])

    def flatten(self) -> list[TensorInfo]:
        a = self.pick(lambda t: t.dtype == F32)
        if a is None:
            return []
        axis = self.draw(st.integers(0, a.rank))
        out = (int(np.prod(a.shape[:axis], dtype=np.int64)), int(np.prod(a.shape[axis:], dtype=np.int64)))
        dynamic = {}
        for part, axes in ((0, range(0, axis)), (1, range(axis, a.rank))):
            labels = [a.dynamic[d] for d in axes if d in a.dynamic]
            if labels:
                dynamic[part] = "*".join(labels + [str(a.shape[d]) for d in axes if d not in a.dynamic])
        return self.builder.node("Flatten", [a.name], [(F32, out, dynamic)], axis=axis)

    def softmax(self) -> list[TensorInfo]:
        a = self.float_tensor(min_rank=1)
        if a is None:
            return []
        op = self.draw(st.sampled_from(["Softmax", "LogSoftmax"]))
        return self.builder.node(op, [a.name], [_like(a)], axis=self.draw(st.integers(-a.rank, a.rank - 1)))

    def reduce(self) -> list[TensorInfo]:
        a = self.float_tensor(min_rank=1)
        if a is None:
            return []
        op = self.draw(st.sampled_from(["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL2"]))
        axes = sorted(self.draw(st.lists(st.integers(0, a.rank - 1), min_size=1, max_size=a.rank, unique=True)))
        keepdims = int(self.draw(st.booleans()))
        if keepdims:
            out = tuple(1 if i in axes else s for i, s in enumerate(a.shape))
            dynamic = {d: label for d, label in a.dynamic.items() if d not in axes}
        else:
            kept = [i for i in range(a.rank) if i not in axes]
            out = tuple(a.shape[i] for i in kept)
            dynamic = {kept.index(d): label for d, label in a.dynamic.items() if d in kept}
        if self.builder.opset >= 18 or op == "ReduceSum":
            return self.builder.node(op, [a.name, self.ints(axes).name], [(F32, out, dynamic)], keepdims=keepdims)
        return self.builder.node(op, [a.name], [(F32, out, dynamic)], axes=axes, keepdims=keepdims)

    def cast(self) -> list[TensorInfo]:
        a = self.pick(lambda t: t.dtype in (F32, I64))
        if a is None:
            return []
        if a.dtype == I64:
            return self.builder.node("Cast", [a.name], [(F32, a.shape, a.dynamic)], to=onnx.TensorProto.FLOAT)
        targets = [onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT]
        if self.discontinuous:
            targets += [onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.BOOL]
        to = self.draw(st.sampled_from(targets))
        middle = self.builder.node("Cast", [a.name], [(onnx.helper.tensor_dtype_to_np_dtype(to), a.shape, a.dynamic)], to=to)
        if to in (onnx.TensorProto.INT64,) and self.draw(st.booleans()):
            return middle
        return middle + self.builder.node("Cast", [middle[0].name], [(F32, a.shape, a.dynamic)], to=onnx.TensorProto.FLOAT)

    def where(self) -> list[TensorInfo]:
        a = self.float_tensor()
        if a is None:
            return []
        if self.discontinuous and self.draw(st.booleans()):
            threshold = self.builder.constant(self.floats(self.broadcast_shape_for(a)))
            op = self.draw(st.sampled_from(["Greater", "Less", "GreaterOrEqual"]))
            condition = self.builder.node(op, [a.name, threshold.name], [(np.dtype(bool), tuple(np.broadcast_shapes(a.shape, threshold.shape)), a.dynamic)])[0]
        else:
            shape = self.broadcast_shape_for(a)
            condition = self.builder.constant(self.floats(shape) > 0)
        other = self.builder.constant(self.floats(self.broadcast_shape_for(a)))
        operands = [a, other] if self.draw(st.booleans()) else [other, a]
        out = tuple(np.broadcast_shapes(condition.shape, a.shape, other.shape))
        dynamic = _broadcast_dynamic(len(out), a, condition)
        return self.builder.node("Where", [condition.name] + [t.name for t in operands], [(F32, out, dynamic)])

    def constant(self) -> list[TensorInfo]:
        """A subgraph computed from constants only, combined with an existing tensor."""
        a = self.float_tensor()
        if a is None:
            return []
        shape = self.broadcast_shape_for(a)
        kind = self.draw(st.sampled_from(["constant_of_shape", "range", "constant_node", "initializers"]))
        if kind == "constant_of_shape":
            fill = onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [self.draw(st.sampled_from([0.0, 1.0, -2.5]))])
            island = self.builder.node("ConstantOfShape", [self.ints(list(shape)).name], [(F32, shape, NONE)], value=fill)[0]
        elif kind == "range":
            count = int(np.prod(shape, dtype=np.int64))
            scalars = [self.builder.constant(np.array(v, dtype=np.float32)).name for v in (0.0, float(count) * 0.5, 0.5)]
            ramp = self.builder.node("Range", scalars, [(F32, (count,), NONE)])[0]
            island = self.builder.node("Reshape", [ramp.name, self.ints(list(shape)).name], [(F32, shape, NONE)])[0]
        elif kind == "constant_node":
            value = onnx.numpy_helper.from_array(self.floats(shape), "value")
            island = self.builder.node("Constant", [], [(F32, shape, NONE)], value=value)[0]
        else:
            left = self.builder.constant(self.floats(shape))
            right = self.builder.constant(self.floats(shape))
            island = self.builder.node(self.draw(st.sampled_from(["Add", "Mul", "Sub"])), [left.name, right.name], [(F32, shape, NONE)])[0]
        out = tuple(np.broadcast_shapes(a.shape, shape))
        op = self.draw(st.sampled_from(["Add", "Mul"]))
        return [island] + self.builder.node(op, [a.name, island.name], [(F32, out, _broadcast_dynamic(len(out), a))])

    def shape_chain(self) -> list[TensorInfo]:
        """Shape arithmetic as exporters write it (dynamic-safe: it reads dims at run time)."""
        a = self.pick(lambda t: t.rank >= 1 and t.dtype == F32)
        if a is None:
            return []
        kind = self.draw(st.sampled_from(["reshape", "tf2onnx", "constant_of_shape", "size"] if a.rank >= 2 else ["constant_of_shape", "size"]))
        b = self.builder
        if kind == "size":
            size = b.node("Size", [a.name], [(I64, (), NONE)])[0]
            as_float = b.node("Cast", [size.name], [(F32, (), NONE)], to=onnx.TensorProto.FLOAT)[0]
            return [size, as_float] + b.node("Div", [a.name, as_float.name], [_like(a)])
        shape = b.node("Shape", [a.name], [(I64, (a.rank,), NONE)])[0]
        if kind == "constant_of_shape":
            fill = onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [1.5])
            ones = b.node("ConstantOfShape", [shape.name], [(F32, a.shape, a.dynamic)], value=fill)[0]
            return [shape] + b.node("Mul", [a.name, ones.name], [_like(a)])
        axis = self.draw(st.integers(0, a.rank - 1))
        index = b.constant(np.array(axis, dtype=np.int64), "index")
        if kind == "tf2onnx":  # Cast -> Slice -> Cast -> Squeeze, as tf2onnx writes a dim lookup
            narrow = b.node("Cast", [shape.name], [(np.dtype(np.int32), (a.rank,), NONE)], to=onnx.TensorProto.INT32)[0]
            sliced = b.node("Slice", [narrow.name, self.ints([axis]).name, self.ints([axis + 1]).name, self.ints([0]).name], [(np.dtype(np.int32), (1,), NONE)])[0]
            wide = b.node("Cast", [sliced.name], [(I64, (1,), NONE)], to=onnx.TensorProto.INT64)[0]
            picked = b.node("Squeeze", [wide.name, self.ints([0]).name], [(I64, (), NONE)])[0]
        else:
            picked = b.node("Gather", [shape.name, index.name], [(I64, (), NONE)], axis=0)[0]
        unsqueezed = b.node("Unsqueeze", [picked.name, self.ints([0]).name], [(I64, (1,), NONE)])[0]
        target = b.node("Concat", [unsqueezed.name, self.ints([-1]).name], [(I64, (2,), NONE)], axis=0)[0]
        total = int(np.prod(a.shape, dtype=np.int64))
        out = (a.shape[axis], total // a.shape[axis] if a.shape[axis] else 0)
        dynamic = {}
        if axis in a.dynamic:
            dynamic[0] = a.dynamic[axis]
        rest = [label for d, label in a.dynamic.items() if d != axis]
        if rest:
            dynamic[1] = "*".join(rest + [str(a.shape[d]) for d in range(a.rank) if d != axis and d not in a.dynamic])
        return [shape, target] + b.node("Reshape", [a.name, target.name], [(F32, out, dynamic)])


def _broadcasts(a: TensorInfo, b: TensorInfo) -> bool:
    """True if a and b broadcast for every value of their dynamic axes."""
    rank = max(a.rank, b.rank)
    for position in range(rank):
        axis_a, axis_b = position - (rank - a.rank), position - (rank - b.rank)
        in_a, in_b = axis_a >= 0, axis_b >= 0
        if not (in_a and in_b):
            continue
        dyn_a, dyn_b = axis_a in a.dynamic, axis_b in b.dynamic
        size_a, size_b = a.shape[axis_a], b.shape[axis_b]
        if dyn_a or dyn_b:
            if dyn_a and dyn_b:
                if a.dynamic[axis_a] != b.dynamic[axis_b]:
                    return False
                continue
            if (size_b if dyn_a else size_a) != 1:
                return False
        elif size_a != size_b and 1 not in (size_a, size_b):
            return False
    return True


def _factorize(draw: Draw, total: int, max_parts: int) -> list[int]:
    """A random list of 1..max_parts positive ints whose product is ``total``."""
    parts = draw(st.integers(1, max_parts))
    dims = []
    remaining = total
    for _ in range(parts - 1):
        divisors = [d for d in range(1, remaining + 1) if remaining % d == 0]
        d = draw(st.sampled_from(divisors))
        dims.append(d)
        remaining //= d
    dims.append(remaining)
    return dims


def _compose(draw: Draw, total: int, parts: int) -> list[int]:
    """A random list of ``parts`` positive ints summing to ``total``."""
    cuts = sorted(draw(st.lists(st.integers(1, total - 1), min_size=parts - 1, max_size=parts - 1, unique=True)))
    bounds = [0, *cuts, total]
    return [high - low for low, high in itertools.pairwise(bounds)]
