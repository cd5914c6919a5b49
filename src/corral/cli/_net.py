"""Ports: say "port in use" in one line before uvicorn would say it with a traceback."""

from __future__ import annotations

from corral.cli._exit import ExitCode, Failure
from corral.local import FleetError
from corral.local import ensure_free as _ensure_free


def ensure_free(host: str, port: int, *, hint: str = "--port") -> None:
    try:
        _ensure_free(host, port, hint=hint)
    except FleetError as exc:
        raise Failure(exc.message, ExitCode.JOB_FAILED) from None
