"""Pipeline strings, options, the pass manager, verify-each, and the pass registry."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

import mapc
from mapc.ir import load
from mapc.ir.errors import UsageError, VerificationError
from mapc.passes import Pass, PassResult, register_pass
from mapc.passes.pipeline import (
    Fixpoint,
    PassCrashed,
    PassManager,
    build_pipeline,
    pipeline_text,
)
from tests.conftest import append_to_first_output, make_model

F = TensorProto.FLOAT


def small_model():
    return make_model(
        [helper.make_node("Identity", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
        [helper.make_tensor_value_info("x", F, [2, 3])],
        [helper.make_tensor_value_info("y", F, [2, 3])],
    )


def test_parse_names_options_and_fixpoint():
    steps = build_pipeline(' cleanup , fixpoint(cleanup{cse=false}, cleanup{dedupe_initializers="no"}){max_iterations=3}')
    assert isinstance(steps[1], Fixpoint) and steps[1].max_iterations == 3
    assert steps[1].steps[0].options.cse is False
    assert steps[1].steps[1].options.dedupe_initializers is False
    assert pipeline_text(steps) == "cleanup,fixpoint(cleanup{cse=false},cleanup{dedupe_initializers=false}){max_iterations=3}"


def test_pipeline_from_a_list():
    steps = build_pipeline(["cleanup", ("cleanup", {"cse": "false"}), Fixpoint([mapc.passes.get_pass("cleanup")()])])
    assert len(steps) == 3 and steps[1].options.cse is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty|expected a pass name"),
        ("nonesuch", "unknown pass 'nonesuch'"),
        ("cleanup{nope=1}", "has no option 'nope'"),
        ("cleanup{cse=maybe}", "expected true or false"),
        ("cleanup{cse=1,cse=0}", "given twice"),
        ("cleanup,", "expected a pass name"),
        ("fixpoint(cleanup", r"expected '\)'"),
        ("fixpoint(cleanup){max_iterations=0}", "at least 1"),
        ("cleanup{cse=\"1}", "unterminated"),
        ("cleanup cleanup", "unexpected text"),
    ],
)
def test_bad_pipelines_are_usage_errors(text, message):
    with pytest.raises(UsageError, match=message):
        build_pipeline(text)


def test_typed_options_convert_strings(registry):
    @register_pass
    class Typed(Pass):
        """Options of every supported type."""

        name = "typed"

        @dataclass
        class Options:
            count: int = 1
            ratio: float = 0.5
            names: tuple[str, ...] = ()
            sizes: dict[str, int] | None = None
            mode: str = "a"

        def run(self, model, ctx):
            return PassResult(changed=False)

    step = build_pipeline("typed{count=3,ratio=2.5,names=[a,b],sizes=[x=1,y=2],mode=z}")[0]
    assert (step.options.count, step.options.ratio, step.options.names, step.options.sizes, step.options.mode) == (
        3, 2.5, ("a", "b"), {"x": 1, "y": 2}, "z"
    )
    with pytest.raises(UsageError, match="expected an integer"):
        build_pipeline("typed{count=many}")


def test_records_name_nodes_and_counters_of_each_pass():
    model = load(small_model())
    records = PassManager("cleanup").run(model)
    assert len(records) == 1
    record = records[0]
    assert (record.name, record.changed, record.nodes_before, record.nodes_after) == ("cleanup", True, 2, 1)
    assert {name: count for name, count in record.counters.items() if count} == {"noops_removed": 1}
    entry = record.as_dict()
    assert (entry["name"], entry["counters"], entry["nodes_before"], entry["nodes_after"]) == ("cleanup", record.counters, 2, 1)
    assert entry["seconds"] == round(record.seconds, 6)


def test_fixpoint_repeats_until_nothing_changes(registry):
    calls = itertools.count()

    @register_pass(name="change-twice")
    def change_twice(model, ctx, options):
        """Reports a change on its first two runs only."""
        return next(calls) < 2

    records = PassManager("fixpoint(change-twice,cleanup)").run(load(small_model()))
    assert [(r.name, r.iteration, r.changed) for r in records] == [
        ("change-twice", 1, True), ("cleanup", 1, True),
        ("change-twice", 2, True), ("cleanup", 2, False),
        ("change-twice", 3, False), ("cleanup", 3, False),
    ]


def test_fixpoint_that_never_settles_stops_with_a_warning(registry):
    @register_pass(name="always-changes")
    def always_changes(model, ctx, options):
        """Claims a change every time."""
        return True

    records = PassManager("fixpoint(always-changes){max_iterations=4}").run(load(small_model()))
    assert len(records) == 4
    assert records[-1].notes[0].code == "pipeline.no-fixpoint"


def test_verify_each_names_the_first_pass_that_breaks_the_model(registry):
    @register_pass(name="negate-outputs")
    def negate_outputs(model, ctx, options):
        """Wrongly negates the first output (a broken pass)."""
        append_to_first_output(model, "Neg")
        return True

    with pytest.raises(VerificationError, match="after pass 'negate-outputs'") as info:
        mapc.compile(small_model(), passes="cleanup,negate-outputs,cleanup", verify_each=True)
    assert info.value.pass_name == "negate-outputs"


def test_verify_each_rejects_an_invalid_model(registry):
    @register_pass(name="break-structure")
    def break_structure(model, ctx, options):
        """Points a node at a tensor nobody produces."""
        model.graph.nodes[0].inputs[0] = gs.Variable("nowhere", dtype=np.float32)
        return True

    with pytest.raises(VerificationError, match="break-structure"):
        mapc.compile(small_model(), passes="break-structure", verify_each=True)


def test_a_crashing_pass_is_reported_by_name(registry):
    @register_pass(name="crashes")
    def crashes(model, ctx, options):
        """Raises an unexpected exception."""
        raise KeyError("boom")

    with pytest.raises(PassCrashed, match="pass 'crashes' crashed: KeyError"):
        mapc.compile(small_model(), passes="crashes")


def test_register_pass_rules(registry):
    with pytest.raises(ValueError, match="already registered"):
        @register_pass(name="cleanup")
        def imposter(model, ctx, options):
            """Same name as a built-in."""
            return False

    with pytest.raises(ValueError, match="needs a docstring"):
        @register_pass(name="undocumented")
        def undocumented(model, ctx, options):
            return False

    @register_pass(name="replaceable")
    def first(model, ctx, options):
        """First version."""
        return False

    @register_pass(name="replaceable", replace=True)
    def second(model, ctx, options):
        """Second version."""
        return False

    assert mapc.registered_passes()["replaceable"].summary() == "Second version."


def test_compile_result_report_is_json_ready():
    import json

    result = mapc.compile(small_model(), verify=True)
    report = json.loads(json.dumps(result.report))
    assert report["pipeline"] == mapc.default_pipeline()
    assert report["nodes_before"] == 2 and report["nodes_after"] == 1
    assert report["verification"]["ok"] is True
    assert {"name", "changed", "nodes_before", "nodes_after", "seconds", "counters", "notes"} <= set(report["passes"][0])
