"""Fusion into standard ONNX ops, exporter-agnostic.

One module per rule family (``layer_norm.py``, ``attention.py``...), each registering its rules
with :func:`fusion_rule`; this package imports every module in it, so adding a fusion means
adding one file (and its tests under ``tests/passes/fusion/``). The passes are in ``fuse.py``:
``canonicalize`` (canonical forms only) and ``fuse`` (canonical forms, weight folds, fusions).
"""

import importlib
import pkgutil

from mapc.passes.fusion.registry import fusion_rule, fusion_rules

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["fusion_rule", "fusion_rules"]
