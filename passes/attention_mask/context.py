"""What the mask rules share: the fill, the attentions found, what happened to each, and the
building blocks that make masks additive, finite and clamped.

The rules (:mod:`.rules`) are tried on each attention's Softmax or Attention node; they find
the attention's :class:`~.detection.AttentionSite` in :attr:`MaskContext.sites` and record what
they did in its :class:`SiteOutcome`. New nodes are appended to the graph; the pass removes
what became dead and re-sorts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import SHAPE_READERS, Model, NearMiss, RewriteContext, constant_nbytes, producer, small_constant, walk
from mapc.passes.attention_mask.detection import AttentionSite
from mapc.passes.attention_mask.exactness import LogitRange, check_exact
from mapc.passes.attention_mask.families import MaskFamily
from mapc.passes.attention_mask.fills import FLOAT_KINDS, MAX_INSPECT_BYTES, is_float_dtype, single_fill, uniform_value
from mapc.passes.attention_mask.hoist import HoistedMask
from mapc.passes.attention_mask.paths import MaskPaths
from mapc.passes.check_static import inputs_static

#: Ops between a float mask graph input and the attention that keep it an input's values.
_INPUT_MOVES = frozenset({"Reshape", "Unsqueeze", "Squeeze", "Cast", "Expand", "Identity", "Slice", "Transpose"})


@dataclass
class SiteOutcome:
    """What happened to one attention's mask."""

    rewrites: list[str] = field(default_factory=list)
    sink: tuple[gs.Node, int] | None = None  # the node and input slot that now reads the final mask

    def add(self, name: str) -> None:
        if name not in self.rewrites:
            self.rewrites.append(name)

    def mask(self) -> gs.Tensor | None:
        """The final mask, read at the sink."""
        return None if self.sink is None else self.sink[0].inputs[self.sink[1]]


