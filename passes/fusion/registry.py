"""The fusion rules, by name. A rule module registers its rules with :func:`fusion_rule`."""

from __future__ import annotations

from mapc.passes.fusion.context import FusionRule

_RULES: dict[str, type[FusionRule]] = {}
_STAGES = ("canonical", "fold", "fuse")


def fusion_rule(rule: type[FusionRule]) -> type[FusionRule]:
    """Class decorator: register ``rule`` under its ``name`` (names are unique)."""
    existing = _RULES.get(rule.name)
    if existing is not None and existing is not rule:
        raise ValueError(f"a fusion rule named {rule.name!r} is already registered")
    _RULES[rule.name] = rule
    return rule


def fusion_rules(stage: str | None = None) -> list[type[FusionRule]]:
    """Registered rules in run order (stage, then ``order``, then name), optionally of one stage."""
    rules = [r for r in _RULES.values() if stage is None or r.stage == stage]
    return sorted(rules, key=lambda r: (_STAGES.index(r.stage), r.order, r.name))
