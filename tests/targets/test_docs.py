"""The target pages in docs/ are generated from the rules; they must be current."""

from __future__ import annotations

from pathlib import Path

from mapc.cli import main
from mapc.targets import BUILTIN_TARGETS, constraints_for
from mapc.targets.docs import target_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_committed_target_pages_are_current():
    for name, target in BUILTIN_TARGETS.items():
        page = DOCS / "targets" / f"{name}.md"
        assert page.exists(), f"missing {page}: run python -m mapc.targets.docs docs/targets"
        assert page.read_text() == target_markdown(target), f"{page} is stale: run python -m mapc.targets.docs docs/targets"


def test_every_rule_text_is_on_the_page():
    for target in BUILTIN_TARGETS.values():
        page = target_markdown(target)
        for rule in constraints_for(target):
            assert f"`{rule.code}`" in page and rule.text(target) in page


def test_show_markdown_prints_the_page(capsys):
    assert main(["targets", "--show", "ethos-u55", "--markdown"]) == 0
    assert capsys.readouterr().out == (DOCS / "targets" / "ethos-u55.md").read_text()


def test_targets_guide_mentions_every_flag():
    guide = (DOCS / "targets.md").read_text()
    for flag in ("--target", "--min-partition-ops", "--max-partitions", "--cpu-ops", "--no-cost-model", "--emit-partitions", "--report", "--verify", "mapc targets --show"):
        assert flag in guide, flag
