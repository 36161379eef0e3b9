"""Errors mapc reports to its users, each with the exit code the CLI returns for it.

Every problem a user can cause (a bad model, a bad flag, an output that would clobber the input)
is a :class:`MapcError` subclass carrying a one-line message. The CLI prints that line and exits
with ``exit_code``; anything else escaping is a bug in mapc and exits with
:data:`EXIT_INTERNAL` (traceback only with ``--debug``).
"""

from __future__ import annotations

EXIT_OK = 0
#: The compile ran, but a check the user asked for failed (verification mismatch, a requirement
#: such as ``--require-static`` or ``--strict-fusion`` not met).
EXIT_CHECK_FAILED = 1
#: Bad command line: unknown flag or pass, malformed pipeline or option value.
EXIT_USAGE = 2
#: The input model cannot be used: missing, unreadable, not ONNX, structurally invalid, unsupported.
EXIT_BAD_MODEL = 3
#: The output cannot be written: it would overwrite the input, or the file system refused.
EXIT_OUTPUT = 4
#: A bug in mapc.
EXIT_INTERNAL = 70


class MapcError(Exception):
    """Base class of every error mapc reports to users; ``str(err)`` is one line."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()) if "\n" in message else message)


class UsageError(MapcError):
    """The request is malformed: unknown pass or option, bad option value, bad flag."""

    exit_code = EXIT_USAGE


class ModelError(MapcError):
    """The input model is unusable: unreadable, not ONNX, invalid, unsupported or unsafe."""

    exit_code = EXIT_BAD_MODEL


class OutputError(MapcError):
    """The output cannot be written where asked (e.g. it is the input model itself)."""

    exit_code = EXIT_OUTPUT


class CheckFailed(MapcError):
    """A requested check failed: verification mismatch or an unmet requirement."""

    exit_code = EXIT_CHECK_FAILED


class VerificationError(CheckFailed):
    """A model produced by a pass is invalid or no longer computes the input model's outputs."""

    def __init__(self, message: str, *, pass_name: str | None = None) -> None:
        super().__init__(message)
        self.pass_name = pass_name
