"""Pipelines of passes: parsing, and the pass manager that runs them.

A pipeline is a comma-separated list of steps. A step is a pass name with optional options in
braces, or a ``fixpoint(...)`` group whose steps repeat until none of them changes the model::

    cleanup,fixpoint(fold-constants{max_size_mb=64},cleanup){max_iterations=5}

Option values are bare words, quoted strings (``"a,b"``) or bracketed lists (``[a,b]``). The same
pipeline can be given as a Python list of names, ``(name, {options})`` pairs, :class:`Pass`
instances and :class:`Fixpoint` groups.

:class:`PassManager` runs a pipeline on a model, timing each pass, counting nodes before and
after, and with ``verify_each`` checking after every pass that the model is still valid and
still computes the input model's outputs, naming the first pass that broke it. Before each pass
it establishes the facts the pass ``requires`` (shapes are inferred only when the graph changed
since the last inference) and after it checks the facts it ``provides``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from mapc.ir import MapcError, Model, UsageError, count_nodes
from mapc.passes.base import Note, Pass, PassContext, PassResult, parse_options
from mapc.passes.facts import establish, missing_provided
from mapc.passes.registry import get_pass
from mapc.passes.verify import Verifier

#: How often a fixpoint group repeats before mapc stops it with a warning.
DEFAULT_MAX_ITERATIONS = 8


@dataclass
class Fixpoint:
    """Steps repeated until a whole round changes nothing (at most ``max_iterations`` rounds)."""

    steps: list[Step]
    max_iterations: int = DEFAULT_MAX_ITERATIONS


Step = Union[Pass, Fixpoint]
StepSpec = Union[str, Pass, Fixpoint, tuple[str, dict[str, Any]]]


@dataclass
class PassRecord:
    """What one execution of one pass did, for the per-pass table and the JSON report."""

    name: str
    options: dict[str, Any]
    changed: bool
    nodes_before: int
    nodes_after: int
    seconds: float
    counters: dict[str, int] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    iteration: int | None = None
    verification: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "name": self.name,
            "options": self.options,
            "changed": self.changed,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "seconds": round(self.seconds, 6),
            "counters": self.counters,
            "notes": [note.as_dict() for note in self.notes],
        }
        if self.details:
            record["details"] = self.details
        if self.iteration is not None:
            record["iteration"] = self.iteration
        if self.verification is not None:
            record["verification"] = self.verification
        return record


# -- parsing ----------------------------------------------------------------------------------------


def build_pipeline(spec: str | Sequence[StepSpec]) -> list[Step]:
    """Turn a pipeline string or list into runnable steps; :class:`UsageError` if malformed."""
    if isinstance(spec, str):
        return _Parser(spec).parse()
    steps: list[Step] = []
    for item in spec:
        if isinstance(item, (Pass, Fixpoint)):
            steps.append(item)
        elif isinstance(item, str):
            steps.extend(_Parser(item).parse())
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            steps.append(get_pass(item[0])(**dict(item[1])))
        else:
            raise UsageError(f"cannot use {item!r} as a pipeline step")
    return steps


def flatten_steps(steps: Sequence[Step]) -> list[Pass]:
    """Every pass of a pipeline, inside fixpoint groups too, in order."""
    found: list[Pass] = []
    for step in steps:
        found.extend(flatten_steps(step.steps) if isinstance(step, Fixpoint) else [step])
    return found


def map_passes(steps: Sequence[Step], change: Callable[[Pass], Pass]) -> list[Step]:
    """``steps`` with every pass (inside fixpoint groups too) replaced by ``change(pass)``."""
    return [Fixpoint(map_passes(step.steps, change), step.max_iterations) if isinstance(step, Fixpoint) else change(step) for step in steps]


def with_options(step: Pass, values: Mapping[str, Any]) -> Pass:
    """A new step of the same pass with ``values`` set over its current options (checked)."""
    merged = {**{f.name: getattr(step.options, f.name) for f in dataclasses.fields(step.options)}, **values}
    return type(step)(options=parse_options(step.name, step.Options, merged))


def with_pass_options(steps: Sequence[Step], overrides: Mapping[str, Mapping[str, Any]]) -> list[Step]:
    """``steps`` with ``overrides[name]`` set on every step of pass ``name`` (inside fixpoints
    too); the override wins over options the pipeline gave. :class:`UsageError` if a named pass
    is not in the pipeline, or an option is unknown."""
    missing = sorted(set(overrides) - {step.name for step in flatten_steps(steps)})
    if missing:
        raise UsageError(f"options given for pass {missing[0]!r}, which is not in the pipeline {pipeline_text(steps)!r}")
    return map_passes(steps, lambda step: with_options(step, overrides[step.name]) if step.name in overrides else step)


def pipeline_text(steps: Sequence[Step]) -> str:
    """The pipeline string that rebuilds ``steps`` (options that differ from defaults included)."""
    parts = []
    for step in steps:
        if isinstance(step, Fixpoint):
            suffix = "" if step.max_iterations == DEFAULT_MAX_ITERATIONS else f"{{max_iterations={step.max_iterations}}}"
            parts.append(f"fixpoint({pipeline_text(step.steps)}){suffix}")
        else:
            options = step.options_dict()
            rendered = ",".join(f"{key}={_render(value)}" for key, value in options.items())
            parts.append(step.name + (f"{{{rendered}}}" if rendered else ""))
    return ",".join(parts)


def _render(value: Any) -> str:
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ",".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "[" + ",".join(_render_entry(k, v) for k, v in value.items()) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return f'"{text}"' if any(c in text for c in ',{}[]()"= ') else text


def _render_entry(key: Any, value: Any) -> str:
    """A dict entry as ``key=value``; a list value is written ``"key=a,b"`` (quoted, one item)."""
    if isinstance(value, (list, tuple)):
        return _render(f"{key}={','.join(str(v) for v in value)}")
    return f"{key}={_render(value)}"


class _Parser:
    _NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> list[Step]:
        steps = self._steps()
        self._space()
        if self.pos != len(self.text):
            self._fail("unexpected text")
        if not steps:
            self._fail("empty pipeline")
        return steps

    def _steps(self) -> list[Step]:
        steps = [self._step()]
        while self._peek() == ",":
            self.pos += 1
            steps.append(self._step())
        return steps

    def _step(self) -> Step:
        name = self._name()
        if name == "fixpoint" and self._peek() == "(":
            self.pos += 1
            inner = self._steps()
            self._expect(")")
            options = self._options()
            unknown = set(options) - {"max_iterations"}
            if unknown:
                self._fail(f"fixpoint has no option {sorted(unknown)[0]!r} (options: max_iterations)")
            try:
                limit = int(options.get("max_iterations", DEFAULT_MAX_ITERATIONS))
            except (TypeError, ValueError):
                self._fail("max_iterations must be an integer")
            if limit < 1:
                self._fail("max_iterations must be at least 1")
            return Fixpoint(inner, limit)
        pass_class = get_pass(name)
        return pass_class(**self._options())

    def _options(self) -> dict[str, Any]:
        if self._peek() != "{":
            return {}
        self.pos += 1
        options: dict[str, Any] = {}
        if self._peek() == "}":
            self.pos += 1
            return options
        while True:
            key = self._name()
            self._expect("=")
            if key in options:
                self._fail(f"option {key!r} given twice")
            options[key] = self._value()
            if self._peek() == ",":
                self.pos += 1
                continue
            self._expect("}")
            return options

    def _value(self) -> Any:
        char = self._peek()
        if char == "[":
            self.pos += 1
            items: list[Any] = []
            if self._peek() == "]":
                self.pos += 1
                return items
            while True:
                items.append(self._value())
                if self._peek() == ",":
                    self.pos += 1
                    continue
                self._expect("]")
                return items
        if char in ("'", '"'):
            end = self.text.find(char, self.pos + 1)
            if end < 0:
                self._fail("unterminated quoted value")
            value = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return value
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",{}[]()\"'":
            self.pos += 1
        value = self.text[start : self.pos].strip()
        if not value:
            self._fail("missing value")
        return value

    def _name(self) -> str:
        self._space()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in self._NAME_CHARS:
            self.pos += 1
        if start == self.pos:
            self._fail("expected a pass name")
        return self.text[start : self.pos]

    def _peek(self) -> str:
        self._space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _expect(self, char: str) -> None:
        if self._peek() != char:
            self._fail(f"expected {char!r}")
        self.pos += 1

    def _space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _fail(self, problem: str) -> Any:
        raise UsageError(f"bad pipeline {self.text!r}: {problem} at position {self.pos}")


# -- running ----------------------------------------------------------------------------------------

ProgressHook = Callable[[str], None]


class PassManager:
    """Runs a pipeline on a model, recording a :class:`PassRecord` per pass execution."""

    def __init__(
        self,
        pipeline: str | Sequence[StepSpec],
        *,
        verify_each: bool = False,
        verifier: Verifier | None = None,
        on_pass_start: ProgressHook | None = None,
    ) -> None:
        self.steps = build_pipeline(pipeline)
        self.verify_each = verify_each
        self.verifier = verifier
        self.on_pass_start = on_pass_start

    @property
    def text(self) -> str:
        return pipeline_text(self.steps)

    def run(self, model: Model, ctx: PassContext | None = None) -> list[PassRecord]:
        """Run every step on ``model`` in place; return the records in execution order."""
        ctx = ctx if ctx is not None else PassContext()
        if self.verify_each and self.verifier is None:
            self.verifier = Verifier(model, ctx)
        records: list[PassRecord] = []
        self._run_steps(self.steps, model, ctx, records, iteration=None)
        return records

    def _run_steps(
        self, steps: Sequence[Step], model: Model, ctx: PassContext, records: list[PassRecord], iteration: int | None
    ) -> bool:
        changed = False
        for step in steps:
            if isinstance(step, Fixpoint):
                changed |= self._run_fixpoint(step, model, ctx, records)
            else:
                changed |= self._run_pass(step, model, ctx, records, iteration)
        return changed

    def _run_fixpoint(self, group: Fixpoint, model: Model, ctx: PassContext, records: list[PassRecord]) -> bool:
        changed_any = False
        for round_number in range(1, group.max_iterations + 1):
            if not self._run_steps(group.steps, model, ctx, records, iteration=round_number):
                return changed_any
            changed_any = True
        records[-1].notes.append(
            Note(
                "pipeline.no-fixpoint",
                f"fixpoint({pipeline_text(group.steps)}) still changed the model after {group.max_iterations} rounds",
                severity="warning",
            )
        )
        return changed_any

    def _run_pass(
        self, step: Pass, model: Model, ctx: PassContext, records: list[PassRecord], iteration: int | None
    ) -> bool:
        if self.on_pass_start is not None:
            self.on_pass_start(step.name)
        nodes_before = count_nodes(model.graph)
        model.forget_names()
        started = time.perf_counter()
        try:
            establish(step.name, step.requires, model, ctx)
            result = step.run(model, ctx)
        except MapcError:
            raise
        except Exception as error:
            raise PassCrashed(step.name, error) from error
        seconds = time.perf_counter() - started
        if not isinstance(result, PassResult):
            raise PassCrashed(step.name, TypeError(f"run() returned {type(result).__name__}, not PassResult"))
        missing = missing_provided(step.provides, ctx)
        if missing:
            names = ", ".join(fact.name for fact in missing)
            raise PassCrashed(step.name, RuntimeError(f"it declares it provides {names} but did not set it"))
        record = PassRecord(
            name=step.name,
            options=step.options_dict(),
            changed=result.changed,
            nodes_before=nodes_before,
            nodes_after=count_nodes(model.graph),
            seconds=seconds,
            counters=dict(result.counters),
            notes=list(result.notes),
            details=dict(result.details),
            iteration=iteration,
        )
        records.append(record)
        if self.verify_each and self.verifier is not None:
            record.verification = self.verifier.check(model, pass_name=step.name)
        return result.changed


class PassCrashed(MapcError):
    """A pass raised an unexpected exception: a bug in that pass, reported with its name."""

    def __init__(self, pass_name: str, error: BaseException) -> None:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        super().__init__(f"pass {pass_name!r} crashed: {type(error).__name__}{': ' + detail if detail else ''}")
        self.pass_name = pass_name
