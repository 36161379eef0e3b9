"""Symbolic dims written as arithmetic: evaluate them, and solve for one unknown.

Exporters name dims with expressions over other dims: ``past_sequence_length + sequence_length``
(optimum), ``2*s0`` or ``s0 + s1`` (dynamo), ``(s0 - 1)//2 + 1`` (strided convolutions). Given
values for the symbols, :func:`evaluate_dim` computes such a dim; :func:`solve_dim` finds the value
of the single unknown symbol of an affine expression from the dim's known size.

The evaluator walks Python's ``ast`` and accepts only integer literals, names, parentheses, unary
``+``/``-`` and binary ``+ - * // /`` (``/`` only when it divides exactly): nothing is executed.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

_BINARY = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Div)


class NotADimExpression(ValueError):
    """The text is not arithmetic over dim names (or divides inexactly)."""


def parse_dim(text: str) -> ast.expr:
    """Parse ``text`` into a checked expression tree; :class:`NotADimExpression` if it is not one."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise NotADimExpression(f"{text!r} is not an arithmetic expression") from None
    for node in ast.walk(tree):
        allowed = (
            isinstance(node, (ast.BinOp, ast.Name, ast.Load))
            or isinstance(node, _BINARY)
            or isinstance(node, (ast.UnaryOp, ast.UAdd, ast.USub))
            or (isinstance(node, ast.Constant) and type(node.value) is int)
        )
        if not allowed:
            raise NotADimExpression(f"{text!r} uses {type(node).__name__}, which a dim expression may not")
    return tree


def symbols_of(text: str) -> set[str]:
    """Names a dim refers to: the dim itself if it is a plain name, else the names in its expression."""
    try:
        tree = parse_dim(text)
    except NotADimExpression:
        return {text}
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def evaluate_dim(dim: int | str | None, values: Mapping[str, int]) -> int | None:
    """The concrete size of ``dim`` given symbol ``values``, or None if it cannot be known.

    An exact match of the whole text wins (a dim may be named ``seq-len``); otherwise the text is
    evaluated as an expression. Division must be exact; a negative result is None.
    """
    if isinstance(dim, int):
        return dim if dim >= 0 else None
    if not isinstance(dim, str):
        return None
    if dim in values:
        return int(values[dim])
    try:
        result = _evaluate(parse_dim(dim), values)
    except (NotADimExpression, KeyError, ZeroDivisionError):
        return None
    return result if result >= 0 else None


def solve_dim(dim: str, size: int, values: Mapping[str, int]) -> dict[str, int]:
    """Bindings that make ``dim`` equal ``size``: ``{dim: size}`` for a plain unbound name, the value
    of the single unbound symbol of an affine expression (``a + b``, ``a - b``, ``k*a``), or ``{}``
    if the dim is bound already or cannot be solved."""
    unknown = sorted(symbols_of(dim) - set(values))
    if dim in values or not unknown:
        return {}
    try:
        tree = parse_dim(dim)
    except NotADimExpression:
        return {dim: size}
    if isinstance(tree, ast.Name):
        return {dim: size}
    if len(unknown) != 1:
        return {}
    name = unknown[0]
    try:
        at_zero = _evaluate(tree, {**values, name: 0})
        slope = _evaluate(tree, {**values, name: 1}) - at_zero
    except (NotADimExpression, KeyError, ZeroDivisionError):
        return {}
    if slope == 0 or (size - at_zero) % slope:
        return {}
    guess = (size - at_zero) // slope
    try:
        exact = guess >= 0 and _evaluate(tree, {**values, name: guess}) == size
    except (NotADimExpression, ZeroDivisionError):
        return {}
    return {name: guess} if exact else {}


def _evaluate(node: ast.expr, values: Mapping[str, int]) -> int:
    if isinstance(node, ast.Constant):
        return int(node.value)
    if isinstance(node, ast.Name):
        return int(values[node.id])
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, values)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, values), _evaluate(node.right, values)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.FloorDiv):
            return left // right
        if left % right:
            raise NotADimExpression(f"{left}/{right} is not a whole number")
        return left // right
    raise NotADimExpression(f"cannot evaluate {type(node).__name__}")
