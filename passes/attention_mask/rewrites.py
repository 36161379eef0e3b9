"""The mask rewrites R1-R5: one finite additive mask per attention.

:class:`MaskRewriter` turns the masks found by :mod:`.detection` into the canonical form

    Softmax(Add(scores, M))        or        Attention(Q, K, V, M, ...)

where ``M`` is one float mask holding 0 (attend) or a finite ``NEG`` (masked):

* R2: a boolean mask (``Where(c, scores, fill)``, ``Where(c, 0, fill)``, a bool ``attn_mask``)
  becomes ``Mul(Sub(1, Cast(c)), NEG)`` (or ``Mul(Cast(c), NEG)`` when ``c`` marks the masked
  positions); two masks summed are clamped with ``Max(·, NEG)``.
* R4: a mask that is uniform (all-True, all-zero, any constant shift) is dropped.
* R5: ``And(constant causal, padding)`` splits into a constant additive causal part (when it is
  small enough to store) plus the computed padding part.
* R1: every fill constant (initializer, ``Constant``, ``ConstantOfShape``) more negative than
  ``NEG`` whose readers all lie on a mask path is replaced by ``NEG``.
* R3: the NaN guard after the softmax is removed once the mask is finite.

New nodes are appended to the graph; the caller removes what became dead and re-sorts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from mapc.ir import (
    MAPC_DOMAIN,
    Model,
    constant_nbytes,
    is_graph_output,
    producer,
    replace_all_uses,
)
from mapc.passes.attention_mask.detection import AttentionSite, cone
from mapc.passes.attention_mask.fills import (
    FLOAT_KINDS,
    MAX_INSPECT_BYTES,
    is_float_dtype,
    single_fill,
    small_constant,
    uniform_value,
)

#: (op, input slot) pairs through which a fill value flows unchanged into an op's output.
_VALUE_SLOTS: dict[str, tuple[int, ...] | None] = {
    "Add": None, "Sub": None, "Mul": None, "Max": None, "Min": None, "Sum": None, "Concat": None,
    "Expand": (0,), "Reshape": (0,), "Unsqueeze": (0,), "Squeeze": (0,), "Flatten": (0,), "Transpose": (0,),
    "Slice": (0,), "Gather": (0,), "GatherND": (0,), "GatherElements": (0,), "Tile": (0,), "Trilu": (0,),
    "Cast": (0,), "CastLike": (0,), "Identity": (0,), "Split": (0,), "Where": (1, 2), "ScatterND": (0, 2),
    "ScatterElements": (0, 2), "Pad": (0, 2),
}
_SHAPE_READERS = frozenset({"Shape", "Size"})
#: Ops between a float mask graph input and the attention that keep it an input's values.
_INPUT_MOVES = frozenset({"Reshape", "Unsqueeze", "Squeeze", "Cast", "Expand", "Identity", "Slice", "Transpose"})

Edge = tuple[int, int]  # (id(node), input slot)


@dataclass
class SiteOutcome:
    """What happened to one attention's mask."""

    rewrites: list[str] = field(default_factory=list)
    sink: tuple[gs.Node, int] | None = None  # the node and input slot that now reads the final mask

    def add(self, name: str) -> None:
        if name not in self.rewrites:
            self.rewrites.append(name)


