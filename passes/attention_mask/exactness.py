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
``--calibration`` folder: see :func:`measured_ranges`); otherwise it is unknown and the rewrite is
refused with a near-miss.
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


def measured_ranges(model: Model, sites: Sequence[AttentionSite], neg: float, samples: Sequence[Mapping[str, np.ndarray]]) -> dict[int, LogitRange]:
    """Each attention's logit range on the user's samples, by id of its site, widened by half
    its span on each side.

    A Softmax attention's scores are measured in every query row its own masks do not mask
    entirely (those rows are undefined, and change when an earlier attention's mask is
    rewritten: leaving them out makes a second run decide the same), masked keys included (the
    rewrite adds NEG to them), plus the range of any bias on the spine. An Attention op's
    queries and keys are measured and bounded as :func:`proven_range` does."""
    used = list(samples[:MAX_MEASURED_SAMPLES])
    source = f"measured on {len(used)} samples"
    ranges: dict[int, LogitRange] = {}
    softmax = [site for site in sites if site.kind == "softmax" and site.scores is not None]
    for site, (lo, hi) in _measure_softmax(model, softmax, neg, used).items():
        pad = (hi - lo) / 2
        ranges[site] = LogitRange(lo - pad, hi + pad, source)
    for site in sites:
        if site.kind != "attention-op":
            continue
        measured = _measure_tensors(model, _query_and_keys(site.node), used)
        if measured is not None:
            query, *keys = (Bound(-2 * m, 2 * m) for m in measured)
            scores = _attention_scores(site.node, query, max(keys, key=lambda b: b.magnitude))
            if scores is not None:
                ranges[id(site)] = LogitRange(scores.lo, scores.hi, source)
    return ranges


def _evaluate(model: Model, names: list[str], samples: list[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]] | None:
    """The named tensors on each sample (graph inputs read as given); None if the model does not run."""
    computed = [name for name in names if not all(name in sample for sample in samples)]
    try:
        runner = Runner(model, computed) if computed else None
        return [{**{n: np.asarray(sample[n]) for n in names if n in sample}, **(runner.run(sample) if runner else {})} for sample in samples]
    except OnnxRuntimeError:
        return None


def _measure_tensors(model: Model, tensors: list[gs.Tensor], samples: list[Mapping[str, np.ndarray]]) -> list[float] | None:
    """The largest finite magnitude of each tensor over the samples."""
    values = _evaluate(model, [t.name for t in tensors], samples) if samples else None
    if values is None:
        return None
    magnitudes = []
    for tensor in tensors:
        finite = [x[np.isfinite(x)] for x in (np.asarray(v[tensor.name], np.float64) for v in values)]
        if not all(x.size for x in finite):
            return None
        magnitudes.append(max(float(np.abs(x).max()) for x in finite))
    return magnitudes


def _measure_softmax(model: Model, sites: list[AttentionSite], neg: float, samples: list[Mapping[str, np.ndarray]]) -> dict[int, tuple[float, float]]:
    """Per Softmax site (by id), the range of its scores over the samples (see :func:`measured_ranges`)."""
    names = sorted({t.name for site in sites for t in (site.scores, *(c.mask for c in site.contributions))})  # type: ignore[union-attr]
    values = _evaluate(model, names, samples) if names and samples else None
    if values is None:
        return {}
    found = {}
    for site in sites:
        lows, highs = [], []
        for value in values:
            scores = np.asarray(value[site.scores.name], np.float64)  # type: ignore[union-attr]
            masked, bias_lo, bias_hi = _masked_positions(site, value, scores.shape, neg)
            if masked is None:
                break
            rows = np.broadcast_to(masked.all(axis=-1, keepdims=True), scores.shape)
            kept = scores[~rows]  # a sample masking every row says nothing about the scores
            kept = kept[np.isfinite(kept)]
            if kept.size:
                lows.append(float(kept.min()) + bias_lo)
                highs.append(float(kept.max()) + bias_hi)
        else:
            if lows:
                found[id(site)] = (min(lows), max(highs))
    return found


def _masked_positions(site: AttentionSite, value: Mapping[str, np.ndarray], shape: tuple[int, ...], neg: float) -> tuple[np.ndarray | None, float, float]:
    """Where the site's masks mask (broadcast to the scores), and the range of its spine biases
    (additive contributions that never reach ``neg``); None where a mask does not broadcast."""
    masked = np.zeros(shape, bool)
    bias_lo = bias_hi = 0.0
    try:
        for contribution in site.contributions:
            mask = np.asarray(value[contribution.mask.name])
            if contribution.kind == "additive":
                finite = mask[np.isfinite(mask)]
                if finite.size and finite.min() > neg and mask.size == finite.size:
                    bias_lo, bias_hi = bias_lo + float(finite.min()), bias_hi + float(finite.max())
                    continue
                masked |= np.broadcast_to(mask <= neg / 2, shape)
            else:
                masked |= np.broadcast_to(mask.astype(bool) if contribution.kind == "mask-where" else ~mask.astype(bool), shape)
    except ValueError:
        return None, 0.0, 0.0
    return masked, bias_lo, bias_hi


#: How to give the logits' range when no bound is proven.
SAMPLES_FIX = "give samples with --verify-inputs DIR or --calibration DIR (their measured range is used)"


def check_exact(site: AttentionSite, known: LogitRange | None, fill: float, replaces: float | None, *, margin: float, precision: str,
                shapes_static: bool) -> None:
    """Raise :class:`NearMiss` unless writing ``fill`` (``>= NEG``) at the masked positions of
    ``site`` (where the original held ``replaces``, or its own fill below ``fill``) keeps its softmax.
    ``shapes_static``: the graph inputs are static already, so the fix does not ask for shapes."""
    needed = -fill - margin  # the widest span the new fill leaves exact
    what = f"writing {fill:g} at masked positions" if replaces is None else f"replacing the select's fill {replaces:g} by scores + ({fill:g})"
    if known is None:
        raise NearMiss(
            "scores-unbounded",
            f"{what} keeps the softmax only while the scores span less than {max(needed, 0):g}, and no bound on them is proven "
            "(they come from a graph input, a KV cache, or shape arithmetic not yet folded); mask left alone",
            SAMPLES_FIX if shapes_static else f"{SAMPLES_FIX}, or fix the input shapes (--input-shape) so that shape arithmetic folds",
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
        fix = f"--mask-value {int(suggestion)}" + ("" if precision == "fp32" or suggestion >= -32000 else " --mask-precision fp32")
        raise NearMiss(
            "scores-too-wide",
            f"{what}: the scores span up to {known.span:.4g} ({known.source}), wider than the {max(needed, 0):g} it leaves exact; "
            "mask left alone",
            fix,
            node=site.name,
        )
