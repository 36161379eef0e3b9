"""The attention-mask rules, each an op-keyed rule of :mod:`mapc.ir.rewrite`.

Every rule is tried on the Softmax or Attention node of each attention found by
:mod:`.detection` (other nodes are no match) and works through :class:`~.context.MaskContext`.
The canonical form they lead to is

    Softmax(Add(scores, M))        or        Attention(Q, K, V, M, ...)

where ``M`` is one float mask holding 0 (attend) or a finite ``NEG`` (masked). The order the
rules run in is :mod:`.stages`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import MAPC_DOMAIN, NearMiss, NoMatch, is_graph_output, producer, replace_all_uses, rule, small_constant
from mapc.passes.attention_mask.context import MaskContext, SiteOutcome
from mapc.passes.attention_mask.detection import AttentionSite, cone
from mapc.passes.attention_mask.fills import MAX_INSPECT_BYTES, is_float_dtype, single_fill, uniform_value
from mapc.passes.attention_mask.hoist import new_mask_input


def _site(ctx: MaskContext, node: gs.Node) -> tuple[AttentionSite, SiteOutcome]:
    found = ctx.site(node)
    if found is None:
        raise NoMatch
    return found


def _final_mask(ctx: MaskContext, node: gs.Node) -> tuple[AttentionSite, SiteOutcome, gs.Tensor]:
    site, outcome = _site(ctx, node)
    mask = outcome.mask()
    if mask is None:
        raise NoMatch
    return site, outcome, mask


# -- additive-mask: one additive mask ---------------------------------------------------------------


@rule("Softmax", "Attention", plain=False)
def additive_mask(ctx: MaskContext, node: gs.Node) -> bool:
    """An attention's masks become one additive mask.

    On a Softmax: boolean masks (``Where(c, scores, fill)``) and selects ``Where(c, 0, fill)``
    become ``Mul(Sub(1, Cast(c)), NEG)`` (or ``Mul(Cast(c), NEG)`` when ``c`` marks the masked
    positions), a float mask graph input gets ``Max(., NEG)``, masks summed are clamped with
    ``Max(., NEG)``, uniform masks go and ``And(constant causal, padding)`` splits into a
    constant additive part plus the computed padding part; the Softmax then reads
    ``Add(scores, M)``. On an Attention op a bool mask stays (unless ``mask_as_input``), an
    all-True one goes. Near-miss ``qk-output``: an Attention exposing ``qk_matmul_output``;
    ``scores-unbounded`` / ``scores-too-wide`` / ``fill-not-masking`` (:mod:`.exactness`) when a
    rewrite that changes what masked positions hold cannot be shown to keep the softmax.
    """
    site, outcome = _site(ctx, node)
    if _reads_qk_output(site):
        raise NearMiss("qk-output", "Attention exposes qk_matmul_output; its mask is left alone", "drop the debug output qk_matmul_output",
                       node=site.name, severity="info")
    if not site.contributions:
        return False
    if site.kind == "softmax":
        _softmax_mask(ctx, site, outcome)
    else:
        _attention_op_mask(ctx, site, outcome)
    return True


def _reads_qk_output(site: AttentionSite) -> bool:
    outputs = site.node.outputs
    return site.kind == "attention-op" and len(outputs) > 3 and not outputs[3].is_empty() and bool(outputs[3].outputs)


def _softmax_mask(ctx: MaskContext, site: AttentionSite, outcome: SiteOutcome) -> None:
    assert site.scores is not None
    dtype = _float_dtype(site.scores, *[c.fill for c in site.contributions if c.fill is not None], *[c.mask for c in site.contributions])
    parts: list[gs.Tensor] = []
    for contribution in site.contributions:
        if contribution.kind == "additive":
            part = ctx.additive(contribution.mask, outcome)
        else:
            # the select's own fill goes away: the scores get NEG added, exact under .exactness's conditions
            fill = float(uniform_value(contribution.fill))  # type: ignore[arg-type]
            part = ctx.boolean(contribution.mask, contribution.kind == "keep-where", dtype, ctx.neg, outcome, replaces=fill)
            if part is not None:
                outcome.add("bool-to-additive")
        if part is not None:
            parts.append(part)
    mask = ctx.sum_clamped(parts, dtype, outcome)
    only = site.contributions[0] if len(site.contributions) == 1 else None
    if only is not None and only.kind == "additive" and mask is only.mask:
        outcome.sink = (only.node, 1 - (only.spine_slot or 0))
        return
    if mask is None:
        site.node.inputs[0] = site.scores
        return
    masked = ctx.mask_node("Add", [site.scores, mask], dtype)
    site.node.inputs[0] = masked
    outcome.sink = (producer(masked), 1)  # type: ignore[assignment]


def _attention_op_mask(ctx: MaskContext, site: AttentionSite, outcome: SiteOutcome) -> None:
    """A native Attention op defines its own masking (a bool mask is applied without any fill,
    a fully masked row gives zeros): only trivial masks and constant fills (finite-fill, through the
    sink) change here; decompose-attention makes the mask additive for targets without the op."""
    node = site.node
    contribution = site.contributions[0]
    if contribution.is_boolean and not ctx.mask_as_input:
        uniform = uniform_value(contribution.mask)
        if uniform is not None and bool(uniform):
            ctx.counters["trivial_masks_removed"] += 1
            outcome.add("trivial-mask-removed")
            _drop_input(node, 3)
            return
        outcome.sink = (node, 3)
        return
    if contribution.is_boolean:
        mask = ctx.boolean(contribution.mask, True, _float_dtype(node.inputs[0]), ctx.neg, outcome, replaces=-np.inf)
        if mask is not None:
            outcome.add("bool-to-additive")
    else:
        mask = ctx.additive(contribution.mask, outcome, clamp_inputs=False)
    if mask is None:
        _remove_mask(ctx, node, contribution.mask)
        return
    if mask is not contribution.mask:
        node.inputs[3] = mask
    outcome.sink = (node, 3)


def _remove_mask(ctx: MaskContext, node: gs.Node, mask: gs.Tensor) -> None:
    """Drop a trivial ``attn_mask``. A mapc fused-op function's body reads its mask input, so
    there the mask becomes a scalar zero (the mask subgraph still goes away)."""
    if node.domain == MAPC_DOMAIN:
        node.inputs[3] = ctx.value(0.0, np.dtype(mask.dtype or np.float32))
    else:
        _drop_input(node, 3)


def _drop_input(node: gs.Node, slot: int) -> None:
    """Remove an optional input: trailing ones are cut, others become the empty name."""
    if slot == len(node.inputs) - 1:
        node.inputs.pop()
        while node.inputs and node.inputs[-1].is_empty():
            node.inputs.pop()
    else:
        node.inputs[slot] = gs.Variable.empty()


def _float_dtype(*tensors: gs.Tensor | None) -> np.dtype:
    for tensor in tensors:
        if tensor is not None and is_float_dtype(tensor.dtype):
            return np.dtype(tensor.dtype)
    return np.dtype(np.float32)


# -- finite-mask, finite-fill: finite fills -----------------------------------------------------------


@rule("Softmax", "Attention", plain=False)
def finite_mask(ctx: MaskContext, node: gs.Node) -> bool:
    """An attention's final mask that is itself a constant fill below NEG: the mask readers
    read a copy holding NEG. Near-miss ``fill-kept`` when no mask path can take the copy."""
    _, _, mask = _final_mask(ctx, node)
    return _finite_copy(ctx, mask)


@rule("Softmax", "Attention", plain=False, last_first=True)
def finite_fill(ctx: MaskContext, node: gs.Node) -> bool:
    """Fills below NEG in the subgraph computing an attention's mask: initializers,
    ``Constant`` and ``ConstantOfShape`` values holding them become NEG, only for the readers
    whose every path leads into masks (a fill also read elsewhere keeps its value there).
    Near-miss ``fill-kept`` when no mask path can take the copy, and the near-misses of
    :mod:`.exactness` when the attention's logits do not let NEG mask exactly (its fills stay).

    Attentions are visited last first and each mask subgraph depth first, so fills shared by
    several masks are met, and their copies numbered, in one fixed order.
    """
    site, outcome, mask = _final_mask(ctx, node)
    if not ctx.exact(site) and not ctx.is_finite(mask):
        ctx.require_exact(ctx.neg)
    replaced = 0
    for inner in cone([mask]):
        if id(inner) in ctx.fill_nodes_seen:
            continue
        ctx.fill_nodes_seen.add(id(inner))
        for tensor in inner.inputs:
            replaced += _finite_copy(ctx, tensor)
        value = inner.attrs.get("value") if inner.op == "ConstantOfShape" else None
        if isinstance(value, gs.Constant):
            replaced += _replace_fill(ctx, inner.outputs[0], np.asarray(value.values), lambda v, n=inner: _constant_of_shape_copy(ctx, n, v))
    mask = outcome.mask()
    fresh = ctx.created_fills
    if id(mask) in fresh or any(id(t) in fresh for inner in cone([mask]) for t in [*inner.inputs, *inner.outputs]):
        outcome.add("finite-fill")
    return bool(replaced)


def _finite_copy(ctx: MaskContext, tensor: gs.Tensor) -> int:
    """Give the mask readers of a constant (not looked at before) holding a fill below NEG a
    finite copy; 1 if made."""
    if id(tensor) in ctx.fill_tensors_seen:
        return 0
    ctx.fill_tensors_seen.add(id(tensor))
    values = small_constant(tensor, MAX_INSPECT_BYTES)
    if values is None:
        return 0
    return _replace_fill(ctx, tensor, values, lambda finite: gs.Constant(ctx.model.fresh_name("attention_mask_fill"), finite))


def _replace_fill(ctx: MaskContext, tensor: gs.Tensor, values: np.ndarray, make: Callable[[np.ndarray], gs.Tensor]) -> int:
    """Readers of ``tensor`` (holding ``values``) on mask paths read ``make(finite values)``
    when its fill is below NEG; 1 if they do. A fill no mask reader can take is remarked."""
    fill = single_fill(values)
    if fill is None or not fill < ctx.neg:
        return 0
    paths = ctx.mask_paths()
    edges = [(reader, slot) for reader in list(tensor.outputs) for slot, t in enumerate(reader.inputs) if t is tensor]
    good = [(reader, slot) for reader, slot in edges if paths.edge_ok(reader, slot)]
    outsider = next((reader.name or reader.op for reader, slot in edges if (reader, slot) not in good), None)
    if is_graph_output(ctx.graph, tensor):
        outsider = outsider or "a graph output"
    if not good:
        if outsider is not None:
            ctx.remark("fill-kept", f"fill in {tensor.name!r} also reaches {outsider}, not only masks; left alone",
                       "the mask may overflow in fp16 and ruin per-tensor quantization; hoist it with --mask-as-input", node=outsider)
        return 0
    replacement = make(np.where(values == fill, ctx.neg, values).astype(values.dtype))
    ctx.created_fills.add(id(replacement))
    for reader, slot in good:
        reader.inputs[slot] = replacement
    ctx.counters["fills_replaced"] += 1
    return 1


def _constant_of_shape_copy(ctx: MaskContext, node: gs.Node, values: np.ndarray) -> gs.Tensor:
    out = gs.Variable(ctx.model.fresh_name("attention_mask_fill"), dtype=node.outputs[0].dtype, shape=node.outputs[0].shape)
    attrs = dict(node.attrs)
    attrs["value"] = gs.Constant(ctx.model.fresh_name("attention_mask_fill_value"), values)
    ctx.graph.nodes.append(gs.Node("ConstantOfShape", name=ctx.model.fresh_name("attention_mask/ConstantOfShape"), attrs=attrs, inputs=list(node.inputs), outputs=[out]))
    return out


# -- mask-as-input: the mask as a graph input ---------------------------------------------------------


@rule("Softmax", "Attention", plain=False)
def mask_as_input(ctx: MaskContext, node: gs.Node) -> bool:
    """With ``mask_as_input``, an attention's final mask: the subgraph computing it becomes
    a float graph input ``[B, 1, S, T]`` computed on the host, read through ``Max(., NEG)``;
    attentions sharing a mask share the input. A mask that already is a clamped graph input
    stays."""
    if not ctx.mask_as_input:
        raise NoMatch
    site, outcome, mask = _final_mask(ctx, node)
    hoisted = ctx.hoisted_by_mask.get(id(mask))
    if hoisted is None:
        source = producer(mask)
        inputs = {id(t) for t in ctx.graph.inputs}
        if source is not None and source.op == "Max" and any(id(t) in inputs for t in source.inputs):
            raise NoMatch
        hoisted = new_mask_input(ctx.model, site, mask, ctx.neg, ctx.clamp)
        ctx.hoisted.append(hoisted)
        # an attention reading the same edge as one already rewired finds the mask by its clamp
        ctx.hoisted_by_mask[id(mask)] = ctx.hoisted_by_mask[id(hoisted.clamped)] = hoisted
    reader, slot = outcome.sink  # type: ignore[misc]
    reader.inputs[slot] = hoisted.clamped
    hoisted.attentions.append(site.name)
    hoisted.components = sorted({*hoisted.components, *ctx.families[id(site)].components})
    outcome.add("hoisted-to-input")
    return True


# -- nan-guard: the NaN guard -------------------------------------------------------------------------


@rule("Softmax", plain=False)
def nan_guard(ctx: MaskContext, node: gs.Node) -> bool:
    """The NaN guard ``Where(IsNaN(p), 0, p)`` after an attention's softmax: removed once the
    mask is finite, its readers read ``p``. Near-miss ``guard-kept`` while the mask still holds
    a non-finite or huge fill."""
    site, outcome = _site(ctx, node)
    if site.guard is None:
        raise NoMatch
    if id(site) in ctx.refused or not ctx.is_finite(outcome.mask()):
        raise NearMiss("guard-kept", "NaN guard kept: the mask still holds a non-finite or huge fill", "see the attention-mask.fill-kept notes",
                       node=site.guard.name, severity="info")
    replace_all_uses(ctx.model, site.guard.outputs[0], site.node.outputs[0])
    ctx.counters["nan_guards_removed"] += 1
    outcome.add("nan-guard-removed")
    return True
