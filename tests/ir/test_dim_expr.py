"""dim_expr: evaluating and solving dims written as arithmetic, and refusing anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapc.ir.dim_expr import (
    NotADimExpression,
    evaluate_dim,
    parse_dim,
    solve_dim,
    symbols_of,
)


@pytest.mark.parametrize(
    ("dim", "values", "expected"),
    [
        (5, {}, 5),
        ("batch_size", {"batch_size": 1}, 1),
        ("past_sequence_length + sequence_length", {"past_sequence_length": 16, "sequence_length": 8}, 24),
        ("2*sequence_length", {"sequence_length": 8}, 16),
        ("s0 + s1", {"s0": 3, "s1": 4}, 7),
        ("(s0 - 1)//2 + 1", {"s0": 9}, 5),
        ("s0/2", {"s0": 8}, 4),
        ("-(-s0)", {"s0": 3}, 3),
        ("seq-len", {"seq-len": 7}, 7),  # an exact name wins over reading it as a subtraction
    ],
)
def test_evaluates(dim, values, expected):
    assert evaluate_dim(dim, values) == expected


@pytest.mark.parametrize(
    ("dim", "values"),
    [
        ("batch_size", {}),  # unbound
        ("s0 + s1", {"s0": 1}),  # one unbound
        ("s0/2", {"s0": 7}),  # inexact division
        ("s0 - 5", {"s0": 3}),  # negative
        ("s0 // 0", {"s0": 3}),
        (None, {}),
        (-1, {}),
        ("unk__3", {}),
    ],
)
def test_unknown_when_it_cannot_be_known(dim, values):
    assert evaluate_dim(dim, values) is None


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('true')", "s0.real", "s0 ** 2", "s0 if s0 else 1", "[s0]", "f(s0)", "1.5 * s0", "s0 % 2", "'a'"],
)
def test_refuses_anything_but_arithmetic(text):
    with pytest.raises(NotADimExpression):
        parse_dim(text)
    assert evaluate_dim(text, {"s0": 2, "f": 1}) is None


def test_symbols():
    assert symbols_of("past_sequence_length + sequence_length") == {"past_sequence_length", "sequence_length"}
    assert symbols_of("batch size") == {"batch size"}  # not an expression: the whole text is the name
    assert symbols_of("2*s0") == {"s0"}


@pytest.mark.parametrize(
    ("dim", "size", "values", "expected"),
    [
        ("past + seq", 24, {"seq": 8}, {"past": 16}),
        ("past - seq", 4, {"seq": 8}, {"past": 12}),
        ("2*seq", 16, {}, {"seq": 8}),
        ("seq", 8, {}, {"seq": 8}),
        ("2*seq", 15, {}, {}),  # no whole solution
        ("a + b", 5, {}, {}),  # two unknowns
        ("seq", 8, {"seq": 8}, {}),  # already bound
        ("seq - 20", 4, {}, {"seq": 24}),
        ("(seq - 1)//2 + 1", 5, {}, {}),  # not affine: the affine guess (5) does not check out, so no answer
        ("seq//2", 4, {}, {}),  # slope 0 between 0 and 1: refuses rather than guessing
        ("seq//1 + 2", 6, {}, {"seq": 4}),
    ],
)
def test_solves_one_unknown(dim, size, values, expected):
    assert solve_dim(dim, size, values) == expected


@given(st.integers(0, 50), st.integers(0, 50), st.integers(1, 4))
def test_solve_inverts_evaluate(past, seq, factor):
    dim = f"{factor}*past + seq"
    size = evaluate_dim(dim, {"past": past, "seq": seq})
    assert solve_dim(dim, size, {"seq": seq}) == {"past": past}