class MaskContext(RewriteContext):
    """The rewrite context of ``attention-mask``: one per pass run."""

    def __init__(self, model: Model, neg: float, max_constant_bytes: int, *, mask_as_input: bool,
                 sites: list[AttentionSite], families: dict[int, MaskFamily], ranges: dict[int, LogitRange | None] | None = None,
                 margin: float | None = None, precision: str = "fp16") -> None:
        super().__init__(model)
        self.neg = neg
        #: The logits' range of each attention (by id of its site), the margin a masked logit needs
        #: below the row maximum, and the precision: what a fill-changing rewrite checks (.exactness).
        self.ranges = ranges if ranges is not None else {}
        self.margin = margin
        self.precision = precision
        #: The attention the rule being tried works on; the attentions a rewrite was refused for.
        self.current: AttentionSite | None = None
        self.refused: set[int] = set()
        self.max_constant_bytes = max_constant_bytes
        #: mask-as-input is on; bool masks of Attention ops become additive too (needed before hoisting).
        self.mask_as_input = mask_as_input
        #: The attentions, by id of their Softmax/Attention node, in graph order.
        self.sites = {id(site.node): site for site in sites}
        self.families = families
        self.outcomes = {id(site): SiteOutcome() for site in sites}
        #: What the rewrites did, for the pass's counters (fills_replaced is always reported).
        self.counters: Counter[str] = Counter(fills_replaced=0)
        self.memo: dict[Any, Any] = {}
        self._trivial: set[tuple] = set()
        self._needs: dict[tuple, float] = {}  # memoised additive masks that change values: the fill they write
        # finite-fill: the tensors and nodes already looked at for fills, and the finite copies made
        self.fill_tensors_seen: set[int] = set()
        self.fill_nodes_seen: set[int] = set()
        self.created_fills: set[int] = set()
        self._paths: MaskPaths | None = None
        # mask-as-input: the new inputs, in the order made, and each by the mask it replaces
        self.hoisted: list[HoistedMask] = []
        self.hoisted_by_mask: dict[int, HoistedMask] = {}

    def site(self, node: gs.Node) -> tuple[AttentionSite, SiteOutcome] | None:
        site = self.sites.get(id(node))
        if site is None:
            return None
        self.current = site
        return site, self.outcomes[id(site)]

    def mask_paths(self) -> MaskPaths:
        """The paths into the final mask of every attention whose logits let finite-fill write
        NEG (:meth:`exact`), as they are when finite-fill first asks."""
        if self._paths is None:
            sinks = [self.outcomes[id(site)].sink for site in self.sites.values() if self.exact(site)]
            self._paths = MaskPaths(self.graph, [sink for sink in sinks if sink is not None])
        return self._paths

    # -- the precondition of fill-changing rewrites (.exactness) ----------------------------------

    def require_exact(self, fill: float, replaces: float | None = None) -> None:
        """Raise NearMiss unless writing ``max(fill, NEG)`` at the current attention's masked
        positions (where the original held ``replaces``, or a fill below it) keeps its softmax."""
        if self.current is not None and self.margin is not None:
            try:
                check_exact(self.current, self.ranges.get(id(self.current)), max(float(fill), self.neg), replaces,
                            margin=self.margin, precision=self.precision, shapes_static=inputs_static(self.model.graph))
            except NearMiss:
                self.refused.add(id(self.current))
                raise

    def exact(self, site: AttentionSite) -> bool:
        """True if writing NEG at ``site``'s masked positions keeps its softmax."""
        if self.margin is None:
            return True
        known = self.ranges.get(id(site))
        return known is not None and known.span + self.neg <= -self.margin

    # -- canonical masks (additive-mask) -----------------------------------------------------------

    def additive(self, tensor: gs.Tensor, outcome: SiteOutcome, clamp_inputs: bool = True) -> gs.Tensor | None:
        """An additive float mask, with ``Where(c, 0, fill)`` selects made arithmetic and a
        float graph input clamped (``clamp_inputs``); None when it is uniform, so adding it
        changes no softmax."""
        key = ("additive", id(tensor), clamp_inputs)
        if key in self.memo:
            if key in self._trivial:
                outcome.add("trivial-mask-removed")
            elif key in self._needs:
                self.require_exact(self._needs[key])
            return self.memo[key]
        uniform = uniform_value(tensor)
        result: gs.Tensor | None = tensor
        if uniform is not None and np.isfinite(uniform):
            result = None
            self._trivial.add(key)
            self.counters["trivial_masks_removed"] += 1
            outcome.add("trivial-mask-removed")
        elif clamp_inputs and self._unclamped_input(tensor):
            self.require_exact(self.neg)
            self._needs[key] = self.neg
            result = self.clamp(tensor)
            self.counters["input_masks_clamped"] += 1
            outcome.add("input-clamped")
        else:
            select = _constant_select(tensor)
            if select is not None:
                condition, keep, fill = select
                result = self.boolean(condition, keep, np.dtype(tensor.dtype or np.float32), fill, outcome)
                if fill < self.neg:
                    self._needs[key] = fill
                self.counters["selects_made_arithmetic"] += 1
                outcome.add("where-to-arithmetic")
        self.memo[key] = result
        return result

    def _unclamped_input(self, tensor: gs.Tensor) -> bool:
        """A float graph input (possibly reshaped or cast) that nothing clamps to >= NEG: a host
        may fill it with finfo.min or -inf, so it gets ``Max(., NEG)`` (what QAI Hub does)."""
        walked = walk(tensor, _INPUT_MOVES)
        return walked.stop is None and any(t is walked.tensor for t in self.graph.inputs) and is_float_dtype(walked.tensor.dtype)

    def boolean(self, condition: gs.Tensor, keep: bool, dtype: np.dtype, fill: float, outcome: SiteOutcome,
                replaces: float | None = None) -> gs.Tensor | None:
        """The additive mask of a boolean one: 0 where ``condition == keep``, else the fill
        (never more negative than NEG); None if no position is masked. ``replaces``: the
        fill a select on the scores held at masked positions (the new mask adds to the scores
        instead). Raises NearMiss when the change is not exact for the current attention."""
        uniform = uniform_value(condition)
        if (uniform is None or bool(uniform) != keep) and (replaces is not None or float(fill) < self.neg):
            self.require_exact(fill, replaces)
        fill = max(float(fill), self.neg)
        key = ("bool", id(condition), keep, np.dtype(dtype).str, fill)
        if key in self.memo:
            if key in self._trivial:
                outcome.add("trivial-mask-removed")
            return self.memo[key]
        result = self._boolean(condition, keep, np.dtype(dtype), fill, outcome)
        if result is None:
            self._trivial.add(key)
        self.memo[key] = result
        return result

    def _boolean(self, condition: gs.Tensor, keep: bool, dtype: np.dtype, fill: float, outcome: SiteOutcome) -> gs.Tensor | None:
        uniform = uniform_value(condition)
        if uniform is not None and bool(uniform) == keep:
            self.counters["trivial_masks_removed"] += 1
            outcome.add("trivial-mask-removed")
            return None
        folded = self._fold_constant(condition, keep, dtype, fill)
        if folded is not None:
            return folded
        source = producer(condition)
        combiner = "And" if keep else "Or"
        if source is not None and source.op == combiner and len(source.inputs) == 2:
            left, right = source.inputs
            for trivial, other in ((left, right), (right, left)):
                value = uniform_value(trivial)
                if value is not None and bool(value) == keep and _is_scalar_like(trivial):
                    return self.boolean(other, keep, dtype, fill, outcome)
            for constant, other in ((left, right), (right, left)):
                if small_constant(constant, MAX_INSPECT_BYTES) is not None and small_constant(other, MAX_INSPECT_BYTES) is None:
                    folded = self._fold_constant(constant, keep, dtype, fill)
                    if folded is not None:
                        self.counters["causal_parts_split"] += 1
                        outcome.add("constant-part-split")
                        rest = self.boolean(other, keep, dtype, fill, outcome)  # the same fill: already checked
                        return self.sum_clamped([p for p in (folded, rest) if p is not None], dtype, outcome)
        as_float = self.mask_node("Cast", [condition], dtype, to=onnx.helper.np_dtype_to_tensor_dtype(dtype))
        if keep:
            as_float = self.mask_node("Sub", [self.value(1.0, dtype), as_float], dtype)
        self.counters["boolean_masks_made_additive"] += 1
        return self.mask_node("Mul", [as_float, self.value(fill, dtype)], dtype)

    def _fold_constant(self, condition: gs.Tensor, keep: bool, dtype: np.dtype, fill: float) -> gs.Tensor | None:
        """A constant boolean mask as a constant additive one, unless larger than allowed (max_constant_mb)."""
        values = small_constant(condition, MAX_INSPECT_BYTES)
        if values is None or values.dtype != np.bool_:
            return None
        if values.size * dtype.itemsize > self.max_constant_bytes:
            self.counters["constants_too_large_kept_computed"] += 1
            return None
        additive = np.where(values == keep, 0, fill).astype(dtype)
        self.counters["constant_masks_folded"] += 1
        return gs.Constant(self.model.fresh_name("attention_mask_constant"), additive)

    def sum_clamped(self, parts: list[gs.Tensor], dtype: np.dtype, outcome: SiteOutcome) -> gs.Tensor | None:
        """The sum of additive masks, clamped with ``Max(·, NEG)`` so NEG + NEG cannot overflow."""
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        self.require_exact(self.neg)
        total = parts[0]
        for part in parts[1:]:
            total = self.mask_node("Add", [total, part], dtype)
        self.counters["mask_sums_clamped"] += 1
        outcome.add("sum-clamped")
        return self.mask_node("Max", [total, self.value(self.neg, dtype)], dtype)

    def clamp(self, tensor: gs.Tensor) -> gs.Tensor:
        """``Max(tensor, NEG)``."""
        dtype = np.dtype(tensor.dtype or np.float32)
        return self.mask_node("Max", [tensor, self.value(self.neg, dtype)], dtype)

    # -- finiteness (nan-guard) -------------------------------------------------------------------

    def is_finite(self, mask: gs.Tensor | None) -> bool:
        """True if ``mask`` holds no value below NEG nor a non-finite one: its constants are
        finite and not below NEG, and every graph input it reads is clamped by a ``Max(., c)``
        with ``c >= NEG`` on the way."""
        if mask is None:
            return True
        inputs = {id(t) for t in self.graph.inputs}
        stack, seen = [mask], set()
        while stack:
            tensor = stack.pop()
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if id(tensor) in inputs and is_float_dtype(tensor.dtype):
                return False
            if not self._finite_constant(tensor):
                return False
            node = producer(tensor)
            if node is None or node.op in SHAPE_READERS:
                continue
            if node.op == "Max" and any(_at_least(t, self.neg) for t in node.inputs):
                continue
            if node.op == "ConstantOfShape" and isinstance(node.attrs.get("value"), gs.Constant):
                if not self._finite_constant(node.attrs["value"]):
                    return False
            stack.extend(t for t in node.inputs if not t.is_empty())
        return True

    def _finite_constant(self, tensor: gs.Tensor) -> bool:
        if isinstance(tensor, gs.Constant) and constant_nbytes(tensor) > MAX_INSPECT_BYTES:
            return False
        values = small_constant(tensor, MAX_INSPECT_BYTES)
        if values is None or np.dtype(values.dtype).type not in FLOAT_KINDS:
            return True
        if not np.all(np.isfinite(values)):
            return False
        fill = single_fill(values)
        return fill is None or not fill < self.neg

    # -- building ---------------------------------------------------------------------------------

    def mask_node(self, op: str, inputs: list[gs.Tensor], dtype: np.dtype, **attrs: object) -> gs.Variable:
        """Append ``op(inputs)`` with an output of ``dtype``, named as a mask node."""
        out = gs.Variable(self.model.fresh_name(f"attention_mask_{op.lower()}"), dtype=np.dtype(dtype))
        self.graph.nodes.append(gs.Node(op, name=self.model.fresh_name(f"attention_mask/{op}"), attrs=attrs, inputs=inputs, outputs=[out]))
        return out

    def value(self, value: float, dtype: np.dtype) -> gs.Constant:
        """The scalar constant ``value`` of ``dtype`` (one per value and type)."""
        key = ("constant", float(value), np.dtype(dtype).str)
        if key not in self.memo:
            self.memo[key] = gs.Constant(self.model.fresh_name("attention_mask_value"), np.array(value, dtype=dtype))
        return self.memo[key]


def _at_least(tensor: gs.Tensor, floor: float) -> bool:
    value = uniform_value(tensor)
    return value is not None and is_float_dtype(value.dtype) and float(value) >= floor


def _constant_select(tensor: gs.Tensor) -> tuple[gs.Tensor, bool, float] | None:
    """``Where(c, 0, fill)`` -> (c, True, fill); ``Where(c, fill, 0)`` -> (c, False, fill)."""
    node = producer(tensor)
    if node is None or node.op != "Where":
        return None
    condition, left, right = node.inputs
    if not (_is_scalar_like(left) and _is_scalar_like(right)):
        return None
    a, b = uniform_value(left), uniform_value(right)
    if a is None or b is None or not is_float_dtype(a.dtype):
        return None
    if float(a) == 0 and float(b) < 0:
        return condition, True, float(b)
    if float(b) == 0 and float(a) < 0:
        return condition, False, float(a)
    return None


def _is_scalar_like(tensor: gs.Tensor) -> bool:
    """A constant with one element (so dropping or replacing it cannot change a broadcast shape
    beyond its rank)."""
    values = small_constant(tensor, MAX_INSPECT_BYTES)
    return values is not None and values.size == 1 and values.ndim <= 1
