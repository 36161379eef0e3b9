"""Finding targets by name (built-in) or by path (a user's TOML file)."""

from __future__ import annotations

from pathlib import Path

from mapc.ir import UsageError
from mapc.targets.builtin import BUILTIN_TARGETS, VARIANTS, builtin_target
from mapc.targets.spec import Target
from mapc.targets.user import load_target_file


def get_target(name_or_path: str | Path | Target) -> Target:
    """A built-in target by name (``qnn-htp:v75`` for a variant), or the target described in a ``.toml`` file."""
    if isinstance(name_or_path, Target):
        return name_or_path
    text = str(name_or_path)
    builtin = builtin_target(text)
    if builtin is not None:
        return builtin
    if text.endswith(".toml") or Path(text).is_file():
        return load_target_file(text)
    known = ", ".join([*BUILTIN_TARGETS, *(f"{name}:VARIANT" for name in VARIANTS)])
    raise UsageError(f"unknown target {text!r} (built-in targets: {known}; or give a path to a .toml target description)")


def builtin_targets() -> dict[str, Target]:
    """The targets that ship with mapc, by name, the default first."""
    return dict(BUILTIN_TARGETS)
