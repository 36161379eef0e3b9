"""The accuracy report: how far the quantized model is from the float one, and why.

* :class:`OutputMetrics` accumulates, per output and over held-out samples, SQNR
  (``10·log10(Σ ref² / Σ (ref - q)²)``), cosine similarity, max abs error and, for
  classifier-like outputs, top-1 agreement (the argmax over the class axis matches).
* :class:`Probe` runs the switchable probe model (:func:`.emit.write_probe`) in one session:
  any combination of float / planned / promoted quantizers, measured against the float outputs.
* :func:`contributions` quantizes one tensor (activation group or weight) at a time and
  measures the output noise it causes alone: the per-tensor contribution and top offenders.
* :func:`promote_until` promotes the worst offenders to their wider alternative (8 → 16-bit
  activations, 4 → 8-bit weights) until the worst output's SQNR meets a target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ...ir import Model, Runner
from .emit import ACTIVATION_SWITCH, WEIGHT_SWITCH

Progress = Callable[[str, int, int], None]
#: Output ops whose (batch, sequence, class) outputs count as classifier-like.
LOGIT_OPS = frozenset({"Softmax", "LogSoftmax", "MatMul", "Gemm"})


def sqnr_db(signal: float, noise: float) -> float | None:
    """SQNR in dB; None when there is no noise at all (exact)."""
    if noise <= 0:
        return None
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None if value is None else (value if value > 0 else -999.0)
    return round(value, 3)


@dataclass
class _Accumulator:
    signal: float = 0.0
    noise: float = 0.0
    dot: float = 0.0
    quantized_power: float = 0.0
    max_abs_error: float = 0.0
    agree: int = 0
    rows: int = 0
    mismatched: int = 0
    exact_equal: bool = True
    nonfinite: int = 0
    is_float: bool = True


@dataclass
class OutputMetrics:
    """Streaming float-vs-quantized comparison of outputs (see module doc)."""

    classifier_like: frozenset[str] = frozenset()
    samples: int = 0
    acc: dict[str, _Accumulator] = field(default_factory=dict)

    def add(self, reference: Mapping[str, np.ndarray], quantized: Mapping[str, np.ndarray]) -> None:
        self.samples += 1
        for name, expected in reference.items():
            entry = self.acc.setdefault(name, _Accumulator())
            actual = np.asarray(quantized[name])
            expected = np.asarray(expected)
            if expected.dtype.kind not in "fc":
                entry.is_float = False
                entry.exact_equal &= bool(np.array_equal(expected, actual))
                entry.mismatched += int(np.count_nonzero(expected != actual))
                continue
            ref = expected.astype(np.float64)
            val = actual.astype(np.float64)
            finite = np.isfinite(ref) & np.isfinite(val)
            entry.nonfinite += int(ref.size - np.count_nonzero(finite))
            ref, val = ref[finite], val[finite]
            difference = val - ref
            entry.signal += float(np.dot(ref, ref))
            entry.noise += float(np.dot(difference, difference))
            entry.dot += float(np.dot(ref, val))
            entry.quantized_power += float(np.dot(val, val))
            if difference.size:
                entry.max_abs_error = max(entry.max_abs_error, float(np.abs(difference).max()))
            if name in self.classifier_like:
                agree, rows = _top1(expected, actual)
                entry.agree += agree
                entry.rows += rows

    def results(self) -> list[dict]:
        report = []
        for name, entry in self.acc.items():
            if not entry.is_float:
                report.append({"output": name, "exact_match": entry.exact_equal, "mismatched_elements": entry.mismatched})
                continue
            sqnr = sqnr_db(entry.signal, entry.noise)
            denominator = math.sqrt(entry.signal * entry.quantized_power)
            cosine = entry.dot / denominator if denominator > 0 else (1.0 if entry.signal == entry.quantized_power else 0.0)
            record = {
                "output": name,
                "sqnr_db": _finite_or_none(sqnr),
                "exact": sqnr is None,
                "cosine": round(cosine, 6),
                "max_abs_error": float(f"{entry.max_abs_error:.6g}"),
            }
            if entry.rows:
                record["top1_agreement"] = round(entry.agree / entry.rows, 6)
            if entry.nonfinite:
                record["nonfinite_elements"] = entry.nonfinite
            report.append(record)
        return report

    def worst_sqnr(self) -> float | None:
        """The lowest SQNR over float outputs (None if every float output is exact)."""
        values = [sqnr_db(e.signal, e.noise) for e in self.acc.values() if e.is_float and (e.signal or e.noise)]
        finite = [v for v in values if v is not None]
        return min(finite) if finite else None


def _top1(expected: np.ndarray, actual: np.ndarray) -> tuple[int, int]:
    squeezed_shape = [d for d in expected.shape if d != 1]
    if not squeezed_shape or squeezed_shape[-1] < 2:
        return 0, 0
    reference = expected.reshape(-1, squeezed_shape[-1])
    quantized = np.asarray(actual).reshape(-1, squeezed_shape[-1])
    return int(np.count_nonzero(reference.argmax(axis=1) == quantized.argmax(axis=1))), reference.shape[0]


def classifier_like_outputs(model: Model) -> frozenset[str]:
    """Float outputs that look like class scores: at most two non-unit dims with the last ≥ 2
    ([classes], [batch, classes], [1, 1000, 1, 1]...), or three when a Softmax, LogSoftmax,
    MatMul or Gemm computes them ([batch, sequence, vocabulary])."""
    names = set()
    for tensor in model.graph.outputs:
        if tensor.dtype is None or np.dtype(tensor.dtype).kind != "f" or tensor.shape is None:
            continue
        dims = [d for d in tensor.shape if d != 1]
        if not dims or not isinstance(dims[-1], (int, np.integer)) or dims[-1] < 2:
            continue
        source = tensor.inputs[0].op if tensor.inputs else None
        if len(dims) <= 2 or (len(dims) == 3 and source in LOGIT_OPS):
            names.add(tensor.name)
    return frozenset(names)


def measure(runner_reference: Runner, runner_quantized: Runner, samples: Sequence[dict[str, np.ndarray]], classifier_like: frozenset[str], progress: Progress | None = None) -> OutputMetrics:
    """Compare two runners' graph outputs over ``samples``."""
    metrics = OutputMetrics(classifier_like=classifier_like)
    for done, sample in enumerate(samples):
        metrics.add(runner_reference.run(sample), runner_quantized.run(sample))
        if progress is not None:
            progress("accuracy", done + 1, len(samples))
    return metrics


