"""Fusion into standard ONNX ops, exporter-agnostic.

One module per rule family (``normalization.py``, ``attention.py``...), each defining pattern
rules (:class:`~mapc.ir.rewrite.PatternRule`); :mod:`.stages` lists every rule in the order it
runs, so adding a fusion is one class in its family's module, one line in a stage list, and its
tests under ``tests/passes/fusion/``. The passes are in :mod:`.fuse`: ``canonicalize`` (canonical
forms only) and ``fuse`` (canonical forms, weight folds, fusions).
"""

from mapc.passes.fusion import fuse  # noqa: F401  (registers canonicalize and fuse)
from mapc.passes.fusion.stages import STAGES

__all__ = ["STAGES"]
