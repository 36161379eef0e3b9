"""Subgraph patterns: what a :class:`~mapc.ir.rewrite.PatternRule` looks for, and how it is matched.

A pattern is written as nested calls, here RMS normalisation::

    x = var("x")
    mean_square = op.ReduceMean(op.Mul(x, x), ..., name="mean_square")
    pattern = op.Div(x, op.Sqrt(op.Add(mean_square, const("eps"))), name="normalized")

:data:`op` builds node patterns (``op.Add(a, b)``, ``op["Mul", "Div"](a, b)``); ``...`` as the
last input accepts further inputs; :func:`var` binds any tensor, :func:`const` a constant
(optionally of a given value), :func:`maybe` an optional node, ``a | b`` alternatives and
:func:`product` a tree of ``Mul`` nodes in any association and order. Binary commutative ops
match either operand order. A pattern object used twice, or two variables or constants of the
same name, must bind the same tensor (or node) everywhere.

:func:`find_matches` returns every structural match rooted at a tensor's producer, and the
deepest failure of the others (what near-miss reports name). Rules, checks and rewrites are in
:mod:`mapc.ir.rewrite`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from mapc.ir.graph import constant_tensor, is_default_domain, producer, scalar_value, small_constant

#: Binary ops whose two operands may be swapped.
COMMUTATIVE_OPS = frozenset({"Add", "Mul", "Max", "Min", "And", "Or", "Xor", "Equal", "BitwiseAnd", "BitwiseOr", "BitwiseXor"})


# -- patterns ---------------------------------------------------------------------------------------


class Pattern:
    """Base of pattern nodes. ``a | b`` matches ``a`` or else ``b``."""

    name: str | None = None

    def __or__(self, other: Pattern) -> Alt:
        return Alt((self, other))

    def label(self) -> str:
        return self.name or type(self).__name__.lower()


@dataclass(eq=False)
class Var(Pattern):
    """Any tensor (optionally one satisfying ``predicate``); binds ``name``."""

    name: str | None = None
    predicate: Callable[[gs.Tensor], bool] | None = None


@dataclass(eq=False)
class Const(Pattern):
    """A constant tensor. With ``value``, a one-element constant equal to it (relative tolerance ``rtol``)."""

    name: str | None = None
    value: float | None = None
    rtol: float = 1e-6


@dataclass(eq=False)
class OpPattern(Pattern):
    """A node of one of ``ops`` whose inputs match ``inputs`` (in either order when commutative)."""

    ops: frozenset[str]
    inputs: tuple[Pattern, ...]
    name: str | None = None
    more_inputs: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""

    @property
    def commutative(self) -> bool:
        return len(self.inputs) == 2 and not self.more_inputs and self.ops <= COMMUTATIVE_OPS

    def label(self) -> str:
        return self.name or "/".join(sorted(self.ops))


@dataclass(eq=False)
class Alt(Pattern):
    """The first of ``options`` that matches (later ones are tried when backtracking)."""

    options: tuple[Pattern, ...]
    name: str | None = None

    def __or__(self, other: Pattern) -> Alt:
        return Alt((*self.options, other))


@dataclass(eq=False)
class Product(Pattern):
    """A product of ``factors`` written as any tree of binary ``Mul`` nodes, in any order."""

    factors: tuple[Pattern, ...]
    name: str | None = None
    ops: frozenset[str] = frozenset({"Mul"})

    def slot(self, index: int) -> _ProductNode:
        """The pattern standing for the ``index``-th Mul node of a match (stable per product)."""
        slots = self.__dict__.setdefault("_slots", [])
        while len(slots) <= index:
            slots.append(_ProductNode(self, len(slots)))
        return slots[index]


class _OpFactory:
    """``op.Add(a, b, name=...)`` and ``op["Mul", "Div"](a, b)`` build :class:`OpPattern` s."""

    def __getattr__(self, op_type: str) -> Callable[..., OpPattern]:
        if op_type.startswith("_"):
            raise AttributeError(op_type)
        return self[op_type]

    def __getitem__(self, op_types: str | tuple[str, ...]) -> Callable[..., OpPattern]:
        ops = frozenset((op_types,) if isinstance(op_types, str) else op_types)

        def build(*inputs: Any, name: str | None = None, domain: str = "", **attrs: Any) -> OpPattern:
            more = bool(inputs) and inputs[-1] is Ellipsis
            patterns = tuple(_as_pattern(i) for i in (inputs[:-1] if more else inputs))
            return OpPattern(ops, patterns, name=name, more_inputs=more, attrs=attrs, domain=domain)

        return build


op = _OpFactory()


def var(name: str | None = None, predicate: Callable[[gs.Tensor], bool] | None = None) -> Var:
    return Var(name, predicate)


def const(name: str | None = None, value: float | None = None, rtol: float = 1e-6) -> Const:
    return Const(name, value, rtol)


def maybe(pattern: OpPattern) -> Alt:
    """``pattern`` or, when its node is absent, its first input (an optional Cast, Transpose...)."""
    return Alt((pattern, pattern.inputs[0]))


def product(*factors: Any, name: str | None = None) -> Product:
    return Product(tuple(_as_pattern(f) for f in factors), name)


def _as_pattern(item: Any) -> Pattern:
    if isinstance(item, Pattern):
        return item
    if isinstance(item, (int, float)):
        return Const(value=float(item))
    raise TypeError(f"not a pattern: {item!r}")


# -- matches ----------------------------------------------------------------------------------------


@dataclass
class Match:
    """A structural match: the named nodes and tensors it bound, and every node it covers."""

    root: gs.Node
    nodes: dict[str, gs.Node]
    tensors: dict[str, gs.Tensor]
    covered: list[gs.Node]

    def value(self, name: str) -> np.ndarray:
        """The value of the small constant bound to ``name``."""
        value = small_constant(self.tensors[name])
        if value is None:
            raise KeyError(f"{name!r} is not bound to a small constant")
        return value

    def scalar(self, name: str) -> float:
        value = scalar_value(self.tensors[name])
        if value is None:
            raise KeyError(f"{name!r} is not bound to a scalar constant")
        return value

    def has(self, name: str) -> bool:
        return name in self.nodes or name in self.tensors


def _key(pattern: Pattern) -> object:
    """Variables and constants with the same name are one binding; anything else is by identity."""
    if isinstance(pattern, (Var, Const)) and pattern.name:
        return ("name", pattern.name)
    return id(pattern)


class _Bindings(dict):
    """Pattern key -> (pattern, bound tensor or node); copied on every extension."""

    def bind(self, pattern: Pattern, item: Any) -> _Bindings:
        extended = _Bindings(self)
        extended[_key(pattern)] = (pattern, item)
        return extended

    def lookup(self, pattern: Pattern) -> tuple[Pattern, Any] | None:
        return self.get(_key(pattern))

    def depth(self) -> int:
        """How many nodes are bound: op patterns and the Mul nodes of matched products."""
        return sum(1 for pattern, _ in self.values() if isinstance(pattern, (OpPattern, _ProductNode)))


@dataclass
class _Deepest:
    """The furthest a failed structural match got, for near-miss reports."""

    depth: int = -1
    reason: str = ""
    bound: frozenset[str] = frozenset()

    def fail(self, bindings: _Bindings, reason: str) -> None:
        depth = bindings.depth()
        if depth > self.depth:
            self.depth, self.reason = depth, reason
            self.bound = frozenset(pattern.name for pattern, _ in bindings.values() if pattern.name)


def _describe(tensor: gs.Tensor) -> str:
    source = producer(tensor)
    if source is not None:
        return f"{source.op} {source.name!r}"
    return "a constant" if isinstance(tensor, gs.Constant) else f"graph input {tensor.name!r}"


def _match(pattern: Pattern, tensor: gs.Tensor, bindings: _Bindings, deepest: _Deepest) -> Iterator[_Bindings]:
    bound = bindings.lookup(pattern)
    if isinstance(pattern, Var):
        if bound is not None:
            if bound[1] is tensor:
                yield bindings
            else:
                deepest.fail(bindings, f"{pattern.label()}: expected the same tensor twice, found {_describe(tensor)}")
            return
        if pattern.predicate is not None and not pattern.predicate(tensor):
            deepest.fail(bindings, f"{pattern.label()}: {_describe(tensor)} does not qualify")
            return
        yield bindings.bind(pattern, tensor)
    elif isinstance(pattern, Const):
        yield from _match_const(pattern, tensor, bindings, deepest)
    elif isinstance(pattern, OpPattern):
        yield from _match_op(pattern, tensor, bindings, deepest)
    elif isinstance(pattern, Alt):
        if bound is not None:  # a shared alternative stands for one tensor wherever it is used
            if bound[1] is tensor:
                yield bindings
            return
        for option in pattern.options:
            for extended in _match(option, tensor, bindings, deepest):
                yield extended.bind(pattern, tensor)
    elif isinstance(pattern, Product):
        yield from _match_product(pattern, tensor, bindings, deepest)
    else:  # pragma: no cover - all pattern classes are handled above
        raise TypeError(f"unknown pattern {pattern!r}")


def _match_const(pattern: Const, tensor: gs.Tensor, bindings: _Bindings, deepest: _Deepest) -> Iterator[_Bindings]:
    bound = bindings.lookup(pattern)
    if bound is not None:
        if bound[1] is tensor:
            yield bindings
        return
    if constant_tensor(tensor) is None:
        deepest.fail(bindings, f"{pattern.label()}: expected a constant, found {_describe(tensor)}")
        return
    if pattern.value is not None:
        constant = constant_tensor(tensor)
        value = scalar_value(tensor) if int(np.prod(constant.shape, dtype=np.int64)) == 1 else None
        if value is None or not np.isclose(value, pattern.value, rtol=pattern.rtol, atol=0.0):
            found = "a non-scalar constant" if value is None else f"{value:.9g}"
            deepest.fail(bindings, f"{pattern.label()}: expected the constant {pattern.value:.9g}, found {found}")
            return
    yield bindings.bind(pattern, tensor)


def _match_op(pattern: OpPattern, tensor: gs.Tensor, bindings: _Bindings, deepest: _Deepest) -> Iterator[_Bindings]:
    node = producer(tensor)
    bound = bindings.lookup(pattern)
    if bound is not None:
        if bound[1] is node:
            yield bindings
        else:
            deepest.fail(bindings, f"{pattern.label()}: expected the same node twice")
        return
    if node is None or node.op not in pattern.ops or _domain(node.domain) != _domain(pattern.domain):
        deepest.fail(bindings, f"{pattern.label()}: expected {'/'.join(sorted(pattern.ops))}, found {_describe(tensor)}")
        return
    if node.outputs[0] is not tensor:
        deepest.fail(bindings, f"{pattern.label()}: {_describe(tensor)} produces it as a secondary output")
        return
    for key, expected in pattern.attrs.items():
        actual = node.attrs.get(key)
        if not (expected(actual) if callable(expected) else actual == expected):
            deepest.fail(bindings, f"{pattern.label()}: attribute {key}={actual!r} does not match")
            return
    inputs = [t for t in node.inputs]
    while inputs and inputs[-1].is_empty():
        inputs.pop()
    if len(inputs) < len(pattern.inputs) or (len(inputs) > len(pattern.inputs) and not pattern.more_inputs):
        deepest.fail(bindings, f"{pattern.label()}: {node.op} {node.name!r} has {len(inputs)} inputs")
        return
    extended = bindings.bind(pattern, node)
    orders = [pattern.inputs]
    if pattern.commutative:
        orders.append(pattern.inputs[::-1])
    for order in orders:
        yield from _match_all(list(zip(order, inputs)), extended, deepest)


def _domain(domain: str | None) -> str:
    return "" if domain in (None, "", "ai.onnx") else domain


def _match_all(pairs: list[tuple[Pattern, gs.Tensor]], bindings: _Bindings, deepest: _Deepest) -> Iterator[_Bindings]:
    if not pairs:
        yield bindings
        return
    (pattern, tensor), rest = pairs[0], pairs[1:]
    for extended in _match(pattern, tensor, bindings, deepest):
        yield from _match_all(rest, extended, deepest)


def _match_product(pattern: Product, tensor: gs.Tensor, bindings: _Bindings, deepest: _Deepest) -> Iterator[_Bindings]:
    wanted = len(pattern.factors)
    found = False
    for nodes, leaves in _mul_trees(tensor, wanted):
        if len(leaves) != wanted:
            continue
        extended = bindings
        for index, node in enumerate(nodes):
            extended = extended.bind(pattern.slot(index), node)
        for order in itertools.permutations(range(wanted)):
            for result in _match_all([(pattern.factors[i], leaves[j]) for j, i in enumerate(order)], extended, deepest):
                found = True
                yield result
    if not found:
        deepest.fail(bindings, f"{pattern.label()}: {_describe(tensor)} is not a product of {wanted} such factors")


@dataclass(eq=False)
class _ProductNode(Pattern):
    """Stands for the index-th Mul node of a matched product, so the node counts as covered."""

    product: Product
    index: int


def _mul_trees(tensor: gs.Tensor, limit: int, top: bool = True) -> Iterator[tuple[list[gs.Node], list[gs.Tensor]]]:
    """Ways to read ``tensor`` as a product: (Mul nodes used, leaf tensors), at most ``limit`` leaves."""
    if not top:
        yield [], [tensor]
    node = producer(tensor)
    if node is None or node.op != "Mul" or not is_default_domain(node) or limit < 2:
        return
    if not top and (len(tensor.outputs) != 1):
        return
    left, right = node.inputs[0], node.inputs[1]
    for left_nodes, left_leaves in _mul_trees(left, limit - 1, top=False):
        for right_nodes, right_leaves in _mul_trees(right, limit - len(left_leaves), top=False):
            yield [node, *left_nodes, *right_nodes], [*left_leaves, *right_leaves]


def find_matches(pattern: Pattern, tensor: gs.Tensor) -> tuple[list[Match], _Deepest]:
    """Every structural match of ``pattern`` producing ``tensor``, and the deepest failure."""
    deepest = _Deepest()
    root_ops(pattern)
    matches = []
    seen: set[tuple[int, ...]] = set()
    for bindings in _match(pattern, tensor, _Bindings(), deepest):
        key = tuple(sorted((str(k), id(v[1])) for k, v in bindings.items()))
        if key in seen:
            continue
        seen.add(key)
        matches.append(_to_match(bindings, producer(tensor)))
    return matches, deepest


def _to_match(bindings: _Bindings, root: gs.Node) -> Match:
    nodes: dict[str, gs.Node] = {}
    tensors: dict[str, gs.Tensor] = {}
    covered: list[gs.Node] = []
    for pattern, item in bindings.values():
        if isinstance(item, gs.Node):
            if all(item is not other for other in covered):
                covered.append(item)
            if pattern.name:
                nodes[pattern.name] = item
        elif pattern.name:
            tensors[pattern.name] = item
    return Match(root, nodes, tensors, covered)


def root_ops(pattern: Pattern) -> frozenset[str]:
    """Op types a match of ``pattern`` can be rooted at."""
    if isinstance(pattern, (OpPattern, Product)):
        return pattern.ops
    if isinstance(pattern, Alt):
        return frozenset().union(*(root_ops(option) for option in pattern.options))
    raise TypeError("a rule's pattern must be rooted at an op, a product or alternatives of them")
