"""The one record of why: a stable code, a sentence, the node, and the fix.

Passes report near-misses and leftovers with it, the rewrite engine its rules' near-misses,
and targets the reasons a node falls back to the CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class Note:
    """Something mapc wants the user to know about one node: a rule's near-miss, a node left
    alone, a reason a node stays on the CPU.

    ``code`` is stable and machine-readable (``fold-constants.eval-failed``, ``conv.stride``);
    ``message`` is one sentence; ``node`` names the node concerned; ``fix`` says what would
    resolve it, where something would.
    """

    code: str
    message: str
    node: str | None = None
    fix: str | None = None
    severity: Literal["info", "warning", "error"] = "info"

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}