class MaskRewriter:
    """Rewrites the masks of a model's attentions; one instance per pass run."""

    def __init__(self, model: Model, neg: float, max_constant_bytes: int, additive_attention_masks: bool = False) -> None:
        self.model = model
        #: Make bool masks of Attention ops additive too (needed before hoisting them as a float input).
        self.additive_attention_masks = additive_attention_masks
        self.graph = model.graph
        self.neg = neg
        self.max_constant_bytes = max_constant_bytes
        self.counters: Counter[str] = Counter()
        self._memo: dict[tuple, gs.Tensor | None] = {}
        self._trivial: set[tuple] = set()
        #: ids of the tensors R1 created (to say which attentions got a finite fill).
        self.created_fills: set[int] = set()

    # -- canonical form (R2, R4, R5) ------------------------------------------------------------

    def canonicalize(self, site: AttentionSite, outcome: SiteOutcome) -> None:
        if site.kind == "softmax":
            self._canonicalize_softmax(site, outcome)
        else:
            self._canonicalize_attention_op(site, outcome)

    def _canonicalize_softmax(self, site: AttentionSite, outcome: SiteOutcome) -> None:
        assert site.scores is not None
        dtype = _float_dtype(site.scores, *[c.fill for c in site.contributions if c.fill is not None], *[c.mask for c in site.contributions])
        parts: list[gs.Tensor] = []
        for contribution in site.contributions:
            if contribution.kind == "additive":
                part = self.additive(contribution.mask, outcome)
            else:
                fill = float(uniform_value(contribution.fill))  # type: ignore[arg-type]
                part = self.boolean(contribution.mask, contribution.kind == "keep-where", dtype, fill, outcome)
                if part is not None:
                    outcome.add("R2:bool-to-additive")
            if part is not None:
                parts.append(part)
        mask = self.sum_clamped(parts, dtype, outcome)
        only = site.contributions[0] if len(site.contributions) == 1 else None
        if only is not None and only.kind == "additive" and mask is only.mask:
            outcome.sink = (only.node, 1 - (only.spine_slot or 0))
            return
        if not site.contributions:
            return
        if mask is None:
            site.node.inputs[0] = site.scores
            return
        masked = self._node("Add", [site.scores, mask], dtype)
        site.node.inputs[0] = masked
        outcome.sink = (producer(masked), 1)  # type: ignore[assignment]

    def _canonicalize_attention_op(self, site: AttentionSite, outcome: SiteOutcome) -> None:
        """A native Attention op defines its own masking (a bool mask is applied without any
        fill, a fully masked row gives zeros): only trivial masks (R4) and constant fills (R1,
        through the sink) change here; decompose-attention makes the mask additive for targets
        without the op."""
        if not site.contributions:
            return
        node = site.node
        contribution = site.contributions[0]
        if contribution.is_boolean and not self.additive_attention_masks:
            uniform = uniform_value(contribution.mask)
            if uniform is not None and bool(uniform):
                self.counters["trivial_masks_removed"] += 1
                outcome.add("R4:trivial-mask-removed")
                _drop_input(node, 3)
                return
            outcome.sink = (node, 3)
            return
        if contribution.is_boolean:
            mask = self.boolean(contribution.mask, True, _float_dtype(node.inputs[0]), self.neg, outcome)
            if mask is not None:
                outcome.add("R2:bool-to-additive")
        else:
            mask = self.additive(contribution.mask, outcome, clamp_inputs=False)
        if mask is None:
            self._remove_mask(node, contribution.mask)
            return
        if mask is not contribution.mask:
            node.inputs[3] = mask
        outcome.sink = (node, 3)

    def additive(self, tensor: gs.Tensor, outcome: SiteOutcome, clamp_inputs: bool = True) -> gs.Tensor | None:
        """An additive float mask, with ``Where(c, 0, fill)`` selects made arithmetic (R2) and a
        float graph input clamped (``clamp_inputs``); None when it is uniform, so adding it
        changes no softmax (R4)."""
        key = ("additive", id(tensor), clamp_inputs)
        if key in self._memo:
            if key in self._trivial:
                outcome.add("R4:trivial-mask-removed")
            return self._memo[key]
        uniform = uniform_value(tensor)
        result: gs.Tensor | None = tensor
        if uniform is not None and np.isfinite(uniform):
            result = None
            self._trivial.add(key)
            self.counters["trivial_masks_removed"] += 1
            outcome.add("R4:trivial-mask-removed")
        elif clamp_inputs and self._unclamped_input(tensor):
            result = self._node("Max", [tensor, self._constant(self.neg, np.dtype(tensor.dtype or np.float32))], np.dtype(tensor.dtype or np.float32))
            self.counters["input_masks_clamped"] += 1
            outcome.add("R1:input-clamped")
        else:
            select = _constant_select(tensor)
            if select is not None:
                condition, keep, fill = select
                result = self.boolean(condition, keep, np.dtype(tensor.dtype or np.float32), fill, outcome)
                self.counters["selects_made_arithmetic"] += 1
                outcome.add("R2:where-to-arithmetic")
        self._memo[key] = result
        return result

    def _unclamped_input(self, tensor: gs.Tensor) -> bool:
        """A float graph input (possibly reshaped or cast) that nothing clamps to >= NEG: a host
        may fill it with finfo.min or -inf, so it gets ``Max(., NEG)`` (what QAI Hub does)."""
        inputs = {id(t) for t in self.graph.inputs}
        current = tensor
        while id(current) not in inputs:
            node = producer(current)
            if node is None or node.op not in _INPUT_MOVES:
                return False
            current = node.inputs[0]
        return is_float_dtype(current.dtype)

    def clamp(self, tensor: gs.Tensor) -> gs.Tensor:
        """``Max(tensor, NEG)``."""
        dtype = np.dtype(tensor.dtype or np.float32)
        return self._node("Max", [tensor, self._constant(self.neg, dtype)], dtype)

    def boolean(self, condition: gs.Tensor, keep: bool, dtype: np.dtype, fill: float, outcome: SiteOutcome) -> gs.Tensor | None:
        """The additive mask of a boolean one: 0 where ``condition == keep``, else the fill
        (never more negative than NEG); None if no position is masked (R4)."""
        fill = max(float(fill), self.neg)
        key = ("bool", id(condition), keep, np.dtype(dtype).str, fill)
        if key in self._memo:
            if key in self._trivial:
                outcome.add("R4:trivial-mask-removed")
            return self._memo[key]
        result = self._boolean(condition, keep, np.dtype(dtype), fill, outcome)
        if result is None:
            self._trivial.add(key)
        self._memo[key] = result
        return result

    def _boolean(self, condition: gs.Tensor, keep: bool, dtype: np.dtype, fill: float, outcome: SiteOutcome) -> gs.Tensor | None:
        uniform = uniform_value(condition)
        if uniform is not None and bool(uniform) == keep:
            self.counters["trivial_masks_removed"] += 1
            outcome.add("R4:trivial-mask-removed")
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
                if small_constant(constant) is not None and small_constant(other) is None:
                    folded = self._fold_constant(constant, keep, dtype, fill)
                    if folded is not None:
                        self.counters["causal_parts_split"] += 1
                        outcome.add("R5:constant-part-split")
                        rest = self.boolean(other, keep, dtype, fill, outcome)
                        return self.sum_clamped([p for p in (folded, rest) if p is not None], dtype, outcome)
        as_float = self._node("Cast", [condition], dtype, to=onnx.helper.np_dtype_to_tensor_dtype(dtype))
        if keep:
            as_float = self._node("Sub", [self._constant(1.0, dtype), as_float], dtype)
        self.counters["boolean_masks_made_additive"] += 1
        return self._node("Mul", [as_float, self._constant(fill, dtype)], dtype)

    def _fold_constant(self, condition: gs.Tensor, keep: bool, dtype: np.dtype, fill: float) -> gs.Tensor | None:
        values = small_constant(condition)
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
        total = parts[0]
        for part in parts[1:]:
            total = self._node("Add", [total, part], dtype)
        self.counters["mask_sums_clamped"] += 1
        outcome.add("R2:sum-clamped")
        return self._node("Max", [total, self._constant(self.neg, dtype)], dtype)

    # -- R1: finite fills -----------------------------------------------------------------------

    def replace_fills(self, sinks: list[tuple[gs.Node, int]]) -> tuple[int, list[tuple[gs.Tensor, str]]]:
        """Replace fills more negative than NEG on the mask paths ending at ``sinks``.

        A fill that also has readers off the mask paths keeps its value for them; the mask
        readers get a finite copy. Returns how many constants were replaced and, for fills no
        mask path could take (every path to the mask also leaves it), the fill's tensor and the
        node that reads it off the mask paths.
        """
        sink_edges = {(id(node), slot) for node, slot in sinks}
        masks = [node.inputs[slot] for node, slot in sinks]
        region = {id(node) for node in cone(masks)}
        checker = _MaskPathChecker(self.graph, sink_edges, region)
        replaced, blocked = 0, []
        seen: set[int] = set()
        nodes = cone(masks)
        for node_inputs, node in [(masks, None), *[(n.inputs, n) for n in nodes]]:  # a mask may itself be a constant
            for tensor in node_inputs:
                if id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                values = small_constant(tensor)
                fill = single_fill(values) if values is not None else None
                if fill is None or not fill < self.neg:
                    continue
                replaced_here, outsider = self._replace(tensor, values, fill, checker, lambda v: gs.Constant(self.model.fresh_name("attention_mask_fill"), v))  # type: ignore[arg-type]
                replaced += replaced_here
                if outsider is not None and not replaced_here:
                    blocked.append((tensor, outsider))
            if node is not None and node.op == "ConstantOfShape" and isinstance(node.attrs.get("value"), gs.Constant):
                values = np.asarray(node.attrs["value"].values)
                fill = single_fill(values)
                if fill is not None and fill < self.neg:
                    replaced_here, outsider = self._replace(node.outputs[0], values, fill, checker, lambda v, n=node: self._clone_constant_of_shape(n, v))
                    replaced += replaced_here
                    if outsider is not None and not replaced_here:
                        blocked.append((node.outputs[0], outsider))
        self.counters["fills_replaced"] += replaced
        return replaced, blocked

    def _replace(self, tensor, values, fill, checker, make) -> tuple[int, str | None]:
        edges = [(reader, slot) for reader in list(tensor.outputs) for slot, t in enumerate(reader.inputs) if t is tensor]
        good = [(reader, slot) for reader, slot in edges if checker.edge_ok(reader, slot)]
        outsider = next((reader.name or reader.op for reader, slot in edges if (reader, slot) not in good), None)
        if is_graph_output(self.graph, tensor):
            outsider = outsider or "a graph output"
        if not good:
            return 0, outsider
        finite = np.where(values == fill, self.neg, values).astype(values.dtype)
        replacement = make(finite)
        self.created_fills.add(id(replacement))
        for reader, slot in good:
            reader.inputs[slot] = replacement
        return 1, outsider

    def _clone_constant_of_shape(self, node: gs.Node, values: np.ndarray) -> gs.Tensor:
        out = gs.Variable(self.model.fresh_name("attention_mask_fill"), dtype=node.outputs[0].dtype, shape=node.outputs[0].shape)
        attrs = dict(node.attrs)
        attrs["value"] = gs.Constant(self.model.fresh_name("attention_mask_fill_value"), values)
        self.graph.nodes.append(gs.Node("ConstantOfShape", name=self.model.fresh_name("attention_mask/ConstantOfShape"), attrs=attrs, inputs=list(node.inputs), outputs=[out]))
        return out

    # -- R3 -------------------------------------------------------------------------------------

    def is_finite(self, sink: tuple[gs.Node, int] | None) -> bool:
        """True if the mask read at ``sink`` holds no value below NEG nor a non-finite one: its
        constants are finite and not below NEG, and every graph input it reads is clamped by a
        ``Max(., c)`` with ``c >= NEG`` on the way."""
        if sink is None:
            return True
        inputs = {id(t) for t in self.graph.inputs}
        stack, seen = [sink[0].inputs[sink[1]]], set()
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
            if node is None or node.op in _SHAPE_READERS:
                continue
            if node.op == "Max" and any(_at_least(t, self.neg) for t in node.inputs):
                continue
            if node is not None and node.op == "ConstantOfShape" and isinstance(node.attrs.get("value"), gs.Constant):
                if not self._finite_constant(node.attrs["value"]):
                    return False
            stack.extend(t for t in node.inputs if not t.is_empty())
        return True

    def _finite_constant(self, tensor: gs.Tensor) -> bool:
        if isinstance(tensor, gs.Constant) and constant_nbytes(tensor) > MAX_INSPECT_BYTES:
            return False
        values = small_constant(tensor)
        if values is None or np.dtype(values.dtype).type not in FLOAT_KINDS:
            return True
        if not np.all(np.isfinite(values)):
            return False
        fill = single_fill(values)
        return fill is None or not fill < self.neg

    def drop_guard(self, site: AttentionSite) -> None:
        assert site.guard is not None
        replace_all_uses(self.model, site.guard.outputs[0], site.node.outputs[0])
        self.counters["nan_guards_removed"] += 1

    # -- building blocks ------------------------------------------------------------------------

    def _remove_mask(self, node: gs.Node, mask: gs.Tensor) -> None:
        """Drop a trivial ``attn_mask``. A mapc fused-op function's body reads its mask input, so
        there the mask becomes a scalar zero (the mask subgraph still goes away)."""
        if node.domain == MAPC_DOMAIN:
            node.inputs[3] = self._constant(0.0, np.dtype(mask.dtype or np.float32))
        else:
            _drop_input(node, 3)

    def _node(self, op: str, inputs: list[gs.Tensor], dtype: np.dtype, **attrs: object) -> gs.Variable:
        out = gs.Variable(self.model.fresh_name(f"attention_mask_{op.lower()}"), dtype=np.dtype(dtype))
        self.graph.nodes.append(gs.Node(op, name=self.model.fresh_name(f"attention_mask/{op}"), attrs=attrs, inputs=inputs, outputs=[out]))
        return out

    def _constant(self, value: float, dtype: np.dtype) -> gs.Constant:
        key = ("constant", float(value), np.dtype(dtype).str)
        if key not in self._memo:
            self._memo[key] = gs.Constant(self.model.fresh_name("attention_mask_value"), np.array(value, dtype=dtype))
        return self._memo[key]  # type: ignore[return-value]


