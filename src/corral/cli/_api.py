"""How a command calls the coordinator: one ``corral.client.AsyncClient`` with a person's
patience, and its typed errors turned into one line and the exit code the README promises."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import stamina

from corral.cli._exit import ExitCode, Failure
from corral.cli._output import shown
from corral.client import AsyncClient, CorralError, Unauthenticated, Unreachable
from corral.local import BadSetting, FleetError

T = TypeVar("T")


def connect(url: str | None, api_key: str | None) -> AsyncClient:
    """``--url`` / ``--api-key`` (their env vars already read by Typer), and the root's
    ``--token`` / ``--token-file``, which win over a key; a person is waiting, so give up
    after ~15 s rather than a script's patient minute."""
    # The CLI says in one line what failed; stamina's per-retry warnings would bury that
    # line. Set here, not at import, so a worker started by `corral worker` keeps them.
    stamina.instrumentation.set_on_retry_hooks([])
    return AsyncClient(url, api_key, token=_token["token"], token_file=_token["file"],
                       attempts=4, retry_timeout=15.0)  # fmt: skip


# The root's --token / --token-file of this invocation (set by its callback, before any
# command runs): every command's client sends them instead of its key.
_token: dict[str, Any] = {"token": None, "file": None}


def use_token(token: str | None, token_file: Path | None) -> None:
    _token.update(token=token, file=token_file)


def explain(exc: CorralError | FleetError) -> Failure:
    """One line for the terminal: 4xx -> 2, no coordinator -> 4, 5xx -> 5; a local process
    that failed -> 1, a local setting that cannot be used -> 2."""
    if isinstance(exc, FleetError):
        code = ExitCode.USAGE if isinstance(exc, BadSetting) else ExitCode.JOB_FAILED
        return Failure(shown(exc.message), code)
    if isinstance(exc, Unreachable):
        return Failure(
            f"cannot reach the coordinator: {shown(exc.detail)} "
            "(is it running? set --url or CORRAL_URL)",
            ExitCode.UNREACHABLE,
        )
    fields = "; ".join(
        f"{e.get('field')}: {e.get('message')}"
        for e in exc.body.get("errors") or []
        if isinstance(e, dict)
    )
    detail = exc.detail or exc.code
    if fields and fields not in detail:
        detail = f"{detail} ({fields})"
    if exc.field == "url" and not exc.body:
        detail += " (set --url or CORRAL_URL)"
    if isinstance(exc, Unauthenticated):
        detail += " (set --api-key or CORRAL_API_KEY)"
    if exc.status >= 500:
        return Failure(f"coordinator error {exc.status}: {shown(detail)}", ExitCode.SERVER_ERROR)
    if exc.body:  # the coordinator's answer: its stable code helps a search or a bug report
        detail = f"{detail} [{exc.code}]"
    return Failure(shown(detail), ExitCode.USAGE)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; its errors end as a ``Failure``, never a traceback."""
    try:
        return asyncio.run(_guard(coro))
    except KeyboardInterrupt:
        raise Failure("interrupted", ExitCode.INTERRUPTED) from None


async def _guard(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    except (CorralError, FleetError) as exc:
        raise explain(exc) from exc
    except httpx.InvalidURL as exc:  # a path or query httpx refuses: still one line
        raise Failure(f"bad URL: {shown(exc)}") from None