# -- the probe -------------------------------------------------------------------------------------


class Probe:
    """The switchable probe in one session; references are its all-float runs."""

    def __init__(self, model: Model, samples: Sequence[dict[str, np.ndarray]], groups: int, weights: int) -> None:
        self.runner = Runner(model)
        self.samples = list(samples)
        self.groups = max(groups, 1)
        self.weights = max(weights, 1)
        self.float_outputs = [name for name in self.runner.output_names]
        off_a, off_w = np.zeros(self.groups, np.int64), np.zeros(self.weights, np.int64)
        self.references = [self._run(sample, off_a, off_w) for sample in self.samples]
        self.float_outputs = [n for n in self.float_outputs if all(ref[n].dtype.kind == "f" for ref in self.references)]
        self.signal = {n: sum(float(np.square(ref[n][np.isfinite(ref[n])].astype(np.float64)).sum()) for ref in self.references) for n in self.float_outputs}
        self.runs = len(self.samples)

    def _run(self, sample: dict[str, np.ndarray], activations: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
        return self.runner.run({**sample, ACTIVATION_SWITCH: activations, WEIGHT_SWITCH: weights})

    def noise(self, activations: np.ndarray, weights: np.ndarray) -> dict[str, float]:
        """Σ (y - y_float)² per float output over the samples, for this switch setting."""
        totals = dict.fromkeys(self.float_outputs, 0.0)
        for sample, reference in zip(self.samples, self.references):
            outputs = self._run(sample, activations, weights)
            self.runs += 1
            for name in self.float_outputs:
                expected, actual = reference[name], outputs[name]
                finite = np.isfinite(expected) & np.isfinite(actual)
                difference = (actual[finite].astype(np.float64) - expected[finite])
                totals[name] += float(np.dot(difference, difference))
                if np.count_nonzero(~finite & np.isfinite(expected)):
                    totals[name] = math.inf
        return totals

    def relative(self, noise: Mapping[str, float]) -> float:
        """The worst output's noise-to-signal ratio."""
        ratios = [noise[n] / self.signal[n] if self.signal[n] > 0 else (math.inf if noise[n] > 0 else 0.0) for n in self.float_outputs]
        return max(ratios, default=0.0)


@dataclass
class Contribution:
    kind: str  # "activation" or "weight"
    index: int
    name: str
    relative_noise: float

    @property
    def sqnr_db(self) -> float | None:
        return None if self.relative_noise <= 0 else -10.0 * math.log10(self.relative_noise)


def contributions(
    probe: Probe,
    activation_state: np.ndarray,
    weight_state: np.ndarray,
    names: tuple[Sequence[str], Sequence[str]],
    progress: Progress | None = None,
) -> list[Contribution]:
    """For every quantized group and weight, the worst-output noise when it alone is quantized
    as in the given states; sorted worst first."""
    found = []
    total = int(np.count_nonzero(activation_state)) + int(np.count_nonzero(weight_state))
    done = 0
    zeros_a, zeros_w = np.zeros_like(activation_state), np.zeros_like(weight_state)
    for kind, state, labels in (("activation", activation_state, names[0]), ("weight", weight_state, names[1])):
        for index in np.flatnonzero(state):
            single_a, single_w = zeros_a.copy(), zeros_w.copy()
            (single_a if kind == "activation" else single_w)[index] = state[index]
            found.append(Contribution(kind, int(index), labels[index], probe.relative(probe.noise(single_a, single_w))))
            done += 1
            if progress is not None:
                progress("accuracy: per-tensor error", done, total)
    found.sort(key=lambda c: (-c.relative_noise, c.kind, c.index))
    return found


@dataclass
class Promotion:
    target_db: float
    met: bool
    before_db: float | None
    after_db: float | None
    promoted: list[Contribution]
    evaluations: int


def promote_until(
    probe: Probe,
    target_db: float,
    activation_state: np.ndarray,
    weight_state: np.ndarray,
    ranked: Sequence[Contribution],
    promotable: tuple[set[int], set[int]],
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, Promotion]:
    """Promote offenders (worst first) until the probe's worst-output SQNR reaches ``target_db``.

    Each round promotes the fewest next offenders whose summed contributions, if removed,
    would bring the noise under the target (noise powers of independent quantizers add), then
    measures the real result; it stops when the target is met or nothing is left to promote.
    """
    activations, weights = activation_state.copy(), weight_state.copy()
    goal = 10 ** (-target_db / 10)
    current = probe.relative(probe.noise(activations, weights))
    before = current
    evaluations = 1
    queue = [c for c in ranked if c.index in (promotable[0] if c.kind == "activation" else promotable[1])]
    promoted: list[Contribution] = []
    while current > goal and queue:
        excess = current - goal
        batch, removed = [], 0.0
        for candidate in queue:
            batch.append(candidate)
            removed += candidate.relative_noise
            if removed >= excess:
                break
        queue = queue[len(batch):]
        for candidate in batch:
            (activations if candidate.kind == "activation" else weights)[candidate.index] = 2
        promoted.extend(batch)
        current = probe.relative(probe.noise(activations, weights))
        evaluations += 1
        if progress is not None:
            progress("accuracy target: promoting", len(promoted), len(promoted) + len(queue))

    def db(relative: float) -> float | None:
        return None if relative <= 0 else -10 * math.log10(relative)

    return activations, weights, Promotion(target_db, current <= goal, db(before), db(current), promoted, evaluations)