class _MaskPathChecker:
    """Decides whether a value read at (node, slot) only ever reaches attention masks."""

    def __init__(self, graph: gs.Graph, sink_edges: set[Edge], region: set[int]) -> None:
        self.graph = graph
        self.sink_edges = sink_edges
        self.region = region
        self._memo: dict[int, bool] = {}

    def edge_ok(self, node: gs.Node, slot: int) -> bool:
        if (id(node), slot) in self.sink_edges or node.op in _SHAPE_READERS:
            return True
        if id(node) not in self.region:
            return False
        if node.op == "Equal" and any(_is_zero(t) for i, t in enumerate(node.inputs) if i != slot):
            return True  # the 4.40 padding merge Equal(causal + pad, 0): unchanged while NEG < -1
        slots = _VALUE_SLOTS.get(node.op, ())
        if slots is not None and slot not in slots:
            return False
        return self._node_ok(node)

    def _node_ok(self, node: gs.Node) -> bool:
        key = id(node)
        if key not in self._memo:
            self._memo[key] = False  # cycles cannot happen in a valid graph; be safe anyway
            self._memo[key] = all(self._tensor_ok(out) for out in node.outputs)
        return self._memo[key]

    def _tensor_ok(self, tensor: gs.Tensor) -> bool:
        if is_graph_output(self.graph, tensor):
            return False
        return all(self.edge_ok(reader, slot) for reader in tensor.outputs for slot, t in enumerate(reader.inputs) if t is tensor)


def _at_least(tensor: gs.Tensor, floor: float) -> bool:
    value = uniform_value(tensor)
    return value is not None and is_float_dtype(value.dtype) and float(value) >= floor


def _is_zero(tensor: gs.Tensor) -> bool:
    value = uniform_value(tensor)
    return value is not None and float(value) == 0.0


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
    values = small_constant(tensor)
    if values is not None:
        return values.size == 1 and values.ndim <= 1
    return False


def _float_dtype(*tensors: gs.Tensor | None) -> np.dtype:
    for tensor in tensors:
        if tensor is not None and is_float_dtype(tensor.dtype):
            return np.dtype(tensor.dtype)
    return np.dtype(np.float32)


def _drop_input(node: gs.Node, slot: int) -> None:
    """Remove an optional input: trailing ones are cut, others become the empty name."""
    if slot == len(node.inputs) - 1:
        node.inputs.pop()
        while node.inputs and node.inputs[-1].is_empty():
            node.inputs.pop()
    else:
        node.inputs[slot] = gs.Variable.empty()
