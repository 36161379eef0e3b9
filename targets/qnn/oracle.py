"""Ask Qualcomm's own HTP compiler about a model: :func:`ask_qnn`.

onnxruntime-qnn (the ``qnn`` extra) ships onnxruntime's QNN execution provider as a plugin
library with Qualcomm's HTP backend, which on x86 compiles for and emulates the Hexagon NPU.
:func:`ask_qnn` builds an onnxruntime session with that EP for one HTP architecture in a child
process (:mod:`mapc.targets.qnn.child`; the EP can abort the process), then reads its log
(:mod:`mapc.targets.qnn.verdict`) into one :class:`NodeVerdict` per node of the model, in graph
order. Optionally it runs input samples on the emulator and returns the outputs, and writes
the EPContext model (a QNN context binary compiled for the architecture) that a device loads
without compiling again.

Nodes are matched by name: the copy handed to QNN gives every unnamed or duplicate-named node
the name ``mapc_node_<index>``; the model itself is not changed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from mapc.ir import Model, UsageError, save
from mapc.targets.qnn.child import RAN, READY
from mapc.targets.qnn.verdict import NodeVerdict, parse_log

#: The pip package that provides the EP, and how to get it.
PACKAGE = "onnxruntime-qnn"
INSTALL_HINT = "pip install 'mapc[qnn]' (onnxruntime-qnn, x86_64 Linux or Windows)"
#: How many of the log's last lines a failure report keeps.
LOG_TAIL_LINES = 12
#: Default time limit for one child (compiling a large graph on the emulator takes minutes).
DEFAULT_TIMEOUT_S = 3600.0


def qnn_available() -> bool:
    """Whether onnxruntime-qnn is installed (the ``qnn`` extra)."""
    return importlib.util.find_spec("onnxruntime_qnn") is not None


def require_qnn(what: str) -> None:
    """:class:`UsageError` naming the extra when onnxruntime-qnn is missing."""
    if not qnn_available():
        raise UsageError(f"{what} needs Qualcomm's QNN execution provider, which is not installed: {INSTALL_HINT}")


@dataclass
class QnnCheck:
    """QNN's answer for one model on one HTP architecture."""

    arch: str
    #: One verdict per node of the model handed in, in graph order.
    verdicts: list[NodeVerdict]
    #: The session was built (every partition QNN took compiled).
    built: bool
    #: The EP aborted the process (QNN's failure, not mapc's).
    aborted: bool
    #: One line: why the session was not built ("" when it was).
    error: str
    log_tail: list[str]
    #: Seconds to build the session (QNN's compile included) and to run the samples.
    build_seconds: float | None = None
    run_seconds: float | None = None
    #: Outputs per sample when samples were given and the session ran them.
    outputs: list[dict[str, np.ndarray]] | None = None
    options: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Nodes per status (htp, boundary, rejected, cpu, unseen)."""
        return dict(Counter(verdict.status for verdict in self.verdicts))

    def as_dict(self) -> dict[str, object]:
        return {
            "arch": self.arch,
            "built": self.built,
            "aborted": self.aborted,
            "error": self.error,
            "build_seconds": _rounded(self.build_seconds),
            "run_seconds": _rounded(self.run_seconds),
            "counts": self.counts(),
            "nodes": [verdict.as_dict() for verdict in self.verdicts],
            "log_tail": self.log_tail if not self.built else [],
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def ask_qnn(
    model: Model | onnx.ModelProto,
    *,
    arch: str = "73",
    samples: Sequence[Mapping[str, np.ndarray]] | None = None,
    context_model: str | os.PathLike | None = None,
    provider_options: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> QnnCheck:
    """Build ``model`` with the QNN EP (HTP backend, ``htp_arch=arch``) in a child process.

    ``samples`` are run on the emulator and their outputs returned; ``context_model`` makes QNN
    also write the EPContext model there (the context binary embedded). ``provider_options``
    (``soc_model``, ...) are passed to the EP as they are.
    Raises :class:`UsageError` when onnxruntime-qnn is not installed; every failure of QNN
    itself (a refused graph, an abort, a time-out) is reported in the result, never raised.
    """
    require_qnn("asking QNN")
    options = {"htp_arch": str(arch), **dict(provider_options or {})}
    with tempfile.TemporaryDirectory(prefix="mapc-qnn-") as scratch:
        folder = Path(scratch)
        path, names = _named_copy(model, folder)
        request: dict[str, object] = {"model": str(path), "provider_options": options, "optimize": context_model is not None}
        if samples:
            request["inputs"], request["outputs"] = str(folder / "inputs.npz"), str(folder / "outputs.npz")
            flat = {f"{k}/{name}": np.asarray(value) for k, sample in enumerate(samples) for name, value in sample.items()}
            np.savez(folder / "inputs.npz", count=len(samples), **flat)
        if context_model is not None:
            request["session_config"] = {
                "ep.context_enable": "1",
                "ep.context_file_path": str(Path(context_model).resolve()),
                "ep.context_embed_mode": "1",
            }
        (folder / "request.json").write_text(json.dumps(request), encoding="utf-8")
        log_path = folder / "qnn.log"
        start = time.perf_counter()
        with open(log_path, "wb") as log:
            try:
                child = subprocess.run(
                    [sys.executable, "-m", "mapc.targets.qnn.child", str(folder / "request.json")],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout, check=False,
                )
                returncode: int | None = child.returncode
            except subprocess.TimeoutExpired:
                returncode = None
        elapsed = time.perf_counter() - start
        text = log_path.read_text(encoding="utf-8", errors="replace")
        outputs = _read_outputs(folder / "outputs.npz") if samples and RAN in text else None
        return _check(arch, names, text, returncode, elapsed, timeout, outputs, bool(samples), options)


def _named_copy(model: Model | onnx.ModelProto, folder: Path) -> tuple[Path, list[tuple[str, str]]]:
    """Write the model to ``folder`` with unique node names; return its path and (name, op) per node."""
    path = folder / "model.onnx"
    if isinstance(model, Model):
        save(model, path)
    else:
        onnx.save_model(model, str(path))
    proto = onnx.load_model(str(path), load_external_data=False)
    seen: Counter[str] = Counter(node.name for node in proto.graph.node)
    taken = set(seen)
    names = []
    for index, node in enumerate(proto.graph.node):
        if not node.name or seen[node.name] > 1:
            fresh, suffix = f"mapc_node_{index}", 0
            while fresh in taken:
                suffix += 1
                fresh = f"mapc_node_{index}_{suffix}"
            taken.add(fresh)
            node.name = fresh
        names.append((node.name, node.op_type))
    onnx.save_model(proto, str(path))
    return path, names


def _read_outputs(path: Path) -> list[dict[str, np.ndarray]] | None:
    if not path.exists():
        return None
    with np.load(path) as data:
        count = int(data["count"])
        outputs: list[dict[str, np.ndarray]] = [{} for _ in range(count)]
        for key in data.files:
            if key != "count":
                sample, _, name = key.partition("/")
                outputs[int(sample)][name] = data[key]
    return outputs


def _check(
    arch: str,
    names: list[tuple[str, str]],
    text: str,
    returncode: int | None,
    elapsed: float,
    timeout: float,
    outputs: list[dict[str, np.ndarray]] | None,
    asked_to_run: bool,
    options: dict[str, str],
) -> QnnCheck:
    reading = parse_log(text, [name for name, _ in names])
    built = READY in text
    verdicts = []
    for name, op in names:
        verdict = reading.verdicts.get(name)
        if verdict is None:
            status = "cpu" if built and name in reading.placed_on_cpu else "unseen"
            verdict = NodeVerdict(name, op, status, "QNN was not asked about this node" if status == "unseen" else "placed on the CPU")
        verdicts.append(verdict)
    lines = [line for line in text.splitlines() if line.strip()]
    aborted = returncode is not None and (returncode < 0 or "terminate called" in text)
    error = ""
    if returncode is None:
        error = f"QNN did not finish within {timeout:g} s"
    elif not built or (asked_to_run and RAN not in text):
        error = _failure_line(lines, aborted)
    return QnnCheck(
        arch=arch,
        verdicts=verdicts,
        built=built,
        aborted=aborted,
        error=error,
        log_tail=lines[-LOG_TAIL_LINES:] if error else [],
        build_seconds=_marker_seconds(text, READY) if built else elapsed,
        run_seconds=_marker_seconds(text, RAN),
        outputs=outputs,
        options=options,
    )


def _failure_line(lines: list[str], aborted: bool) -> str:
    """The one line that says why: the C++ exception of an abort, else the last error line."""
    for line in reversed(lines):
        stripped = line.strip()
        if stripped.startswith("what():"):
            return "the QNN EP aborted: " + stripped.removeprefix("what():").strip()
    for line in reversed(lines):
        if "[E:" in line or "Error" in line or "Fail" in line:
            return line.split("] ", 1)[-1].strip()[:400]
    return ("the QNN EP aborted" if aborted else "QNN did not build the model") + (f": {lines[-1].strip()[:300]}" if lines else "")


def _marker_seconds(text: str, marker: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(marker):
            try:
                return float(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None
