"""Target backends: what a device supports, how the graph is partitioned for it, and how the
compiled model is lowered (see docs/targets.md).

    >>> from mapc.targets import get_target, constraints_for
    >>> npu = get_target("npu")                       # or get_target("my_npu.toml")
    >>> [constraint.summary(npu) for constraint in constraints_for(npu)][:2]

* :mod:`~mapc.targets.spec`: the :class:`Target` record; :mod:`~mapc.targets.builtin`: ``npu``,
  ``cpu``, ``ethos-u55``; :mod:`~mapc.targets.user`: targets described in TOML.
* :mod:`~mapc.targets.rules` / :mod:`~mapc.targets.constraints`: the :class:`Constraint` record and the
  built-in ``constraint_*`` functions.
* :mod:`~mapc.targets.support`: every node's verdict; :mod:`~mapc.targets.units`: atomic groups;
  :mod:`~mapc.targets.partition`: the acyclic, cost-aware plan; :mod:`~mapc.targets.cost`: the
  roofline estimate; :mod:`~mapc.targets.lower`: partitions as local functions.
* The ``partition`` pass lives in :mod:`~mapc.targets.partition`, the ``lower`` pass in
  :mod:`~mapc.targets.lower`; importing this package registers both.
"""

from mapc.targets.builtin import BUILTIN_TARGETS, DEFAULT_TARGET
from mapc.targets.constraints import constraints_for
from mapc.targets.docs import target_markdown
from mapc.targets.lower import Lower, emit_partitions, lower_partitions
from mapc.targets.partition import PARTITION_PLAN, Partition, PartitionOptions, Plan, plan_partitions
from mapc.targets.registry import builtin_targets, get_target
from mapc.targets.rules import Constraint
from mapc.targets.spec import Performance, Target
from mapc.targets.summary import plan_report
from mapc.targets.support import NodeSupport, check_support
from mapc.targets.user import load_target_file

__all__ = [
    "BUILTIN_TARGETS",
    "DEFAULT_TARGET",
    "PARTITION_PLAN",
    "Constraint",
    "Lower",
    "NodeSupport",
    "Partition",
    "PartitionOptions",
    "Performance",
    "Plan",
    "Target",
    "builtin_targets",
    "check_support",
    "constraints_for",
    "emit_partitions",
    "get_target",
    "load_target_file",
    "lower_partitions",
    "plan_partitions",
    "plan_report",
    "target_markdown",
]
