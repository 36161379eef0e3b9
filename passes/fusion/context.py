"""What fusion rules share: shapes, fused-op emission with its opset fallback, and rule metadata.

:class:`FusionRule` is a :class:`~mapc.ir.rewrite.PatternRule` that may be off by default;
:class:`FusionContext` gives checks symbolic shapes (after ``infer_shapes``) and gives rewrites
:meth:`FusionContext.fused`, which emits the standard op when the model's opset has it and
otherwise a ``mapc`` function call whose body is the decomposition. The stages and the order of
their rules are the lists in :mod:`.stages`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Model, NearMiss, PatternRule, RewriteContext
from mapc.passes.check_static import shapes_fix
from mapc.passes.fusion.functions import AXES_AS_INPUT_SINCE, Decomposition, FunctionLibrary

Dim = int | str | None

#: The oldest opset fused ops are written in (as mapc functions): Slice bounds as inputs (10) and
#: negative axes for Unsqueeze and the reductions (11).
MIN_OPSET = 11

#: The opset in which each fused op became a standard ONNX op.
STANDARD_SINCE: dict[str, int] = {
    "LayerNormalization": 17,
    "Gelu": 20,
    "RMSNormalization": 23,
    "Attention": 23,
    "RotaryEmbedding": 23,
}

class FusionRule(PatternRule):
    """A pattern rule of the ``fuse`` pass; ``default_enabled`` False makes it opt-in."""

    default_enabled: ClassVar[bool] = True


@dataclass
class FusionSettings:
    """Options of the ``fuse`` pass that rules read."""

    functions: bool = True


class FusionContext(RewriteContext):
    """Rewrite context of the ``fuse`` pass."""

    def __init__(self, model: Model, settings: FusionSettings | None = None) -> None:
        super().__init__(model)
        self.settings = settings or FusionSettings()
        self.library = FunctionLibrary(model)
        self.memo: dict[Any, Any] = {}
        #: Mul(x, 1/c) nodes written for Div(x, c), with x, c and c's value: restored where no fusion used them.
        self.divisions: list[tuple[gs.Node, gs.Tensor, gs.Tensor, np.ndarray]] = []

    # -- opsets and fused ops ---------------------------------------------------------------------
    @property
    def opset(self) -> int:
        return self.model.opset

    def require_op(self, op_type: str) -> None:
        """Raise :class:`NearMiss` unless ``op_type`` can be emitted (standard or as a function)."""
        since = STANDARD_SINCE[op_type]
        if self.opset >= since:
            return
        if self.opset < MIN_OPSET:
            raise NearMiss("opset", f"the model's opset {self.opset} is older than {MIN_OPSET}", f"upgrade it: --target-opset {since}")
        if not self.settings.functions:
            raise NearMiss(
                "opset",
                f"{op_type} needs opset {since} (the model has {self.opset}) and mapc functions are disabled",
                f"--target-opset {since}, or allow functions",
            )

    def fused(
        self,
        op_type: str,
        inputs: Sequence[gs.Tensor],
        formal_inputs: Sequence[str],
        attrs: dict[str, Any],
        decomposition: Decomposition,
        *,
        dtype: Any = None,
        shape: Sequence[Dim] | None = None,
    ) -> gs.Tensor:
        """Emit ``op_type`` on ``inputs``: the standard op when the opset has it, else a call of
        ``mapc.<op_type>`` whose function body ``decomposition`` writes (see functions.py)."""
        output = gs.Variable(self.model.fresh_name(f"{op_type.lower()}_out"), dtype=dtype, shape=list(shape) if shape is not None else None)
        name = self.model.fresh_name(op_type)
        if self.opset >= STANDARD_SINCE[op_type]:
            self.model.graph.nodes.append(gs.Node(op_type, name=name, attrs=dict(attrs), inputs=list(inputs), outputs=[output]))
        else:
            self.library.call(op_type, inputs, formal_inputs, attrs, decomposition, output, name)
        return output

    def shapes_fix(self, fix: str) -> str | None:
        """``fix`` for a near-miss on unknown shapes, unless the input shapes are static already
        (then where shape inference stops: :func:`~mapc.passes.check_static.shapes_fix`)."""
        return shapes_fix(self.model.graph, fix)

    def with_axes(self, op_type: str, tensor: gs.Tensor, axes: Sequence[int], *, attrs: dict[str, Any] | None = None, **kwargs: Any) -> gs.Tensor:
        """``op_type`` (Unsqueeze, Squeeze, ReduceSum, ReduceMean) over ``axes`` in the model's
        opset's form: axes as an int64 input from the opset that made them one, before that
        as an attribute (a model at opset 11 keeps its own forms)."""
        if self.opset >= AXES_AS_INPUT_SINCE[op_type]:
            axes_input = self.const(np.asarray(list(axes), dtype=np.int64), "axes")
            return self.node(op_type, [tensor, axes_input], attrs=attrs, **kwargs)  # type: ignore[return-value]
        return self.node(op_type, [tensor], attrs={**(attrs or {}), "axes": list(axes)}, **kwargs)  # type: ignore[return-value]

    def shared(self, key: Any, make: Callable[[], gs.Tensor]) -> gs.Tensor:
        """A tensor built once per ``key`` (e.g. a cos/sin cache every layer reads)."""
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    # -- shapes -------------------------------------------------------------------------------------
    @staticmethod
    def shape(tensor: gs.Tensor) -> list[Dim] | None:
        if isinstance(tensor, gs.Constant):
            return list(tensor.shape)
        return None if tensor.shape is None else list(tensor.shape)

    def rank(self, tensor: gs.Tensor) -> int | None:
        shape = self.shape(tensor)
        return None if shape is None else len(shape)

    @staticmethod
    def dtype(tensor: gs.Tensor) -> np.dtype | None:
        return None if tensor.dtype is None else np.dtype(tensor.dtype)

    @staticmethod
    def static(dim: Dim) -> int | None:
        return int(dim) if isinstance(dim, (int, np.integer)) and dim >= 0 else None


def same_dim(a: Dim, b: Dim) -> bool:
    """True if two dims are provably equal: equal integers, or the same symbolic name."""
    if a is None or b is None:
        return False
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return int(a) == int(b) and int(a) >= 0


def same_dims(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    return len(a) == len(b) and all(same_dim(x, y) for x, y in zip(a, b))


def show_dims(shape: Sequence[Dim] | None) -> str:
    if shape is None:
        return "unknown"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
