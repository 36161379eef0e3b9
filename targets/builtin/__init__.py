"""The targets that ship with mapc: ``npu`` (the default), ``cpu`` and ``ethos-u55``."""

from __future__ import annotations

from mapc.targets.builtin.ethos_u55 import ETHOS_U55
from mapc.targets.builtin.host_cpu import CPU
from mapc.targets.builtin.npu import NPU
from mapc.targets.spec import Target

#: Built-in targets by name, the default first.
BUILTIN_TARGETS: dict[str, Target] = {target.name: target for target in (NPU, CPU, ETHOS_U55)}
DEFAULT_TARGET = NPU.name

__all__ = ["BUILTIN_TARGETS", "DEFAULT_TARGET", "CPU", "ETHOS_U55", "NPU"]
