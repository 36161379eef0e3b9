"""The targets that ship with mapc: ``npu`` (the default), ``cpu``, ``ethos-u55`` and ``qnn-htp``.

A built-in target may have variants named ``NAME:VARIANT`` (``qnn-htp:v75``: one HTP
architecture); :func:`builtin_target` resolves both forms.
"""

from __future__ import annotations

from mapc.targets.builtin.ethos_u55 import ETHOS_U55
from mapc.targets.builtin.host_cpu import CPU
from mapc.targets.builtin.npu import NPU
from mapc.targets.builtin.qnn_htp import QNN_HTP, qnn_htp
from mapc.targets.spec import Target

#: Built-in targets by name, the default first.
BUILTIN_TARGETS: dict[str, Target] = {target.name: target for target in (NPU, CPU, ETHOS_U55, QNN_HTP)}
DEFAULT_TARGET = NPU.name
#: Targets with variants: the function that builds one from the variant's name.
VARIANTS = {QNN_HTP.name: qnn_htp}


def builtin_target(name: str) -> Target | None:
    """The built-in target ``name`` or ``name:variant``; None when there is none of that name."""
    if name in BUILTIN_TARGETS:
        return BUILTIN_TARGETS[name]
    base, colon, variant = name.partition(":")
    if colon and base in VARIANTS:
        return VARIANTS[base](variant)
    return None


__all__ = ["BUILTIN_TARGETS", "CPU", "DEFAULT_TARGET", "ETHOS_U55", "NPU", "QNN_HTP", "VARIANTS", "builtin_target"]
