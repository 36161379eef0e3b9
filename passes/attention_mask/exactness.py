"""When a mask rewrite keeps an attention's output: the precondition of every fill-changing rewrite.

Replacing a fill (``-inf``, ``finfo.min``, ``-1e9``) by ``NEG``, turning ``Where(c, s, f)`` on the
scores into ``s + NEG·(1 - c)``, or clamping a mask with ``Max(·, NEG)`` changes what a masked
position holds: ``s_j + NEG`` instead of ``f`` or ``s_j + f``. The softmax stays *exactly* the same
when every masked position gets weight 0 before and after, i.e. when its logit is at least
``margin`` below the row's largest unmasked logit ``u``. With the logits (scores plus any bias on
the spine) in ``[lo, hi]``:

* rewritten: ``s_j + F - u <= hi - lo + F``, so ``span + F <= -margin`` suffices
  (``F = max(f, NEG)``, the value the rewritten mask holds);
* original ``Where`` fill ``f``: ``f - u <= f - lo``, so ``f <= lo - margin`` (the original
  really excluded those positions; additive fills below ``F`` are implied by the first).

``margin`` is 110 for fp32/fp16 masks: ``exp(-110)`` is below half the smallest fp32 subnormal,
so the weight is exactly 0 and the unmasked weights are bit for bit the same sums. int16/int8
masks (``NEG`` -50/-20, what ``--quantize`` sets) are a deliberate approximation for a quantized
model, which its accuracy report judges: they are not checked here. Fully masked rows have no
defined output and are not considered (see :mod:`.verification`).

The range comes from :func:`mapc.ir.value_bound` (proven for every input: scores after a
LayerNorm, from bounded weights, ...), else from the user's samples (``--verify-inputs``, a
``--calibration`` folder) measured on the model as it is, widened by half the measured span on
each side; otherwise it is unknown and the rewrite is refused with a near-miss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir import Bound, Model, NearMiss, OnnxRuntimeError, Runner, value_bound
from mapc.passes.attention_mask.detection import AttentionSite

#: fp32/fp16 masks: a logit this far below the row's maximum gets weight exactly 0 in fp32.
FLOAT_MARGIN = 110.0
#: Samples measured at most (the first ones).
MAX_MEASURED_SAMPLES = 8


@dataclass(frozen=True)
class LogitRange:
    """Where an attention's logits lie before masking, and how that is known."""

    lo: float
    hi: float
    source: str  # "proven" or "measured on N samples"

    @property
    def span(self) -> float:
        return self.hi - self.lo


def margin(precision: str) -> float | None:
    """How far below the row maximum a masked logit must be; None: not checked (int masks)."""
    return FLOAT_MARGIN if precision in ("fp32", "fp16") else None


def proven_range(site: AttentionSite, neg: float, memo: dict[int, Bound | None]) -> LogitRange | None:
    """The logits' range for every input, from interval analysis, or None."""
    bound = _scores_bound(site, memo)
    if bound is None:
        return None
    lo, hi = bound.lo, bound.hi
    for contribution in site.contributions:
        if contribution.kind != "additive":
            continue
        bias = value_bound(contribution.mask, memo)
        if bias is not None and bias.lo > neg:  # not a mask (it never reaches NEG): a bias shifting the logits
            lo, hi = lo + bias.lo, hi + bias.hi
    return LogitRange(lo, hi, "proven")


def _scores_bound(site: AttentionSite, memo: dict[int, Bound | None]) -> Bound | None:
    if site.kind == "softmax":
        return value_bound(site.scores, memo) if site.scores is not None else None
    bounds = [value_bound(t, memo) for t in _query_and_keys(site.node)]
    if any(b is None for b in bounds):
        return None
    query, *keys = bounds
    return _attention_scores(site.node, query, max(keys, key=lambda b: b.magnitude))  # type: ignore[arg-type]


def _query_and_keys(node: gs.Node) -> list[gs.Tensor]:
    """An Attention op's Q, K and (when given) past_key."""
    tensors = list(node.inputs[:2])
    if len(node.inputs) > 4 and not node.inputs[4].is_empty():
        tensors.append(node.inputs[4])
    return tensors


def _attention_scores(node: gs.Node, query: Bound, key: Bound) -> Bound | None:
    """The scores an ``Attention`` op computes from queries and keys in these bounds."""
    shape = node.inputs[0].shape
    if not shape or not isinstance(shape[-1], (int, np.integer)):
        return None
    depth = int(shape[-1]) // int(node.attrs.get("q_num_heads", 1) if len(shape) == 3 else 1)
    scale = float(node.attrs.get("scale", 1.0 / math.sqrt(max(depth, 1))))
    reach = depth * query.magnitude * key.magnitude * abs(scale)
    softcap = float(node.attrs.get("softcap", 0.0))
    if softcap > 0:
        reach = min(reach, softcap)
    return Bound(-reach, reach)


