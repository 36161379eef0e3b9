"""Every node's verdict: supported, or every reason it is not; forced fallbacks; lowered nodes."""

from __future__ import annotations

import pytest
from onnx import helper

import mapc.targets.support as support
from mapc.ir import load
from mapc.ir.errors import UsageError
from mapc.ir.notes import Note
from mapc.targets.support import NodeSupport, check_support, is_lowered, validate_cpu_ops
from mapc.targets.views import view_model
from tests.conftest import make_model
from tests.targets.helpers import CPU, const, info, toy_target

TOY = toy_target(["Relu", "Neg", "Add"])


def chain(*ops: str):
    """x -> ops[0] -> ops[1] -> ... -> y, one node per op named after it."""
    names = ["x", *(f"{op.lower()}{k}" for k, op in enumerate(ops))]
    nodes = [helper.make_node(op, [names[k]], [names[k + 1]], name=names[k + 1]) for k, op in enumerate(ops)]
    return view_model(load(make_model(nodes, [info("x", [2])], [info(names[-1], [2])])))


def test_a_node_the_target_runs_has_no_reasons_and_no_fixes():
    [verdict] = check_support(chain("Relu"), TOY)
    assert (verdict.supported, verdict.reasons, verdict.fixes, verdict.lowered) == (True, [], [], False)
    assert verdict.view.label == "relu0"


def test_verdicts_follow_graph_order_and_name_why_a_node_falls_back():
    verdicts = check_support(chain("Relu", "Sin", "Neg"), TOY)
    assert [(v.view.label, v.supported) for v in verdicts] == [("relu0", True), ("sin1", False), ("neg2", True)]
    [reason] = verdicts[1].reasons
    assert (reason.code, reason.message, reason.fix) == ("op.not-supported", "Sin is not one of them", None)


def test_cpu_ops_forces_a_supported_op_off_the_target_and_adds_to_other_reasons():
    verdicts = check_support(chain("Relu", "Sin"), TOY, cpu_ops=["Relu", "Sin"])
    assert [[r.code for r in v.reasons] for v in verdicts] == [["user.cpu-ops"], ["op.not-supported", "user.cpu-ops"]]
    assert verdicts[0].reasons[0].message == "Relu is forced to the CPU by --cpu-ops"


def test_a_constant_node_is_never_judged_on_its_own():
    nodes = [
        helper.make_node("Constant", [], ["k"], name="k", value=const("k", [1.0, 2.0])),
        helper.make_node("Add", ["x", "k"], ["y"], name="add"),
    ]
    view = view_model(load(make_model(nodes, [info("x", [2])], [info("y", [2])])))
    assert [v.supported for v in check_support(view, toy_target(["Add"]))] == [True, True]


def test_a_node_already_lowered_for_the_target_is_marked_lowered_not_judged():
    view = chain("Relu", "Neg")
    view.nodes[1].node.domain = TOY.domain
    verdicts = check_support(view, TOY)
    assert [(v.lowered, v.supported) for v in verdicts] == [(False, True), (True, True)]
    assert is_lowered(view.nodes[1], TOY) and not is_lowered(view.nodes[0], TOY)
    assert not is_lowered(view.nodes[1], CPU)  # the host takes no partitions


def test_fixes_are_the_distinct_fixes_of_the_reasons_in_order():
    verdict = NodeSupport(
        chain("Relu").nodes[0],
        [Note("a", "one", fix="fold"), Note("b", "two"), Note("c", "three", fix="quantize"), Note("d", "four", fix="fold")],
    )
    assert verdict.fixes == ["fold", "quantize"] and not verdict.supported


def test_progress_is_reported_every_so_many_nodes_with_the_total(monkeypatch):
    monkeypatch.setattr(support, "PROGRESS_EVERY", 2)
    calls = []
    check_support(chain("Relu", "Neg", "Relu", "Neg", "Relu"), TOY, progress=lambda *args: calls.append(args))
    assert calls == [("checking nodes against toy", count, 5) for count in (0, 2, 4)]


def test_validate_cpu_ops_strips_deduplicates_and_accepts_domain_ops():
    assert validate_cpu_ops([" Softmax", "Softmax", "", "com.example::Foo", "Relu "]) == ("Softmax", "com.example::Foo", "Relu")


def test_validate_cpu_ops_names_a_typo():
    with pytest.raises(UsageError, match="unknown operator 'Sofmax'"):
        validate_cpu_ops(["Sofmax"])
