"""The targets that ship with mapc: ``npu`` (the default), ``cpu`` and ``ethos-u55``."""

from __future__ import annotations

from ..spec import Target
from .ethos_u55 import ETHOS_U55
from .host_cpu import CPU
from .npu import NPU

#: Built-in targets by name, the default first.
BUILTIN_TARGETS: dict[str, Target] = {target.name: target for target in (NPU, CPU, ETHOS_U55)}
DEFAULT_TARGET = NPU.name

__all__ = ["BUILTIN_TARGETS", "DEFAULT_TARGET", "CPU", "ETHOS_U55", "NPU"]
