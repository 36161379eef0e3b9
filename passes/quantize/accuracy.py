"""Output metrics of the accuracy report: how far the quantized model is from the float one.

:class:`OutputMetrics` accumulates, per output and over held-out samples, SQNR
(``10·log10(Σ ref² / Σ (ref - q)²)``), cosine similarity, max abs error and, for
classifier-like outputs, top-1 agreement (the argmax over the class axis matches). Integer
outputs are compared exactly. Where the error comes from is :mod:`.sensitivity`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mapc.ir import Model, Runner, is_static_dim
from mapc.passes.facts import Fact

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
        if not dims or not is_static_dim(dims[-1]) or dims[-1] < 2:
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


@dataclass
class HeldOut:
    """The held-out samples of a quantize run and the float model they are measured against,
    kept so that the same accuracy can be measured elsewhere (on the silicon: ``--accuracy-on
    qnn``). The reference shares its weights with the compiled model."""

    samples: list[dict[str, np.ndarray]]
    reference: Model
    classifier_like: frozenset[str]

    def reference_outputs(self) -> list[dict[str, np.ndarray]]:
        runner = Runner(self.reference)
        return [runner.run(sample) for sample in self.samples]


#: At most this many held-out samples are kept for measuring on a device emulator (slow).
HELD_OUT_LIMIT = 8
#: The quantize pass's held-out samples and float reference (set when it quantized).
HELD_OUT: Fact[HeldOut] = Fact("quantize-held-out", "the quantize pass's held-out samples and float reference", provided_by="quantize")
