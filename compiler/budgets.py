"""Budgets: limits a compile must stay within, read from a TOML file (``--expect budgets.toml``).

Each top-level key of the file is one budget (:data:`BUDGETS`), e.g.::

    min_macs_on_target = 0.99        # share of the MACs on the target, 0..1
    max_partitions = 1
    min_sqnr_db = 30                 # every quantized output
    no_new_fallback_reasons = true   # relative: against the old report of `mapc diff`
    max_sqnr_drop_db = 0.5

:func:`load_budgets` reads and validates the file (an unknown key or a value of the wrong type
is a one-line :class:`~mapc.ir.UsageError`); :func:`check_budgets` evaluates every budget on the
new compile's :class:`~mapc.metrics.Metrics` (and the old one's, for relative budgets) and
returns one :class:`Check` per budget, or per output for the per-output budgets. A relative
budget without an old compile is skipped; a budget whose metric the report lacks fails.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mapc.ir import UsageError
from mapc.metrics import Metrics

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Check:
    """One budget (for one output, if ``output`` is set) checked: passed, failed or skipped, and why."""

    budget: str
    status: Status
    detail: str
    output: str | None = None

    @property
    def name(self) -> str:
        """``min_sqnr_db`` or ``min_sqnr_db[logits]``."""
        return self.budget if self.output is None else f"{self.budget}[{self.output}]"

    def as_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "output": self.output, "status": self.status, "detail": self.detail}


Evaluate = Callable[[Any, Metrics, "Metrics | None"], list[Check]]


@dataclass(frozen=True)
class Budget:
    """A budget key: the type of its value, its range, whether it needs an old compile, and its check."""

    key: str
    kind: type
    help: str
    evaluate: Evaluate
    relative: bool = False
    fraction: bool = False


def _check(key: str, ok: bool, detail: str, output: str | None = None) -> Check:
    return Check(key, "passed" if ok else "failed", detail, output)


def _missing(key: str, what: str) -> list[Check]:
    return [Check(key, "failed", f"the report has no {what}")]


def _at_least(key: str, attribute: str, what: str, percent: bool = False) -> Evaluate:
    def evaluate(limit: Any, new: Metrics, old: Metrics | None) -> list[Check]:
        value = getattr(new, attribute)
        if value is None:
            return _missing(key, f"{what} (compile with --target)")
        shown = (lambda v: f"{v:.2%}") if percent else (lambda v: f"{v:g}")
        return [_check(key, value >= limit, f"{what} {shown(value)}, at least {shown(limit)} expected")]
    return evaluate


def _at_most(key: str, attribute: str, what: str, unit: str = "") -> Evaluate:
    def evaluate(limit: Any, new: Metrics, old: Metrics | None) -> list[Check]:
        value = getattr(new, attribute)
        if value is None:
            return _missing(key, f"{what} (compile with --target)")
        return [_check(key, value <= limit, f"{what} {value:g}{unit}, at most {limit:g}{unit} allowed")]
    return evaluate


def _per_output(key: str, what: str, value_of: Callable[[Any], float | None], passes: Callable[[float, Any], bool], limit_text: str) -> Evaluate:
    def evaluate(limit: Any, new: Metrics, old: Metrics | None) -> list[Check]:
        if not new.outputs:
            return _missing(key, "quantization accuracy (the model was not quantized: --quantize)")
        checks = []
        for name, accuracy in new.outputs.items():
            if accuracy.exact:
                checks.append(_check(key, True, f"{what} exact", name))
                continue
            value = value_of(accuracy)
            if value is None:
                checks.append(Check(key, "skipped" if key == "min_top1" else "failed", f"{what} not measured for this output", name))
                continue
            checks.append(_check(key, passes(value, limit), f"{what} {value:.4g}, {limit_text.format(limit=limit)}", name))
        return checks
    return evaluate


def _static(limit: Any, new: Metrics, old: Metrics | None) -> list[Check]:
    if new.static is None:
        return _missing("require_static", "static flag (written by an older mapc)")
    return [_check("require_static", new.static, "every input and output shape is static" if new.static else "some input or output shape is dynamic")]


def _no_new_fallback_reasons(limit: Any, new: Metrics, old: Metrics | None) -> list[Check]:
    assert old is not None
    if new.fallback is None or old.fallback is None:
        return _missing("no_new_fallback_reasons", "CPU fallback in one of the reports (compile both with --target)")
    added = {code: nodes for code, nodes in new.fallback.items() if code not in old.fallback}
    detail = "; ".join(f"{code} on {', '.join(nodes)}" for code, nodes in added.items())
    return [_check("no_new_fallback_reasons", not added, f"new reasons: {detail}" if added else "no new CPU-fallback reason")]


def _sqnr_drop(limit: Any, new: Metrics, old: Metrics | None) -> list[Check]:
    assert old is not None
    key = "max_sqnr_drop_db"
    if not new.outputs:
        return _missing(key, "quantization accuracy (the model was not quantized: --quantize)")
    checks = []
    for name, accuracy in new.outputs.items():
        before = old.outputs.get(name)
        if before is None:
            checks.append(Check(key, "skipped", "the old report has no accuracy for this output", name))
        elif accuracy.exact or before.sqnr_db is None:
            checks.append(_check(key, accuracy.exact or not before.exact, "exact" if accuracy.exact else "was exact, is not", name))
        elif accuracy.sqnr_db is None:
            checks.append(Check(key, "failed", "SQNR not finite", name))
        else:
            drop = before.sqnr_db - accuracy.sqnr_db
            checks.append(_check(key, drop <= limit, f"SQNR {before.sqnr_db:.2f} -> {accuracy.sqnr_db:.2f} dB (drop {drop:.2f}), at most {limit:g} dB allowed", name))
    return checks


def _latency_increase(limit: Any, new: Metrics, old: Metrics | None) -> list[Check]:
    assert old is not None
    key = "max_latency_increase"
    if new.estimated_ms is None or old.estimated_ms is None:
        return _missing(key, "latency estimate in one of the reports (compile both with --target)")
    if old.estimated_ms:
        increase = new.estimated_ms / old.estimated_ms - 1
    else:
        increase = float("inf") if new.estimated_ms else 0.0
    return [_check(key, increase <= limit, f"estimated {old.estimated_ms:.4g} -> {new.estimated_ms:.4g} ms ({increase:+.1%}), at most {limit:+.1%} allowed")]


def _macs_drop(limit: Any, new: Metrics, old: Metrics | None) -> list[Check]:
    assert old is not None
    key = "max_macs_on_target_drop"
    before, after = old.macs_on_target_fraction, new.macs_on_target_fraction
    if before is None or after is None:
        return _missing(key, "coverage in one of the reports (compile both with --target)")
    drop = before - after
    return [_check(key, drop <= limit, f"MACs on the target {before:.2%} -> {after:.2%} (drop {drop * 100:.2f} pts), at most {limit * 100:g} pts allowed")]


BUDGETS: dict[str, Budget] = {
    budget.key: budget
    for budget in (
        Budget("min_nodes_on_target", float, "share of the nodes on the target (0..1)",
               _at_least("min_nodes_on_target", "nodes_on_target_fraction", "nodes on the target", percent=True), fraction=True),
        Budget("min_macs_on_target", float, "share of the MACs on the target (0..1)",
               _at_least("min_macs_on_target", "macs_on_target_fraction", "MACs on the target", percent=True), fraction=True),
        Budget("max_partitions", int, "partitions on the target", _at_most("max_partitions", "partitions", "partitions")),
        Budget("max_fallback_nodes", int, "nodes on the CPU", _at_most("max_fallback_nodes", "fallback_nodes", "CPU-fallback nodes")),
        Budget("max_estimated_ms", float, "estimated latency in ms", _at_most("max_estimated_ms", "estimated_ms", "estimated latency", " ms")),
        Budget("require_static", bool, "every input and output shape static (true)", _static),
        Budget("min_sqnr_db", float, "SQNR of every quantized output, dB",
               _per_output("min_sqnr_db", "SQNR dB", lambda a: a.sqnr_db, lambda v, limit: v >= limit, "at least {limit:g} expected")),
        Budget("min_cosine", float, "cosine similarity of every quantized output (0..1)",
               _per_output("min_cosine", "cosine", lambda a: a.cosine, lambda v, limit: v >= limit, "at least {limit:g} expected"), fraction=True),
        Budget("min_top1", float, "top-1 agreement of every classifier-like quantized output (0..1)",
               _per_output("min_top1", "top-1 agreement", lambda a: a.top1, lambda v, limit: v >= limit, "at least {limit:g} expected"), fraction=True),
        Budget("no_new_fallback_reasons", bool, "no CPU-fallback reason code the old compile did not have (true)", _no_new_fallback_reasons, relative=True),
        Budget("max_sqnr_drop_db", float, "SQNR lost per output against the old compile, dB", _sqnr_drop, relative=True),
        Budget("max_latency_increase", float, "estimated latency increase against the old compile (0.1 = 10%)", _latency_increase, relative=True),
        Budget("max_macs_on_target_drop", float, "share of the MACs on the target lost against the old compile (0..1)", _macs_drop, relative=True, fraction=True),
    )
}


def load_budgets(path: Path) -> dict[str, Any]:
    """The budgets in the TOML file ``path``, validated (see the module doc)."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"budgets file {path} does not exist") from None
    except OSError as error:
        raise UsageError(f"cannot read budgets file {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML: {error}") from None
    if not data:
        raise UsageError(f"{path}: no budgets (known: {', '.join(BUDGETS)})")
    for key, value in data.items():
        _validate(path, key, value)
    return data


