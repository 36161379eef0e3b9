"""``mapc diff``: what changed between two compiles, and by how much.

:func:`diff_metrics` compares the :class:`~mapc.metrics.Metrics` of an old and a new compile
and produces one :class:`Change` per metric (the scalar metrics, each fused-op kind either
compile has, and SQNR / cosine / top-1 per quantized output) plus one :class:`FallbackChange`
per CPU-fallback reason code whose nodes differ. :mod:`mapc.diff_render` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mapc.metrics import FUSION_KINDS, Metrics, OutputAccuracy

#: How a value is shown and whether more of it is better (None: neither).
Kind = Literal["text", "flag", "count", "fraction", "ms", "seconds", "bytes", "db", "ratio"]

#: The scalar metrics in table order: attribute of Metrics, label, kind, better (None for the
#: node count, which lowering changes either way, and compile time, which is noisy).
SCALARS: tuple[tuple[str, str, Kind, str | None], ...] = (
    ("mapc_version", "mapc version", "text", None),
    ("target", "target", "text", None),
    ("quantization", "quantization", "text", None),
    ("static", "static input and output shapes", "flag", "higher"),
    ("nodes", "nodes", "count", None),
    ("nodes_on_target", "nodes on the target", "count", "higher"),
    ("nodes_on_target_fraction", "nodes on the target (share)", "fraction", "higher"),
    ("macs_on_target", "MACs on the target", "count", "higher"),
    ("macs_on_target_fraction", "MACs on the target (share)", "fraction", "higher"),
    ("partitions", "partitions", "count", "lower"),
    ("fallback_nodes", "CPU-fallback nodes", "count", "lower"),
    ("estimated_ms", "estimated latency (ms)", "ms", "lower"),
    ("compile_seconds", "compile time (s)", "seconds", None),
    ("weight_bytes", "weights (bytes)", "bytes", "lower"),
    ("output_bytes", "model file (bytes)", "bytes", "lower"),
)


@dataclass(frozen=True)
class Change:
    """One metric of both compiles (None: that compile does not have it)."""

    metric: str
    label: str
    kind: Kind
    old: Any
    new: Any
    better: str | None = None

    @property
    def changed(self) -> bool:
        return self.old != self.new

    @property
    def delta(self) -> float | None:
        """``new - old`` when both are numbers (booleans aside), else None."""
        if not (_number(self.old) and _number(self.new)):
            return None
        return self.new - self.old

    @property
    def relative(self) -> float | None:
        """``delta / old`` when both are numbers and old is not zero."""
        delta = self.delta
        return None if delta is None or not self.old else delta / abs(self.old)

    @property
    def verdict(self) -> str | None:
        """``better``, ``worse`` or None (unchanged, or no direction)."""
        if not self.changed or self.better is None:
            return None
        old, new = _rank(self.old), _rank(self.new)
        if old is None or new is None or old == new:
            return None
        return "better" if (new > old) == (self.better == "higher") else "worse"

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "label": self.label, "old": self.old, "new": self.new, "changed": self.changed,
                "delta": self.delta, "relative": self.relative, "verdict": self.verdict}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rank(value: Any) -> float | None:
    """A value on the axis its ``better`` direction refers to (an exact SQNR ranks highest)."""
    if value == "exact":
        return float("inf")
    if isinstance(value, bool):
        return float(value)
    return float(value) if _number(value) else None


@dataclass(frozen=True)
class FallbackChange:
    """A CPU-fallback reason code whose nodes differ: ``added`` (new code), ``removed``, or ``changed``."""

    code: str
    status: Literal["added", "removed", "changed"]
    nodes_added: list[str]
    nodes_removed: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "status": self.status, "nodes_added": self.nodes_added, "nodes_removed": self.nodes_removed}


@dataclass(frozen=True)
class Diff:
    """Two compiles compared: every metric, and the fallback reasons that changed."""

    old_name: str
    new_name: str
    changes: list[Change]
    fallback: list[FallbackChange]

    @property
    def changed(self) -> list[Change]:
        return [change for change in self.changes if change.changed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "old": self.old_name,
            "new": self.new_name,
            "metrics": [change.as_dict() for change in self.changes],
            "changed": [change.metric for change in self.changed],
            "fallback": [entry.as_dict() for entry in self.fallback],
        }


def diff_metrics(old: Metrics, new: Metrics, old_name: str = "old", new_name: str = "new") -> Diff:
    """Compare two compiles: the scalar metrics, fused ops per kind, accuracy per output, fallback reasons."""
    changes = [Change(attribute, label, kind, getattr(old, attribute), getattr(new, attribute), better) for attribute, label, kind, better in SCALARS]
    for kind in FUSION_KINDS:
        if kind in old.fused or kind in new.fused:
            changes.append(Change(f"fused.{kind}", f"fused: {kind}", "count", old.fused.get(kind, 0), new.fused.get(kind, 0)))
    for name in [*new.outputs, *(n for n in old.outputs if n not in new.outputs)]:
        changes += _output_changes(name, old.outputs.get(name), new.outputs.get(name))
    return Diff(old_name, new_name, changes, fallback_changes(old.fallback, new.fallback))


def _output_changes(name: str, old: OutputAccuracy | None, new: OutputAccuracy | None) -> list[Change]:
    def sqnr(accuracy: OutputAccuracy | None) -> float | str | None:
        if accuracy is None:
            return None
        return "exact" if accuracy.exact else accuracy.sqnr_db

    return [
        Change(f"sqnr_db[{name}]", f"SQNR dB: {name}", "db", sqnr(old), sqnr(new), "higher"),
        Change(f"cosine[{name}]", f"cosine: {name}", "ratio", old and old.cosine, new and new.cosine, "higher"),
        Change(f"top1[{name}]", f"top-1 agreement: {name}", "fraction", old and old.top1, new and new.top1, "higher"),
    ]


def fallback_changes(old: dict[str, list[str]] | None, new: dict[str, list[str]] | None) -> list[FallbackChange]:
    """Per reason code (sorted), the nodes that gained or lost it; codes whose nodes are the same are left out."""
    old, new = old or {}, new or {}
    changes = []
    for code in sorted({*old, *new}):
        before, after = old.get(code, []), new.get(code, [])
        added = [n for n in after if n not in before]
        removed = [n for n in before if n not in after]
        if added or removed:
            status = "added" if code not in old else "removed" if code not in new else "changed"
            changes.append(FallbackChange(code, status, added, removed))
    return changes
