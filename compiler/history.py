"""The compile history (``mapc compile --history DIR``, ``mapc history DIR``).

Each compile appends one JSON file to DIR: its report with the input model's SHA-256 (the model
file and its external data files), the compile's flags, the mapc version and the time
(``SOURCE_DATE_EPOCH`` when set, for reproducible runs). Files are named
``<sequence>-<hash prefix>.json`` (``000007-3fa2c1d09b4e.json``): the sequence is one more than
the highest in DIR, and a name is claimed with an atomic hard link, so concurrent compiles never
overwrite each other and a reader never sees half an entry. :func:`read_history` reads them back
in sequence order; :data:`TREND` lists the metrics a trend shows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mapc.ir import OutputError, UsageError, __version__
from mapc.metrics import Metrics, check_report, metrics_of

HISTORY_VERSION = 1
ENTRY_NAME = re.compile(r"^(\d{6,})-([0-9a-f]{12})\.json$")
CHUNK = 1 << 24


@dataclass(frozen=True)
class Entry:
    """One compile of the history."""

    sequence: int
    path: Path
    recorded_at: str
    model: str
    model_sha256: str
    flags: list[str]
    mapc_version: str
    metrics: Metrics


#: The metrics a trend shows, in order: key, label, unit, how to read it (None: not recorded).
TREND: tuple[tuple[str, str, str, Callable[[Metrics], float | None]], ...] = (
    ("nodes", "nodes", "", lambda m: m.nodes),
    ("nodes_on_target", "nodes on the target", "%", lambda m: _percent(m.nodes_on_target_fraction)),
    ("macs_on_target", "MACs on the target", "%", lambda m: _percent(m.macs_on_target_fraction)),
    ("partitions", "partitions", "", lambda m: m.partitions),
    ("fallback_nodes", "CPU-fallback nodes", "", lambda m: m.fallback_nodes),
    ("fallback_reasons", "CPU-fallback reasons", "", lambda m: None if m.fallback is None else len(m.fallback)),
    ("estimated_ms", "estimated latency", "ms", lambda m: m.estimated_ms),
    ("worst_sqnr_db", "worst output SQNR", "dB", lambda m: m.worst_sqnr_db),
    ("compile_seconds", "compile time", "s", lambda m: m.compile_seconds),
    ("weight_bytes", "weights", "bytes", lambda m: m.weight_bytes),
)


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else round(fraction * 100, 2)


def model_digest(paths: Iterable[Path]) -> str:
    """SHA-256 over the bytes of ``paths`` in order (the model file, then its external data files)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
        except OSError as error:
            raise UsageError(f"cannot read {path} to hash it: {error.strerror or error}") from None
    return digest.hexdigest()


def recorded_now() -> str:
    """UTC now in ISO 8601 (seconds), or ``SOURCE_DATE_EPOCH`` when that is set."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch and epoch.isdigit() else datetime.now(timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def append_entry(directory: Path, report: dict[str, Any], *, model: Path, model_sha256: str, flags: list[str]) -> Path:
    """Write one entry for ``report`` to ``directory`` (created if missing) and return its path."""
    entry = {
        "history_version": HISTORY_VERSION,
        "recorded_at": recorded_now(),
        "model": str(model),
        "model_sha256": model_sha256,
        "flags": flags,
        "mapc_version": __version__,
        "report": report,
    }
    text = json.dumps(entry, indent=2, default=str) + "\n"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".entry.{os.getpid()}.{time.monotonic_ns()}.tmp"
        temporary.write_text(text, encoding="utf-8")
    except OSError as error:
        raise OutputError(f"cannot write to the history {directory}: {error.strerror or error}") from None
    try:
        sequence = max((int(m.group(1)) for m in map(ENTRY_NAME.match, os.listdir(directory)) if m), default=0) + 1
        while True:
            target = directory / f"{sequence:06d}-{model_sha256[:12]}.json"
            try:
                os.link(temporary, target)  # fails if another compile claimed the name first
                return target
            except FileExistsError:
                sequence += 1
    except OSError as error:
        raise OutputError(f"cannot write to the history {directory}: {error.strerror or error}") from None
    finally:
        temporary.unlink(missing_ok=True)


def read_history(directory: Path) -> list[Entry]:
    """The entries of ``directory`` in sequence order; :class:`UsageError` for a missing folder or a damaged entry."""
    if not directory.is_dir():
        raise UsageError(f"history {directory} is not a folder (write one with mapc compile --history {directory})")
    entries = []
    for path in sorted(directory.iterdir()):
        match = ENTRY_NAME.match(path.name)
        if match is None:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UsageError(f"history entry {path} cannot be read: {error}") from None
        if not isinstance(data, dict) or data.get("history_version") != HISTORY_VERSION or "report" not in data:
            raise UsageError(f"{path}: not a mapc history entry (version {HISTORY_VERSION})")
        check_report(data["report"], str(path))
        entries.append(Entry(int(match.group(1)), path, str(data.get("recorded_at", "")), str(data.get("model", "")),
                             str(data.get("model_sha256", "")), list(data.get("flags", [])), str(data.get("mapc_version", "")),
                             metrics_of(data["report"], str(path))))
    return sorted(entries, key=lambda entry: entry.sequence)


def trend_series(entries: list[Entry]) -> list[tuple[str, str, str, list[float | None]]]:
    """Per :data:`TREND` metric that some entry has: key, label, unit, the value of each entry."""
    series = []
    for key, label, unit, read in TREND:
        values = [read(entry.metrics) for entry in entries]
        if any(value is not None for value in values):
            series.append((key, label, unit, values))
    return series