def _validate(path: Path, key: str, value: Any) -> None:
    budget = BUDGETS.get(key)
    if budget is None:
        close = difflib.get_close_matches(key, BUDGETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"{path}: unknown budget {key!r} ({hint}known: {', '.join(BUDGETS)})")
    if budget.kind is bool:
        if value is not True:
            raise UsageError(f"{path}: {key} must be true (leave it out to not check it), got {value!r}")
        return
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or (budget.kind is int and not isinstance(value, int)):
        raise UsageError(f"{path}: {key} must be {'an integer' if budget.kind is int else 'a number'} ({budget.help}), got {value!r}")
    if value < 0 or (budget.fraction and value > 1):
        raise UsageError(f"{path}: {key} must be {'between 0 and 1' if budget.fraction else 'at least 0'} ({budget.help}), got {value!r}")


def check_budgets(budgets: dict[str, Any], new: Metrics, old: Metrics | None = None) -> list[Check]:
    """Every budget checked on ``new`` (relative ones against ``old``; skipped without it), in file order."""
    checks: list[Check] = []
    for key, limit in budgets.items():
        budget = BUDGETS[key]
        if budget.relative and old is None:
            checks.append(Check(key, "skipped", "no old compile to compare with (mapc diff, or mapc compile --history DIR after a first compile)"))
            continue
        checks += budget.evaluate(limit, new, old)
    return checks


def breached(checks: list[Check]) -> list[Check]:
    return [check for check in checks if check.status == "failed"]
