"""Qualcomm's own HTP compiler as an oracle (the ``qnn`` extra: onnxruntime-qnn).

    >>> from mapc.targets.qnn import ask_qnn
    >>> check = ask_qnn(model, arch="75")          # a child process builds it with the QNN EP
    >>> check.built, check.counts()                  # (True, {"htp": 207, "boundary": 2})
    >>> [v for v in check.verdicts if v.status == "rejected"]

* :mod:`~mapc.targets.qnn.accuracy`: :func:`accuracy_on_qnn`, the accuracy report on the HTP emulator;
* :mod:`~mapc.targets.qnn.agreement`: :func:`check_plan`, mapc's plan beside QNN's verdict;
* :mod:`~mapc.targets.qnn.context`: :func:`write_context_model`, the EPContext artifact;
* :mod:`~mapc.targets.qnn.oracle`: :func:`ask_qnn`, :class:`QnnCheck`;
* :mod:`~mapc.targets.qnn.verdict`: reading the EP's log into a :class:`NodeVerdict` per node;
* :mod:`~mapc.targets.qnn.child`: the child process (only onnxruntime and onnxruntime-qnn).
"""

from mapc.targets.qnn.accuracy import DIVERGENCE_DB, accuracy_on_qnn
from mapc.targets.qnn.agreement import Agreement, NodeAgreement, check_plan, compare_plan, qnn_options, require_qnn_target
from mapc.targets.qnn.context import ContextModel, context_path, write_context_model
from mapc.targets.qnn.oracle import INSTALL_HINT, QnnCheck, ask_qnn, qnn_available, require_qnn
from mapc.targets.qnn.verdict import NodeVerdict, parse_log

__all__ = ["DIVERGENCE_DB", "INSTALL_HINT", "accuracy_on_qnn", "qnn_options", "Agreement", "ContextModel", "context_path", "require_qnn_target", "write_context_model", "NodeAgreement", "check_plan", "compare_plan", "NodeVerdict", "QnnCheck", "ask_qnn", "parse_log", "qnn_available", "require_qnn"]
