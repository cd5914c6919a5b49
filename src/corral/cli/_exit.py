"""Exit codes of the ``corral`` command and the one exception that carries them out.

They are part of the CLI's contract (scripts branch on them), so they are documented in
the README and never renumbered.
"""

from __future__ import annotations

from enum import IntEnum

try:  # Typer >= 0.2x carries its own copy of Click
    from typer._click.exceptions import (
        ClickException,
        NoArgsIsHelpError,
        UsageError,
    )
except ImportError:  # pragma: no cover - older Typer uses Click itself
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

__all__ = ["ClickException", "ExitCode", "Failure", "NoArgsIsHelpError", "UsageError"]


class ExitCode(IntEnum):
    OK = 0
    JOB_FAILED = 1  # the job ran and failed, or a local process (server, worker) failed
    USAGE = 2  # bad flag or value, or the coordinator refused the request (4xx)
    JOB_CANCELLED = 3
    UNREACHABLE = 4  # no coordinator answered at --url
    SERVER_ERROR = 5  # the coordinator answered 5xx
    INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class Failure(ClickException):
    """A user-facing failure: one line on stderr and an exit code, never a traceback."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.exit_code = int(code)