def measured_ranges(model: Model, sites: Sequence[AttentionSite], samples: Sequence[Mapping[str, np.ndarray]]) -> dict[int, LogitRange]:
    """Each attention's logit range on the samples, by id of its site; {} if the model does not
    run on them. A Softmax's scores (before any mask) are measured and widened by half their span on each side;
    an Attention op's queries and keys are measured, doubled, and bounded as :func:`proven_range` does."""
    wanted = {id(site): _measured_tensors(site) for site in sites}
    names = sorted({name for tensors in wanted.values() for name in tensors})
    used = list(samples[:MAX_MEASURED_SAMPLES])
    if not names or not used:
        return {}
    computed = [name for name in names if not all(name in sample for sample in used)]  # graph inputs are read as given
    try:
        runner = Runner(model, computed) if computed else None
        values = [{**{n: sample[n] for n in names if n in sample}, **(runner.run(sample) if runner else {})} for sample in used]
    except OnnxRuntimeError:
        return {}
    source = f"measured on {len(used)} samples"
    ranges = {}
    for site in sites:
        bounds = [_measured(values, name) for name in wanted[id(site)]]
        if not bounds or any(b is None for b in bounds):
            continue
        if site.kind == "softmax":
            lo, hi = bounds[0].lo, bounds[0].hi  # type: ignore[union-attr]
            pad = (hi - lo) / 2
            ranges[id(site)] = LogitRange(lo - pad, hi + pad, source)
            continue
        query, *keys = (Bound(-2 * b.magnitude, 2 * b.magnitude) for b in bounds)  # type: ignore[union-attr]
        scores = _attention_scores(site.node, query, max(keys, key=lambda b: b.magnitude))
        if scores is not None:
            ranges[id(site)] = LogitRange(scores.lo, scores.hi, source)
    return ranges


def _measured_tensors(site: AttentionSite) -> list[str]:
    if site.kind == "softmax":
        return [site.scores.name] if site.scores is not None and site.scores.name else []
    return [t.name for t in _query_and_keys(site.node) if t.name]


def _measured(values: list[dict[str, np.ndarray]], name: str) -> Bound | None:
    finite = [x[np.isfinite(x)] for x in (np.asarray(v[name], np.float64) for v in values)]
    if not all(x.size for x in finite):
        return None
    return Bound(min(float(x.min()) for x in finite), max(float(x.max()) for x in finite))


def check_exact(site: AttentionSite, known: LogitRange | None, fill: float, replaces: float | None, *, margin: float, precision: str) -> None:
    """Raise :class:`NearMiss` unless writing ``fill`` (``>= NEG``) at the masked positions of
    ``site`` (where the original held ``replaces``, or its own fill below ``fill``) keeps its softmax."""
    needed = -fill - margin  # the widest span the new fill leaves exact
    what = f"writing {fill:g} at masked positions" if replaces is None else f"replacing the select's fill {replaces:g} by scores + ({fill:g})"
    if known is None:
        raise NearMiss(
            "scores-unbounded",
            f"{what} keeps the softmax only while the scores span less than {max(needed, 0):g}, and no bound on them is proven "
            "(they come from a graph input, a KV cache, or shape arithmetic not yet folded); mask left alone",
            "give samples with --verify-inputs DIR or --calibration DIR (their measured range is used), or fix the input shapes "
            "(--input-shape) so that shape arithmetic folds",
            node=site.name,
        )
    if replaces is not None and not replaces <= known.lo - margin:
        raise NearMiss(
            "fill-not-masking",
            f"the select's fill {replaces:g} is not shown to be {margin:g} below the scores ({known.lo:.4g} to {known.hi:.4g}, "
            f"{known.source}): where it is not, the model's own select gives masked keys weight and no additive mask does the same; "
            "mask left alone",
            "none needed if the scores reach that far; if they do not, give samples with --verify-inputs DIR (their measured "
            "range is used)" if known.source == "proven" else "none needed: the select is part of what the model computes",
            node=site.name,
        )
    if known.span > needed:
        suggestion = -math.ceil((known.span + margin) / 1000) * 1000
        fix = f"--mask-value {suggestion:g}" + ("" if precision == "fp32" or suggestion >= -32000 else " --mask-precision fp32")
        raise NearMiss(
            "scores-too-wide",
            f"{what}: the scores span up to {known.span:.4g} ({known.source}), wider than the {max(needed, 0):g} it leaves exact; "
            "mask left alone",
            fix,
            node=site.name,
        )
