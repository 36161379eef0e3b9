"""Progress display for long work on the CLI.

A spinner with the current pass (and, for passes that report it, a bar of their own progress)
on stderr. It is silent when disabled (``--quiet``) or when stderr is not a terminal, so logs
and pipes stay clean.
"""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class PassProgress:
    """Context manager fed by the pass manager (``pass_started``) and by passes (``update``)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._pass = ""

    def __enter__(self) -> PassProgress:
        if self.enabled:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("loading", total=None)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(kind, error, trace)
            self._progress = None

    def stage(self, description: str) -> None:
        """Show a new stage (loading, saving, verifying...) with no known length."""
        self._pass = description
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=description, total=None, completed=0)

    def pass_started(self, name: str) -> None:
        self.stage(f"pass {name}")

    def update(self, description: str, done: int | None = None, total: int | None = None) -> None:
        """Progress inside a pass: ``done`` of ``total`` units of ``description``."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=f"{self._pass}: {description}", total=total, completed=done or 0)
